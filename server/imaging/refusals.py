"""Refusals every decoder shares: an image size outside the limits, and a file that cannot be read to the end."""

from __future__ import annotations

from server.imaging.errors import ImagingError


def check_size(width: int, height: int, max_pixels: int, subject: str) -> None:
    if width <= 0 or height <= 0:
        raise ImagingError(
            "empty-image", f"{subject} declares an empty image ({width} x {height} pixels). Upload a real image."
        )
    if width * height > max_pixels:
        raise ImagingError(
            "image-too-large",
            f"{subject} declares a {width} x {height} image ({width * height:,} pixels); the limit is "
            f"{max_pixels:,} pixels. Reduce the resolution or crop the image before uploading.",
        )


def truncated_image(subject: str) -> ImagingError:
    return ImagingError(
        "truncated-image",
        f"{subject} is damaged or incomplete: its image data cannot be read to the end. Upload the complete "
        "file again.",
    )
