"""Batched augmentation on letterboxed network inputs: the landmarks move with the image."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .config import AugmentConfig
from .geometry import Affine


def random_affines(
    config: AugmentConfig, batch: int, input_wh: tuple[int, int], rng: np.random.Generator
) -> list[Affine]:
    """`batch` random input -> input maps: scale and rotation about the centre, then a translation."""
    w, h = input_wh
    center = ((w - 1) / 2, (h - 1) / 2)
    out = []
    for _ in range(batch):
        scale = rng.uniform(1 - config.scale, 1 + config.scale)
        angle = np.deg2rad(rng.uniform(-config.rotation_deg, config.rotation_deg))
        tx, ty = rng.uniform(-config.translate, config.translate, size=2) * (w, h)
        out.append(Affine.rotation_about(center, angle, scale).then(Affine.scale_translate(1, 1, tx, ty)))
    return out


def warp(images: torch.Tensor, affines: list[Affine]) -> torch.Tensor:
    """Resample (B, C, H, W) images so that the content at p moves to affines[b](p); zeros outside.

    grid_sample's normalised coordinates (align_corners=False) are n = (2x + 1) / W - 1 in the pixel-centre
    convention, so theta = N o A^-1 o N^-1.
    """
    b, _, h, w = images.shape
    to_norm = Affine.scale_translate(2 / w, 2 / h, 1 / w - 1, 1 / h - 1)
    thetas = [to_norm.inverse().then(a.inverse()).then(to_norm).matrix for a in affines]
    theta = torch.as_tensor(np.stack(thetas), dtype=images.dtype, device=images.device)
    grid = F.affine_grid(theta, [b, 1, h, w], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def jitter_intensity(images: torch.Tensor, config: AugmentConfig, rng: np.random.Generator) -> torch.Tensor:
    """Random gamma, contrast and brightness per sample on (B, C, H, W) images in [0, 1]."""
    b = images.shape[0]
    gamma = np.exp(rng.uniform(-config.gamma, config.gamma, size=b))
    contrast = rng.uniform(1 - config.contrast, 1 + config.contrast, size=b)
    brightness = rng.uniform(-config.brightness, config.brightness, size=b)

    def col(v: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(v, dtype=images.dtype, device=images.device).view(b, 1, 1, 1)

    x = images.clamp(0, 1) ** col(gamma)
    x = (x - 0.5) * col(contrast) + 0.5 + col(brightness)
    return x.clamp(0, 1)
