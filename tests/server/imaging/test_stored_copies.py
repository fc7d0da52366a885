"""The stored copy of a volume (MHA, NRRD, NIfTI) ends where its pixels end: text after them, in the gap before a
NIfTI's voxels, or in a header's free-text fields is not stored, and the copy decodes to the same pixels. Headers
whose pixels cannot be delimited (skipped bytes, pixels as text) are refused. A BMP is stored from its pixels
alone, a PNG's IDAT chunks up to the end of their zlib stream, a JPEG's APP0 and APP14 as their fixed-length
headers."""

from __future__ import annotations

import gzip
import io
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from server.imaging import DecodedImage, decode_image

from .cases import assert_fails

SECRET = b"DOE^JOHN 19700101 MRN 0042"
VALUES = (np.add.outer(np.arange(48), 3 * np.arange(64)).astype("<u2") * 300).reshape(48, 64)


def written(suffix: str, tmp_path: Path, *, compress: bool = False) -> bytes:
    """A 64 x 48 16-bit image with a 0.1 mm spacing, as SimpleITK writes it."""
    image = sitk.GetImageFromArray(VALUES)
    image.SetSpacing((0.1, 0.1))
    path = tmp_path / f"image{suffix}"
    sitk.WriteImage(image, str(path), useCompression=compress)
    return path.read_bytes()


def nrrd(*fields: str, data: bytes = VALUES.tobytes(), encoding: str = "raw", space: bool = False) -> bytes:
    """`space`: the spacing as a space's directions (which units may name) rather than per-axis spacings."""
    geometry = ["space dimension: 2", "space directions: (0.1,0) (0,0.1)"] if space else ["spacings: 0.1 0.1"]
    header = ["NRRD0004", "type: uint16", "dimension: 2", "sizes: 64 48", *geometry, *fields]
    return ("\n".join([*header, "endian: little", f"encoding: {encoding}"]) + "\n\n").encode() + data


def mha(*fields: str, data: bytes = VALUES.tobytes()) -> bytes:
    header = ["ObjectType = Image", "NDims = 2", "DimSize = 64 48", "ElementType = MET_USHORT", *fields]
    return ("\n".join([*header, "ElementDataFile = LOCAL"]) + "\n").encode() + data


def assert_stored_without_secret(upload: bytes, name: str) -> DecodedImage:
    """`upload` decodes; its stored copy holds no SECRET and decodes to the same pixels and spacing."""
    inflated = gzip.decompress(upload) if upload.startswith(b"\x1f\x8b") else upload
    assert SECRET in inflated
    image = decode_image(upload, filename=name)
    stored = image.source_bytes_deidentified
    assert SECRET not in (gzip.decompress(stored) if stored.startswith(b"\x1f\x8b") else stored)
    again = decode_image(stored, filename=name)
    assert (again.width, again.height, again.pixel_sha256) == (image.width, image.height, image.pixel_sha256)
    assert again.spacing_mm == pytest.approx(image.spacing_mm)
    return image


@pytest.mark.parametrize(
    ("suffix", "compress"),
    [(".mha", False), (".mha", True), (".nrrd", False), (".nrrd", True), (".nii", False)],
    ids=["mha", "mha-compressed", "nrrd", "nrrd-gzip", "nifti"],
)
def test_nothing_after_the_pixels_is_stored(suffix: str, compress: bool, tmp_path: Path) -> None:
    clean = written(suffix, tmp_path, compress=compress)
    image = assert_stored_without_secret(clean + SECRET, f"x{suffix}")
    assert image.source_bytes_deidentified == decode_image(clean, filename=f"x{suffix}").source_bytes_deidentified
    assert np.array_equal(image.pixels, decode_image(clean, filename=f"x{suffix}").pixels)


def test_a_gzipped_nifti_is_stored_up_to_its_last_voxel(tmp_path: Path) -> None:
    clean = written(".nii", tmp_path)
    stored = assert_stored_without_secret(gzip.compress(clean + SECRET), "x.nii.gz").source_bytes_deidentified
    assert gzip.decompress(stored) == decode_image(clean, filename="x.nii").source_bytes_deidentified


@pytest.mark.parametrize("gz", [False, True], ids=["nii", "nii.gz"])
def test_the_gap_before_the_voxels_is_zeroed_whatever_the_extension_flag(gz: bool, tmp_path: Path) -> None:
    data = bytearray(written(".nii", tmp_path))
    vox_offset = int(struct.unpack("<f", data[108:112])[0])
    assert data[348] == 0  # "no extensions": the gap is text all the same
    gap = SECRET.ljust(64, b"\0")
    data[108:112] = struct.pack("<f", float(vox_offset + len(gap)))
    upload = bytes(data[:vox_offset] + gap + data[vox_offset:])
    stored = assert_stored_without_secret(gzip.compress(upload) if gz else upload, "x.nii.gz" if gz else "x.nii")
    inflated = gzip.decompress(stored.source_bytes_deidentified) if gz else stored.source_bytes_deidentified
    assert inflated[348 : vox_offset + len(gap)] == bytes(vox_offset + len(gap) - 348)
    assert np.array_equal(stored.pixels, decode_image(bytes(written(".nii", tmp_path))).pixels)


@pytest.mark.parametrize("space", [False, True], ids=["spacings", "space-directions"])
def test_free_text_nrrd_fields_are_not_stored(space: bool) -> None:
    """Units are free text in quotes, min and max any text at all (SimpleITK reads all of these)."""
    text = SECRET.decode()
    units = f'space units: "{text}" "mm"' if space else f'units: "{text}" "mm"'
    upload = nrrd(units, f"min: {text}", f"max: {text}", f"old max: 1 {text}", space=space)
    image = assert_stored_without_secret(upload, "x.nrrd")
    assert image.source_bytes_deidentified == decode_image(nrrd(space=space)).source_bytes_deidentified


def test_free_text_metaimage_fields_are_not_stored() -> None:
    text = SECRET.decode()
    fields = (f"ObjectSubType = {text}", f"AnatomicalOrientation = {text}", f"ElementMin = {text}")
    image = assert_stored_without_secret(mha(*fields, f"ElementMax = {text}"), "x.mha")
    assert image.source_bytes_deidentified == decode_image(mha()).source_bytes_deidentified


@pytest.mark.parametrize(
    "make",
    [
        lambda: nrrd(f"thicknesses: 1 1 {SECRET.decode()}"),
        lambda: nrrd(f"space origin: (0,0) {SECRET.decode()}", space=True),
        lambda: nrrd().replace(b"dimension: 2", b"dimension: 2 " + SECRET),
        lambda: mha(f"ElementSpacing = 0.1 0.1 {SECRET.decode()}"),
        lambda: mha(f"Offset = 0 0 {SECRET.decode()}"),
        lambda: mha(f"BinaryDataByteOrderMSB = False {SECRET.decode()}"),
        lambda: mha().replace(b"ObjectType = Image", b"ObjectType = Image " + SECRET),
        lambda: mha().replace(b"DimSize = 64 48", b"DimSize = 64 48 " + SECRET),
    ],
    ids=["thicknesses", "space-origin", "dimension", "spacing", "offset", "flag", "object-type", "dim-size"],
)
def test_text_after_a_kept_fields_values_is_refused(make: Callable[[], bytes]) -> None:
    """MetaIO and teem read a kept field's numbers or flag and ignore text after them; it would be stored."""
    assert "without its header's text" in assert_fails("truncated-image", make()).message


def test_several_gzip_members_are_stored_up_to_the_last_pixel() -> None:
    raw = VALUES.tobytes()
    members = gzip.compress(raw[:1000]) + gzip.compress(raw[1000:])
    image = assert_stored_without_secret(nrrd(data=members + SECRET, encoding="gzip"), "x.nrrd")
    assert image.source_bytes_deidentified.endswith(members)


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (lambda: nrrd(f"byte skip: {len(SECRET)}", data=SECRET + VALUES.tobytes()), "skips bytes"),
        (lambda: nrrd("byte skip: -1", data=SECRET + VALUES.tobytes()), "skips bytes"),
        (lambda: nrrd("line skip: 1", data=SECRET + b"\n" + VALUES.tobytes()), "skips bytes"),
        (lambda: mha("HeaderSize = -1", data=SECRET + VALUES.tobytes()), "skips bytes"),
        (lambda: nrrd(data=" ".join(map(str, VALUES.ravel())).encode() + b" " + SECRET, encoding="ascii"), "as text"),
        (lambda: nrrd(data=VALUES.tobytes().hex().encode() + SECRET, encoding="hex"), "as text"),
        (lambda: mha("BinaryData = False", data=" ".join(map(str, VALUES.ravel())).encode() + SECRET), "as text"),
    ],
    ids=["byte-skip", "byte-skip-to-the-end", "line-skip", "mha-header-size", "ascii", "hex", "mha-text"],
)
def test_pixels_that_cannot_be_delimited_are_refused(make: Callable[[], bytes], why: str) -> None:
    """SimpleITK reads each of these, SECRET left out of the pixels; the stored copy could not leave it out."""
    assert why in assert_fails("unsupported-format", make()).message


# ------------------------------------------------------------------------------------------- BMP and JPEG


def picture(image_format: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray((VALUES // 300 % 256).astype(np.uint8)).save(buffer, format=image_format)
    return buffer.getvalue()


def segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def test_a_bmp_is_stored_from_its_pixels_alone() -> None:
    """Text after the pixels, and in a gap between the palette and the pixels (bfOffBits moved past it)."""
    clean = picture("BMP")
    offset = int.from_bytes(clean[10:14], "little")
    gapped = bytearray(clean[:offset] + SECRET + clean[offset:])
    gapped[10:14] = (offset + len(SECRET)).to_bytes(4, "little")
    gapped[2:6] = len(gapped).to_bytes(4, "little")
    expected = decode_image(clean).source_bytes_deidentified
    for upload in (clean + SECRET, bytes(gapped)):
        image = assert_stored_without_secret(upload, "x.bmp")
        assert image.source_bytes_deidentified == expected
        assert np.array_equal(image.pixels, decode_image(clean).pixels)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


@pytest.mark.parametrize("split", [False, True], ids=["one-idat", "text-in-its-own-idat"])
def test_a_png_is_stored_up_to_the_end_of_its_zlib_stream(split: bool) -> None:
    """zlib stops at the end of the stream; text after it, in the last IDAT or an IDAT of its own, is no pixel."""
    rows = b"".join(b"\x00" + row.tobytes() for row in (VALUES // 300 % 256).astype(np.uint8))
    head = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 64, 48, 8, 0, 0, 0, 0))
    stream, end = zlib.compress(rows), png_chunk(b"IEND", b"")
    idat = png_chunk(b"IDAT", stream) + png_chunk(b"IDAT", SECRET) if split else png_chunk(b"IDAT", stream + SECRET)
    image = assert_stored_without_secret(head + idat + end, "x.png")
    assert image.source_bytes_deidentified == head + png_chunk(b"IDAT", stream) + end
    assert np.array_equal(image.pixels, decode_image(head + png_chunk(b"IDAT", stream) + end).pixels)


def test_jpeg_app0_and_app14_keep_only_their_headers() -> None:
    """A JFIF thumbnail, an APP0 under another identifier (JFXX) and bytes after Adobe's 12 are dropped."""
    clean = picture("JPEG")
    jfif_end = 4 + int.from_bytes(clean[4:6], "big")
    jfif = clean[4 + 2 : jfif_end]
    assert jfif.startswith(b"JFIF\x00") and len(jfif) == 14 and clean[2:4] == b"\xff\xe0"
    adobe = b"Adobe\x00\x64\x00\x00\x00\x00\x00"
    with_adobe = clean[:jfif_end] + segment(0xEE, adobe) + clean[jfif_end:]
    thumbnail = jfif[:12] + bytes([len(SECRET), 1]) + SECRET * 3  # 1 row of len(SECRET) RGB pixels
    upload = b"".join(
        [
            clean[:2],
            segment(0xE0, thumbnail),
            segment(0xE0, b"JFXX\x00\x10" + SECRET),
            segment(0xEE, adobe + SECRET),
            clean[jfif_end:],
        ]
    )
    image = assert_stored_without_secret(upload, "x.jpg")
    assert image.source_bytes_deidentified == with_adobe == decode_image(with_adobe).source_bytes_deidentified
    assert np.array_equal(image.pixels, decode_image(clean).pixels)
