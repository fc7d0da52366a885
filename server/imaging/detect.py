"""Recognise an upload's format from its bytes; the filename's suffix only helps to recognise a MetaImage header."""

from __future__ import annotations

import re
import zlib
from pathlib import Path
from typing import Literal

from server.imaging.dicom_file import is_bare_dicom_image
from server.imaging.errors import ImagingError
from server.imaging.types import ACCEPTED_FORMATS

Reader = Literal["dicom", "bare-dicom", "mha", "nrrd", "nifti", "raster"]

_PILLOW_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM", b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_OTHER_IMAGE_MAGIC = {
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
    b"\x00\x00\x00\x0cjP  ": "JPEG 2000 (.jp2)",
    b"\xff\x4f\xff\x51": "JPEG 2000 codestream",
}
_METAIMAGE_FIRST_KEY = re.compile(rb"\A\s*(ObjectType|NDims|ObjectSubType|Comment|DimSize)\s*=")


def detect_reader(data: bytes, filename: str | None, subject: str) -> Reader:
    """Which decoder reads the bytes: "dicom" (Part 10), "bare-dicom" (a dataset without the "DICM" prefix, tried
    last), "mha", "nrrd" or "nifti" (SimpleITK) or "raster" (Pillow). Refuses an empty file, a known image format
    that is not accepted, and anything else."""
    if not data:
        raise ImagingError("empty-file", f"{subject} is empty (0 bytes). Upload the image file again.")
    if data[128:132] == b"DICM":
        return "dicom"
    if data.startswith(b"NRRD"):
        return "nrrd"
    if nifti_header(data) is not None:
        return "nifti"
    if _METAIMAGE_FIRST_KEY.match(data[:256]) or (
        _suffix(filename) in (".mha", ".mhd") and b"ElementDataFile" in data[:65536]
    ):
        return "mha"
    if data.startswith(_PILLOW_MAGIC):
        return "raster"
    _refuse_known_other_format(data, subject)
    if is_bare_dicom_image(data):
        return "bare-dicom"
    raise ImagingError("not-an-image", f"{subject} is not an image this service can read. Upload {ACCEPTED_FORMATS}.")


def nifti_header(data: bytes) -> bytes | None:
    """The first 540 bytes of a single-file NIfTI-1/2 image (inflated when gzipped), or None if it is not one."""
    head = data[:540]
    if data.startswith(b"\x1f\x8b"):
        try:
            head = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data, 540)
        except zlib.error:
            return None
    is_nifti1 = len(head) >= 348 and head[344:348] == b"n+1\x00" and _int32_either_endian(head[:4]) == 348
    is_nifti2 = len(head) >= 540 and head[4:8] == b"n+2\x00" and _int32_either_endian(head[:4]) == 540
    return head if is_nifti1 or is_nifti2 else None


def _int32_either_endian(raw: bytes) -> int:
    little = int.from_bytes(raw, "little")
    return little if little in (348, 540) else int.from_bytes(raw, "big")


def _refuse_known_other_format(data: bytes, subject: str) -> None:
    for magic, name in _OTHER_IMAGE_MAGIC.items():
        if data.startswith(magic):
            raise ImagingError(
                "unsupported-format", f"{subject} is a {name} file, which is not accepted. Upload {ACCEPTED_FORMATS}."
            )
    if len(data) >= 348 and data[344:348] == b"ni1\x00":
        raise ImagingError(
            "unsupported-format",
            f"{subject} is a NIfTI/Analyze header with a separate .img data file, which is not accepted. "
            "Save the image as a single .nii or .nii.gz file.",
        )


def _suffix(filename: str | None) -> str:
    return Path(filename).suffix.lower() if filename else ""
