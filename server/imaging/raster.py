"""Decode PNG, JPEG, BMP and TIFF through Pillow into (H, W) uint16 grey; these formats carry no pixel spacing."""

from __future__ import annotations

import io
import struct

import numpy as np
from PIL import ExifTags, Image, ImageOps

from server.imaging.errors import ImagingError
from server.imaging.grey import stretch, value_range
from server.imaging.raster_meta import without_metadata
from server.imaging.refusals import check_size, truncated_image
from server.imaging.types import DecodedImage, ImageFormat, ImageLimits, finish

_PILLOW_FORMATS: dict[str, ImageFormat] = {"PNG": "png", "JPEG": "jpeg", "MPO": "jpeg", "BMP": "bmp", "TIFF": "tiff"}
_PILLOW_OPENERS = ["PNG", "JPEG", "BMP", "TIFF"]  # the JPEG opener also returns MPO (camera JPEGs with previews)


def decode_raster(
    data: bytes, limits: ImageLimits, subject: str, at_least: tuple[int, int] | None = None
) -> DecodedImage:
    """`at_least` (W, H): a JPEG may be decoded reduced by 2, 4 or 8 (libjpeg's DCT scaling, several times
    faster than decoding all and resizing) as long as both sides stay at least this large, as displayed."""
    image = _open_pillow(data, limits, subject)
    image_format = _PILLOW_FORMATS[str(image.format)]
    size = image.size
    reduction, turned = 1, False
    try:
        if at_least is not None and image_format == "jpeg":
            # `at_least` is as displayed: swapped for an EXIF orientation that turns the image by 90 degrees.
            turned = image.getexif().get(ExifTags.Base.Orientation, 1) in (5, 6, 7, 8)
            reduction = _draft(image, at_least[::-1] if turned else at_least)
        image.load()
        if image_format in ("jpeg", "tiff"):
            # As every viewer shows it; in place, since otherwise Pillow copies the image even when nothing turns.
            ImageOps.exif_transpose(image, in_place=True)
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError... on damaged data
        raise truncated_image(subject) from exc
    if reduction > 1 and turned:
        size = size[::-1]
    mode = image.mode
    stored = _stored_copy(data, image_format, image, subject)
    try:
        pixels = _pillow_grey(image)
    except ValueError as exc:  # a colour mode Pillow cannot convert to RGB
        raise ImagingError(
            "unsupported-photometric",
            f"{subject} uses the colour mode '{mode}', which cannot be turned into a grey image. "
            "Save it as grey or RGB.",
        ) from exc
    return finish(
        pixels,
        size if reduction > 1 else None,
        reduction=reduction,
        format=image_format,
        spacing_mm=None,
        spacing_source="none",
        source_bytes_deidentified=stored,
        photometric=mode,
        bits_stored=16 if mode.startswith("I;16") else 32 if mode in ("I", "F") else 1 if mode == "1" else 8,
    )


def _stored_copy(data: bytes, image_format: ImageFormat, image: Image.Image, subject: str) -> bytes:
    try:
        return without_metadata(data, image_format, image)
    except Exception as exc:  # a structure Pillow decoded but the filter cannot walk: never store it unfiltered
        raise ImagingError(
            "truncated-image", f"{subject} could not be stored without its metadata. Save the image again."
        ) from exc


def _open_pillow(data: bytes, limits: ImageLimits, subject: str) -> Image.Image:
    """Open (header only), check format, size and frames, and verify the file's integrity on a separate copy.

    Pillow's own decompression-bomb guard (module-wide ``Image.MAX_IMAGE_PIXELS``) is left as it is, since
    uploads decode concurrently; ``limits`` are checked here instead, before any pixel is decoded.
    """
    declared = _declared_size(data)
    if declared is not None:
        check_size(*declared, limits, subject)
    try:
        image = Image.open(io.BytesIO(data), formats=_PILLOW_OPENERS)
        pages = int(getattr(image, "n_frames", 1))  # a TIFF's pages are read here: one may be damaged
    except Image.DecompressionBombError as exc:
        raise ImagingError(
            "image-too-large",
            f"{subject} declares an image too large to decode safely. "
            "Reduce the resolution or crop the image before uploading.",
        ) from exc
    except Exception as exc:  # UnidentifiedImageError, SyntaxError, struct.error... on damaged headers
        raise truncated_image(subject) from exc
    check_size(image.width, image.height, limits, subject, _bytes_per_pixel(image.mode))
    if image.format == "TIFF" and pages > 1:
        raise ImagingError(
            "multi-frame",
            f"{subject} is a TIFF with {pages} pages; landmarks are placed on a single image. "
            "Save the one page you want as its own file.",
        )
    try:
        Image.open(io.BytesIO(data), formats=_PILLOW_OPENERS).verify()
    except Exception as exc:  # verify raises whatever the format's reader raises on a damaged file
        raise truncated_image(subject) from exc
    return image


def _bytes_per_pixel(mode: str) -> int:
    """Bytes Pillow holds per pixel of `mode`: one for bilevel, grey and palette images, two for 16-bit grey,
    four for every other mode (RGB is stored padded to four)."""
    if mode in ("1", "L", "P"):
        return 1
    return 2 if mode.startswith("I;16") else 4


def _draft(image: Image.Image, at_least: tuple[int, int]) -> int:
    """Ask Pillow for the largest JPEG reduction (1, 2, 4 or 8) that keeps both stored sides >= `at_least`
    (W, H); the reduction chosen."""
    w, h = at_least
    width = image.width
    drafted = image.draft(None, (max(1, w), max(1, h)))
    return 1 if drafted is None else round(width / drafted[1][2])  # Pillow's box: the size / the reduction


def _declared_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG or BMP header, read before Pillow (which refuses a 0 x 0 image as unidentified)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return width, height
    if data.startswith(b"BM") and len(data) >= 26 and int.from_bytes(data[14:18], "little") >= 40:
        width, height = struct.unpack("<ii", data[18:26])
        return abs(width), abs(height)  # a negative height means rows stored top-down
    return None


def _pillow_grey(image: Image.Image) -> np.ndarray:
    """Any Pillow mode -> (H, W) uint16: 8-bit grey x257, 16/32-bit and float grey stretched from their real
    range, colour and palette as BT.601 luminance (Pillow's "L") x257. Closes `image` (its buffer freed) once
    its values are copied out, so a decode never holds Pillow's copy and ours beside the result."""
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        values = np.asarray(image)
        image.close()
        return stretch(values, *value_range(values))
    grey = image if image.mode == "L" else image.convert("RGB").convert("L")
    pixels = np.asarray(grey, np.uint16)
    grey.close()
    image.close()
    pixels *= np.uint16(257)
    return pixels
