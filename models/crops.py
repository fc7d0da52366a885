"""Square crops around points at a fixed physical resolution: the geometry of the local stage (models.refine).

Frames (pixel-centre convention, models.geometry):
  image  - the original image, (W, H) pixels, spacing (sx, sy) mm per pixel where known;
  source - the image as the crops are sampled from it: the image itself, or, where the image is much finer
           than the crops, the image average-pooled by an integer factor (so sampling does not alias);
  crop   - (S, S) crop pixels at RefineConfig.mm_per_pixel (or image_pixels_per_pixel without a spacing),
           its centre pixel ((S - 1) / 2, (S - 1) / 2) on the crop's centre point.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .codec import image_to_unit_float
from .config import RefineConfig
from .geometry import Affine


def image_pixels_per_crop_pixel(config: RefineConfig, spacing_mm: np.ndarray | None) -> tuple[float, float]:
    """(kx, ky): image pixels per crop pixel along x and y, from the image's (sx, sy) mm/px where both are
    finite, else RefineConfig.image_pixels_per_pixel."""
    if spacing_mm is not None and np.isfinite(spacing_mm).all() and (np.asarray(spacing_mm) > 0).all():
        return config.mm_per_pixel / float(spacing_mm[0]), config.mm_per_pixel / float(spacing_mm[1])
    return config.image_pixels_per_pixel, config.image_pixels_per_pixel


def crop_affine(
    config: RefineConfig,
    center: np.ndarray,
    spacing_mm: np.ndarray | None,
    angle_rad: float = 0.0,
    scale: float = 1.0,
) -> Affine:
    """Image pixels -> crop pixels of the crop centred on `center` (x, y image pixels), rotated by `angle_rad`
    and zoomed by `scale` (> 1 shows less of the image) about that centre."""
    kx, ky = image_pixels_per_crop_pixel(config, spacing_mm)
    cx, cy = float(center[0]), float(center[1])
    half = (config.crop_size - 1) / 2
    to_crop_units = Affine.scale_translate(1 / kx, 1 / ky, -cx / kx, -cy / ky)
    return to_crop_units.then(Affine.rotation_about((0.0, 0.0), angle_rad, scale)).then(
        Affine.scale_translate(1.0, 1.0, half, half)
    )


@dataclass
class CropSource:
    """One image ready for cropping: `pixels` (1, 1, H', W') float32 in [0, 1] and `image_to_source`, the map
    from image pixels to its pixels (identity unless the image was average-pooled by `factor`)."""

    pixels: torch.Tensor
    image_to_source: Affine
    factor: int
    image_size: tuple[int, int]  # (W, H) of the original image, pixels

    @staticmethod
    def from_image(
        image: np.ndarray, config: RefineConfig, spacing_mm: np.ndarray | None, device: torch.device | str = "cpu"
    ) -> CropSource:
        """Pool the (H, W) image by the largest integer factor that keeps it at least as fine as the crops, and
        leaves it at least one pixel a side (a caller's absurd spacing must not ask for a pooling wider than the
        image)."""
        h, w = image.shape
        kx, ky = image_pixels_per_crop_pixel(config, spacing_mm)
        factor = max(1, min(math.floor(min(kx, ky) + 1e-6), h, w))
        x = torch.from_numpy(image_to_unit_float(image))[None, None].to(device)
        if factor > 1:
            x = F.avg_pool2d(x, factor, ceil_mode=True, count_include_pad=False)
        # Pooled pixel i covers image pixels factor*i .. factor*i + factor - 1: x_source = (x + 0.5) / f - 0.5.
        to_source = Affine.scale_translate(1 / factor, 1 / factor, 0.5 / factor - 0.5, 0.5 / factor - 0.5)
        return CropSource(x, to_source, factor, (w, h))

    def inside(self, points: np.ndarray) -> np.ndarray:
        """(..., 2) image pixels -> (...) bool: within the image (NaN is outside)."""
        w, h = self.image_size
        x, y = points[..., 0], points[..., 1]
        return (x >= -0.5) & (x <= w - 0.5) & (y >= -0.5) & (y <= h - 0.5)

    def crops(self, affines: Sequence[Affine], size: int) -> torch.Tensor:
        """(M, 1, S, S) float32 crops, one per image -> crop affine; bilinear, zeros outside the image."""
        if not affines:
            return self.pixels.new_zeros((0, 1, size, size))
        _, _, hs, ws = self.pixels.shape
        # crop pixel -> source pixel -> grid_sample's normalised coordinates, n = (2x + 1) / W - 1.
        to_norm = Affine.scale_translate(2 / ws, 2 / hs, 1 / ws - 1, 1 / hs - 1)
        mats = np.stack([a.inverse().then(self.image_to_source).then(to_norm).matrix for a in affines])
        m = torch.as_tensor(mats, dtype=torch.float32, device=self.pixels.device)  # (M, 2, 3)
        t = torch.arange(size, dtype=torch.float32, device=self.pixels.device)
        gy, gx = torch.meshgrid(t, t, indexing="ij")
        base = torch.stack([gx, gy, torch.ones_like(gx)], dim=-1).reshape(-1, 3)  # (S*S, 3) crop pixels
        grid = (base @ m.transpose(1, 2)).reshape(len(affines), size, size, 2)
        src = self.pixels.expand(len(affines), -1, -1, -1)
        return F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
