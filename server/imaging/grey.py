"""Grey scales: any image's values onto the uint16 display range 0..65535, and the digest of the result."""

from __future__ import annotations

import hashlib

import numpy as np

_FULL_SCALE = 65535
_LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601, as Pillow's convert("L")


def pixel_digest(pixels: np.ndarray) -> str:
    """Hex sha256 of an (H, W) uint16 image: its shape, then its pixels as little-endian uint16, row-major."""
    height, width = pixels.shape
    digest = hashlib.sha256(f"{height}x{width}:uint16le:".encode())
    digest.update(np.ascontiguousarray(pixels, dtype="<u2").data)
    return digest.hexdigest()


def value_range(values: np.ndarray) -> tuple[float, float]:
    """Smallest and largest finite value of an array, or (0, 0) when it has none."""
    if np.issubdtype(values.dtype, np.floating):
        finite = values[np.isfinite(values)]
        if finite.size == 0:
            return 0.0, 0.0
        return float(finite.min()), float(finite.max())
    return float(values.min()), float(values.max())


def stretch(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """(H, W) real values -> (H, W) uint16: lo..hi mapped linearly onto 0..65535, clipped; NaN and a flat image -> 0."""
    if not hi > lo:
        return np.zeros(values.shape, np.uint16)
    scaled = (np.asarray(values, np.float64) - lo) * (_FULL_SCALE / (hi - lo))
    np.nan_to_num(scaled, copy=False, nan=0.0)
    np.clip(scaled, 0, _FULL_SCALE, out=scaled)
    return np.rint(scaled).astype(np.uint16)


def luminance(rgb: np.ndarray, full_scale: float) -> np.ndarray:
    """(H, W, >=3) colour with channels 0..full_scale -> (H, W) uint16 BT.601 luminance on 0..65535."""
    luma = rgb[..., :3].astype(np.float64) @ _LUMA_WEIGHTS
    return stretch(luma, 0.0, float(full_scale))


def luminance_stretched(rgb: np.ndarray) -> np.ndarray:
    """(H, W, >=3) colour of any range -> (H, W) uint16 luminance stretched from its real range."""
    luma = rgb[..., :3].astype(np.float64) @ _LUMA_WEIGHTS
    return stretch(luma, *value_range(luma))
