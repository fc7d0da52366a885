"""Grey scales: any image's values onto the uint16 display range 0..65535, and the digest of the result."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable

import numpy as np

_FULL_SCALE = 65535
_LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601, as Pillow's convert("L")
#: Values converted to float64 at a time by the grey conversions: 8 MiB of working memory per block.
_BLOCK_VALUES = 1 << 20

#: A block of rows of an image -> its (rows, W) real values.
Transform = Callable[[np.ndarray], np.ndarray]


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


def stretch(
    values: np.ndarray, lo: float, hi: float, *, mirror: bool = False, transform: Transform | None = None
) -> np.ndarray:
    """(H, W, ...) values -> (H, W) uint16: lo..hi mapped linearly onto 0..65535, clipped; NaN and a flat image
    -> 0.

    `transform`: applied to each block of rows first, returning its (rows, W) real values (a LUT, a window, a
    colour's luminance); without one, `values` must be (H, W) real values. `mirror`: each value mirrored inside
    the range (lo + hi - v), as MONOCHROME1 is shown. The float64 arithmetic runs on blocks of rows (see
    ``row_blocks``), so it costs a few MiB on any image where a whole copy would cost 8 bytes per pixel or more.
    """
    out = np.zeros(values.shape[:2], np.uint16)
    if not hi > lo:
        return out
    for rows in row_blocks(values.shape):
        block = np.asarray(transform(values[rows]) if transform else values[rows], np.float64)
        out[rows] = _scaled((lo + hi) - block if mirror else block, lo, _FULL_SCALE / (hi - lo))
    return out


def block_range(values: np.ndarray, transform: Transform) -> tuple[float, float]:
    """``value_range`` of `transform` applied to `values` block by block (as ``stretch`` applies it)."""
    lo, hi = math.inf, -math.inf
    for rows in row_blocks(values.shape):
        block = transform(values[rows])
        if np.issubdtype(block.dtype, np.floating):
            block = block[np.isfinite(block)]
        if block.size:
            lo, hi = min(lo, float(block.min())), max(hi, float(block.max()))
    return (lo, hi) if lo <= hi else (0.0, 0.0)


def luminance(rgb: np.ndarray, full_scale: float) -> np.ndarray:
    """(H, W, >=3) colour with channels 0..full_scale -> (H, W) uint16 BT.601 luminance on 0..65535."""
    return stretch(rgb, 0.0, float(full_scale), transform=_luma)


def luminance_stretched(rgb: np.ndarray) -> np.ndarray:
    """(H, W, >=3) colour of any range -> (H, W) uint16 luminance stretched from its real range (two passes over
    blocks of rows: the range, then the values)."""
    return stretch(rgb, *block_range(rgb, _luma), transform=_luma)


def row_blocks(shape: tuple[int, ...]) -> list[slice]:
    """Slices of rows (axis 0) that cover `shape`, each of about ``_BLOCK_VALUES`` values (at least one row)."""
    per_row = max(1, math.prod(shape[1:]))
    step = max(1, _BLOCK_VALUES // per_row)
    return [slice(start, start + step) for start in range(0, shape[0], step)] or [slice(0, 0)]


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., :3].astype(np.float64) @ _LUMA_WEIGHTS


def _scaled(values: np.ndarray, lo: float, scale: float) -> np.ndarray:
    """float64 (values - lo) * scale, NaN -> 0, clipped to 0..65535 and rounded (a new array: `values` is kept)."""
    scaled = (values - lo) * scale
    np.nan_to_num(scaled, copy=False, nan=0.0)
    np.clip(scaled, 0, _FULL_SCALE, out=scaled)
    return np.rint(scaled, out=scaled)
