"""Decode one uploaded X-ray into a display-ready grey image, its pixel spacing and a de-identified copy.

The format is recognised from the bytes (the filename's suffix only helps to recognise a MetaImage header):
DICOM (Part 10 with the "DICM" prefix, or a bare dataset as a last resort), PNG, JPEG, BMP and TIFF through
Pillow, and single-file MetaImage (.mha), NRRD with attached data and NIfTI (.nii, .nii.gz) through SimpleITK.

Every image size is checked from the header before any pixel is decoded, so a small file that declares a huge
image (a decompression bomb) is refused without allocating it. Every failure is an ``ImagingError`` with a code
and a message for the clinician; no exception of a decoding library leaks out.

De-identification covers the DICOM header only: the pixel data is not altered, so text burned into the image
(see (0028,0301) Burned In Annotation) is out of scope and must be removed before upload.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from server.imaging.detect import detect_reader
from server.imaging.dicom import decode_dicom
from server.imaging.errors import ImagingError
from server.imaging.raster import decode_raster
from server.imaging.types import DEFAULT_LIMITS, DecodedImage, ImageLimits, plausible_spacing, spacing_rule
from server.imaging.volume import decode_volume


def decode_image(
    data: bytes,
    *,
    filename: str | None = None,
    limits: ImageLimits = DEFAULT_LIMITS,
    spacing_mm: tuple[float, float] | None = None,
    at_least: tuple[int, int] | None = None,
) -> DecodedImage:
    """Decode an uploaded image file.

    Args:
        data: the whole file as uploaded.
        filename: the client's file name; used in messages and to recognise a MetaImage header, never to
            override what the bytes say.
        limits: the largest accepted image (pixels) and decoded array (bytes), both checked from the header
            before decoding.
        spacing_mm: a user-given (x, y) pixel spacing in mm; overrides the file's (source "user"). Both values
            must be finite and > 0.
        at_least: (W, H), for a caller that only needs the image this large (prediction, at a model's input
            size): a JPEG may then be decoded reduced by 2, 4 or 8 (see ``DecodedImage.reduction``); other
            formats are decoded whole.

    Returns:
        The decoded image; see ``DecodedImage``.

    Raises:
        ImagingError: whenever the bytes cannot be ingested; ``code`` says why.
    """
    user_spacing = _check_user_spacing(spacing_mm)
    subject = _subject(filename)
    image = _decode_any(data, filename, limits, subject, at_least)
    if user_spacing is not None:
        image = replace(image, spacing_mm=user_spacing, spacing_source="user")
    return image


def _decode_any(
    data: bytes, filename: str | None, limits: ImageLimits, subject: str, at_least: tuple[int, int] | None
) -> DecodedImage:
    reader = detect_reader(data, filename, subject)
    if reader == "raster":
        return decode_raster(data, limits, subject, at_least)
    if reader in ("dicom", "bare-dicom"):
        return decode_dicom(data, limits, subject, force=reader == "bare-dicom")
    return decode_volume(data, reader, limits, subject)


def _check_user_spacing(spacing_mm: Sequence[float] | None) -> tuple[float, float] | None:
    if spacing_mm is None:
        return None
    try:
        x, y = (float(value) for value in spacing_mm)
    except (TypeError, ValueError):
        x = y = math.nan
    if not plausible_spacing(x, y):
        raise ImagingError(
            "bad-spacing",
            f"The pixel spacing {spacing_mm!r} is not valid: give {spacing_rule()}, or leave it out if it is unknown.",
        )
    return x, y


def _subject(filename: str | None) -> str:
    name = Path(filename).name if filename else ""
    if not name:
        return "The uploaded file"
    return f"The file '{name if len(name) <= 80 else name[:77] + '...'}'"
