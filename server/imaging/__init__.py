"""Imaging ingest: decode an uploaded X-ray (DICOM, PNG, JPEG, BMP, TIFF, MHA, NRRD, NIfTI) into a display-ready
grey image with its pixel spacing, de-identifying DICOM headers. Pure functions: no web framework, no database."""

from server.imaging.decode import decode_image
from server.imaging.errors import ImagingError, ImagingErrorCode
from server.imaging.grey import pixel_digest
from server.imaging.types import (
    ACCEPTED_FORMATS,
    DEFAULT_MAX_PIXELS,
    DecodedImage,
    ImageFormat,
    ImageLimits,
    SpacingSource,
)

__all__ = [
    "ACCEPTED_FORMATS",
    "DEFAULT_MAX_PIXELS",
    "DecodedImage",
    "ImageFormat",
    "ImageLimits",
    "ImagingError",
    "ImagingErrorCode",
    "SpacingSource",
    "decode_image",
    "pixel_digest",
]
