"""Refusals every decoder shares: an image size outside the limits, and a file that cannot be read to the end."""

from __future__ import annotations

from server.imaging.errors import ImagingError
from server.imaging.types import MIN_IMAGE_SIDE, ImageLimits


def check_size(width: int, height: int, limits: ImageLimits, subject: str, bytes_per_pixel: int | None = None) -> None:
    """Refuse an empty image, one under MIN_IMAGE_SIDE pixels a side, one of more than ``limits.pixels`` pixels
    and, where the decoder's bytes per pixel are known from the header, one whose decoded array would exceed
    ``limits.decoded_bytes``."""
    max_pixels = limits.pixels
    if width <= 0 or height <= 0:
        raise ImagingError(
            "empty-image", f"{subject} declares an empty image ({width} x {height} pixels). Upload a real image."
        )
    if min(width, height) < MIN_IMAGE_SIDE:
        raise ImagingError(
            "image-too-small",
            f"{subject} is {width} x {height} pixels; an image needs at least {MIN_IMAGE_SIDE} pixels a side. "
            "Upload the radiograph itself, not a thumbnail or a strip of it.",
        )
    if width * height > max_pixels:
        raise ImagingError(
            "image-too-large",
            f"{subject} declares a {width} x {height} image ({width * height:,} pixels); the limit is "
            f"{max_pixels:,} pixels. Reduce the resolution or crop the image before uploading.",
        )
    decoded = width * height * (bytes_per_pixel or 0)
    if decoded > limits.decoded_bytes:
        raise ImagingError(
            "image-too-large",
            f"{subject} decodes to {decoded / 2**20:,.0f} MiB ({width} x {height} pixels of {bytes_per_pixel} "
            f"bytes); the limit is {limits.decoded_bytes / 2**20:,.0f} MiB. Save it as 8- or 16-bit grey, or "
            "reduce the resolution, before uploading.",
        )


def truncated_image(subject: str) -> ImagingError:
    return ImagingError(
        "truncated-image",
        f"{subject} is damaged or incomplete: its image data cannot be read to the end. Upload the complete "
        "file again.",
    )
