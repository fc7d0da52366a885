"""What the imaging tests share: the real DICOM files of pydicom-data and deid-data (read once per module) and
small helpers to rewrite and decode them."""

from __future__ import annotations

import io
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from PIL import Image
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset

from server.imaging import ImagingError, decode_image

data_store = pytest.importorskip("data_store", reason="pydicom-data (the dev extra) holds the DICOM test files")
deid_data = pytest.importorskip("deid_data", reason="deid-data (the dev extra) holds the DX test file")

PYDICOM_DATA = Path(data_store.__file__).parent / "data"
DEID_DATA = Path(deid_data.__file__).parent / "data"
IDENTIFYING = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "OtherPatientIDs",
    "InstitutionName",
    "ReferringPhysicianName",
    "AccessionNumber",
)


def dataset(data: bytes) -> Dataset:
    return pydicom.dcmread(io.BytesIO(data))


def to_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


def stretched(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """The reference mapping lo..hi -> 0..65535 the decoder promises, computed independently."""
    return np.rint(np.clip((values.astype(np.float64) - lo) / (hi - lo), 0, 1) * 65535).astype(np.uint16)


def assert_fails(code: str, data: bytes, **kwargs: object) -> ImagingError:
    with pytest.raises(ImagingError) as info:
        decode_image(data, **kwargs)  # type: ignore[arg-type]
    assert info.value.code == code, info.value.message
    assert len(info.value.message) > 30 and str(info.value) == info.value.message
    return info.value


def nifti_gz(gap: int = 0, trail: int = 0) -> tuple[bytes, bytes]:
    """(a .nii.gz of a 40 x 30 int16 image whose pixels start `gap` zero bytes past its header and are followed by
    `trail` zero bytes in the same gzip stream, the NIfTI file up to the end of its pixels)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "x.nii"
        sitk.WriteImage(sitk.GetImageFromArray(np.arange(1200, dtype=np.int16).reshape(30, 40)), str(path))
        nifti = bytearray(path.read_bytes())
    voxels_at = int(struct.unpack("<f", nifti[108:112])[0])
    nifti[108:112] = struct.pack("<f", voxels_at + gap)
    nifti[voxels_at:voxels_at] = bytes(gap)
    deflate = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts = [deflate.compress(nifti)]
    parts += [deflate.compress(bytes(min(1 << 24, trail - sent))) for sent in range(0, trail, 1 << 24)]
    return b"".join([*parts, deflate.flush()]), bytes(nifti)


def with_unknown_vr(data: bytes, keyword: str) -> bytes:
    """A DICOM file in explicit VR little endian with the VR of `keyword`'s element made one pydicom does not know."""
    tag = tag_for_keyword(keyword)
    assert tag is not None
    at = data.index(struct.pack("<HH", tag >> 16, tag & 0xFFFF), 132)
    return data[: at + 4] + b"S\x80" + data[at + 6 :]


def tiff_with_a_page_without_size() -> bytes:
    """A two-page TIFF whose second page has no ImageWidth or ImageLength (renamed to unknown private tags)."""
    buffer = io.BytesIO()
    pages = [Image.fromarray(np.full((40, 48), value, np.uint8)) for value in (10, 200)]
    pages[0].save(buffer, format="TIFF", save_all=True, append_images=pages[1:])
    data = bytearray(buffer.getvalue())
    first = struct.unpack_from("<I", data, 4)[0]
    second = struct.unpack_from("<I", data, first + 2 + 12 * struct.unpack_from("<H", data, first)[0])[0]
    for entry in range(second + 2, second + 2 + 12 * struct.unpack_from("<H", data, second)[0], 12):
        tag = struct.unpack_from("<H", data, entry)[0]
        if tag in (256, 257):
            struct.pack_into("<H", data, entry, 65000 + tag - 256)
    return bytes(data)
