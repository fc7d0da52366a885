"""What a decode returns: the ``DecodedImage``, the names of formats and spacing sources, and the default limits."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

import numpy as np
from pydicom.dataset import Dataset

from server.imaging.grey import pixel_digest

ImageFormat = Literal["dicom", "png", "jpeg", "bmp", "tiff", "mha", "nrrd", "nifti"]
SpacingSource = Literal["PixelSpacing", "ImagerPixelSpacing", "header", "user", "none"]

DEFAULT_MAX_PIXELS = 60_000_000
#: A 60-megapixel 16-bit grey image (120 MB) fits; the same size as 16-bit RGB or 64-bit floats does not.
DEFAULT_MAX_DECODED_BYTES = 256 * 2**20
#: The fewest pixels along either side of an image worth ingesting: a model input is hundreds of pixels a side, and
#: an image of a few pixels is no radiograph (predict would answer landmarks from its upscaled blur).
MIN_IMAGE_SIDE = 16
#: Pixel spacings a radiograph can have, mm per pixel (detectors 0.05-0.2, downsampled copies up to a few mm):
#: outside it a stated spacing is a mistake, and an absurd one makes mm figures and the local stage's crops absurd.
SPACING_RANGE_MM = (0.01, 5.0)
ACCEPTED_FORMATS = "DICOM, PNG, JPEG, BMP, TIFF, MetaImage (.mha), NRRD (.nrrd) or NIfTI (.nii, .nii.gz)"


@dataclass(frozen=True)
class ImageLimits:
    """What one decode may cost, both checked from the header before any pixel is decoded.

    Attributes:
        pixels: the largest accepted H * W of the file's image.
        decoded_bytes: the largest accepted array the decoder makes: H * W * samples per pixel * bytes per
            sample (a 16-bit grey pixel is 2 bytes, an RGB pixel that Pillow holds is 4). The grey conversion
            after it works in blocks of rows, so a decode's peak memory is a small multiple of this (measured by
            bench/decode_memory.py, in docs/benchmarks.md).
    """

    pixels: int = DEFAULT_MAX_PIXELS
    decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES


DEFAULT_LIMITS = ImageLimits()


@dataclass(frozen=True, eq=False)
class DecodedImage:
    """One decoded upload.

    Attributes:
        pixels: (H, W) uint16, read-only. Display-ready grey with bone bright: the source's value range (for DICOM
            after the modality LUT, the first VOI LUT or window, and MONOCHROME1 inversion) stretched to 0..65535.
            Where ``reduction`` > 1: (ceil(H / reduction), ceil(W / reduction)).
        width: W, columns of the file's image (also when ``reduction`` > 1).
        height: H, rows of the file's image.
        reduction: 1, or the integer factor by which a JPEG was reduced while decoding (DCT scaling; only for a
            caller that asked, see ``decode_image``'s ``at_least``): pixel (i, j) of ``pixels`` stands for the
            file's pixels r*i .. r*i+r-1 (rows) and r*j .. r*j+r-1 (columns), its centre at r*(j + 0.5) - 0.5.
        format: the container the bytes were in.
        spacing_mm: (x, y) = (column spacing, row spacing) in mm per pixel, or None where unknown.
        spacing_source: where ``spacing_mm`` comes from: the DICOM "PixelSpacing" or "ImagerPixelSpacing", the
            MetaImage/NRRD/NIfTI "header", the "user", or "none".
        pixel_sha256: hex sha256 of the shape and the pixels (see ``pixel_digest``): the same picture uploaded
            twice, with other metadata or other de-identified UIDs, has the same digest. Computed on first use
            and kept (a property): hashing a cephalogram's pixels takes over a millisecond, and prediction,
            which stores nothing, never needs it. Refused for a reduced decode (it is not the file's image).
        source_bytes_deidentified: the bytes to store: the de-identified DICOM file (its pixels untouched, the
            text segments of compressed frames cut) for DICOM input, the original bytes for every other format.
        dicom: the de-identified dataset (DICOM input only).
        deid_method: how the DICOM header was de-identified, e.g. "dicognito 0.19.0; private tags removed".
        modality: DICOM Modality (e.g. "CR", "DX") where known.
        photometric: the source's colour model: DICOM PhotometricInterpretation, or the Pillow mode ("L", "I;16",
            "RGB", ...) for PNG/JPEG/BMP/TIFF; None for MetaImage/NRRD/NIfTI.
        bits_stored: bits per sample of the source (DICOM BitsStored; 8 or 16 for PNG, ...) where known.
        transfer_syntax: the DICOM transfer syntax UID (DICOM only).
        descriptors: the source's free-text descriptions (StudyDescription, ...; DICOM only; a multi-valued one as
            a list of its values) and the SpecificCharacterSet they are in, which ``dicom`` and
            ``source_bytes_deidentified`` do not hold: kept in memory for a clinic that keeps them
            (server.imaging.descriptors), never stored otherwise.
    """

    pixels: np.ndarray = field(repr=False)
    width: int
    height: int
    format: ImageFormat
    spacing_mm: tuple[float, float] | None
    spacing_source: SpacingSource
    source_bytes_deidentified: bytes = field(repr=False)
    dicom: Dataset | None = field(default=None, repr=False)
    deid_method: str | None = None
    modality: str | None = None
    photometric: str | None = None
    bits_stored: int | None = None
    transfer_syntax: str | None = None
    reduction: int = 1
    descriptors: dict[str, str | list[str]] = field(default_factory=dict, repr=False)

    @cached_property
    def pixel_sha256(self) -> str:
        if self.reduction != 1:
            raise ValueError("a reduced decode has no digest of the file's pixels: decode without at_least")
        return pixel_digest(self.pixels)


def finish(pixels: np.ndarray, size: tuple[int, int] | None = None, **fields: object) -> DecodedImage:
    """Build the result from an (H, W) uint16 image and the format's fields; freezes the array. `size`: the
    file's (W, H) where the pixels were reduced while decoding (default: the pixels' own)."""
    pixels.flags.writeable = False
    height, width = pixels.shape
    if size is not None:
        width, height = size
    return DecodedImage(pixels=pixels, width=width, height=height, **fields)  # type: ignore[arg-type]


def plausible_spacing(x: float, y: float) -> bool:
    """Whether (x, y) mm per pixel are finite and within SPACING_RANGE_MM."""
    low, high = SPACING_RANGE_MM
    return all(math.isfinite(v) and low <= v <= high for v in (x, y))


def spacing_rule() -> str:
    """The accepted spacings in words, for error messages."""
    low, high = SPACING_RANGE_MM
    return f"two finite numbers from {low} to {high} millimetres per pixel (column spacing, row spacing)"
