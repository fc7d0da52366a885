"""What one decode may cost: the decoded-bytes limit of every format, checked from the header, and the memory
a large image really takes (measured in a fresh process)."""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from server.imaging import ImageLimits, decode_image, grey

from .cases import assert_fails, dataset, nifti_gz, stretched, to_bytes


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _lines(height: int, width: int) -> np.ndarray:
    """(H, W) uint16 with bright rows and dim columns: compresses to almost nothing, so only decoding costs."""
    array = np.zeros((height, width), np.uint16)
    array[::97, :] = 40000
    array[:, ::89] = 1000
    return array


@pytest.mark.parametrize(
    ("array", "bytes_per_pixel"),
    [
        (np.zeros((30, 40), np.uint8), 1),
        (_lines(30, 40), 2),
        (np.zeros((30, 40, 3), np.uint8), 4),  # Pillow holds RGB padded to four bytes
    ],
    ids=["grey8", "grey16", "rgb"],
)
def test_a_png_is_refused_above_its_decoded_bytes(array: np.ndarray, bytes_per_pixel: int) -> None:
    data = _png(array)
    exact = 30 * 40 * bytes_per_pixel
    decode_image(data, limits=ImageLimits(decoded_bytes=exact))
    refused = assert_fails("image-too-large", data, limits=ImageLimits(decoded_bytes=exact - 1))
    assert refused.http_status == 413 and f"of {bytes_per_pixel} bytes" in refused.message


def test_a_dicom_is_refused_by_samples_and_bits_allocated(read_bytes: Callable[[str], bytes]) -> None:
    ds = dataset(read_bytes("693_UNCR.dcm"))
    exact = int(ds.Rows) * int(ds.Columns) * 2  # 16 bits allocated, one sample
    assert int(ds.BitsAllocated) == 16 and int(ds.get("SamplesPerPixel", 1)) == 1
    decode_image(to_bytes(ds), limits=ImageLimits(decoded_bytes=exact))
    assert_fails("image-too-large", to_bytes(ds), limits=ImageLimits(decoded_bytes=exact - 1))


def test_a_float64_volume_counts_eight_bytes_a_pixel(tmp_path: Path) -> None:
    path = tmp_path / "x.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((30, 40), np.float64)), str(path))
    data = path.read_bytes()
    decode_image(data, filename="x.nrrd", limits=ImageLimits(decoded_bytes=30 * 40 * 8))
    assert_fails("image-too-large", data, filename="x.nrrd", limits=ImageLimits(decoded_bytes=30 * 40 * 8 - 1))


def test_a_nifti_gz_is_inflated_only_up_to_the_end_of_its_pixels() -> None:
    data, nifti = nifti_gz(trail=64 * 2**20)
    tracemalloc.start()
    try:
        image = decode_image(data, filename="x.nii.gz")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20, f"{peak / 2**20:.0f} MiB"  # the whole stream was 64 MiB
    assert len(gzip.decompress(image.source_bytes_deidentified)) == len(nifti)  # the trailing zeros are dropped
    again = decode_image(image.source_bytes_deidentified, filename="x.nii.gz")
    assert again.pixel_sha256 == image.pixel_sha256
    members = gzip.compress(nifti[:600]) + gzip.compress(nifti[600:]) + gzip.compress(bytes(1000))  # as bgzip writes
    kept = decode_image(members, filename="x.nii.gz").source_bytes_deidentified
    assert len(gzip.decompress(kept)) == len(nifti)


def test_a_nifti_gz_declaring_more_than_the_decoded_bytes_limit_is_refused() -> None:
    data, _ = nifti_gz(gap=17 * 2**20)  # pixels after 17 MiB of header extensions: past 16 MiB of room
    decode_image(data, filename="x.nii.gz", limits=ImageLimits(decoded_bytes=2 * 2**20))
    refused = assert_fails("image-too-large", data, filename="x.nii.gz", limits=ImageLimits(decoded_bytes=30 * 40 * 2))
    assert refused.http_status == 413 and "header declares" in refused.message


def test_blocks_give_the_whole_image_answer(
    read_bytes: Callable[[str], bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Grey conversion in blocks of a few rows equals the reference mapping and a decode in one block."""
    png16 = _png(_lines(50, 61))
    rgb = _png(np.random.default_rng(0).integers(0, 256, (50, 61, 3), dtype=np.uint8))
    dicoms = [read_bytes(name) for name in ("693_UNCR.dcm", "RG1_UNCR.dcm", "SC_rgb.dcm", "OT-PAL-8-face.dcm")]
    whole = [decode_image(data).pixels for data in (png16, rgb, *dicoms)]
    monkeypatch.setattr(grey, "_BLOCK_VALUES", 7 * 61)  # 7 rows of the PNGs; one row of the DICOMs
    blocked = [decode_image(data).pixels for data in (png16, rgb, *dicoms)]
    for one, many in zip(whole, blocked, strict=True):
        np.testing.assert_array_equal(one, many)
    np.testing.assert_array_equal(blocked[0], stretched(_lines(50, 61), 0, 40000))


_PEAK = """
import json, sys
def hwm():
    # VmHWM belongs to this process's memory map, made new by exec; ru_maxrss would start at the parent's size
    return int(next(line for line in open("/proc/self/status") if line.startswith("VmHWM")).split()[1])
from server.imaging import decode_image
data = open(sys.argv[1], "rb").read()
before = hwm()
image = decode_image(data)
after = hwm()
print(json.dumps({"grown_kib": after - before, "pixels": image.width * image.height}))
"""


def test_a_16_bit_png_decodes_in_about_three_copies_of_itself(tmp_path: Path) -> None:
    """Pillow's array, ours and the result (2 bytes each per pixel): the float64 arithmetic adds only a block.
    The same decode took 22 bytes per pixel when the conversion held whole float64 copies."""
    path = tmp_path / "big.png"
    path.write_bytes(_png(_lines(3000, 4000)))
    run = subprocess.run([sys.executable, "-c", _PEAK, str(path)], capture_output=True, text=True, check=True)
    measured = json.loads(run.stdout)
    per_pixel = measured["grown_kib"] * 1024 / measured["pixels"]
    assert measured["pixels"] == 12_000_000
    assert per_pixel < 8, f"{per_pixel:.1f} bytes per pixel"
