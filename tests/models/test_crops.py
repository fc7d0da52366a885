"""models.crops: crop geometry round trips (near borders too), sampling, pooling and physical resolution."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.config import RefineConfig
from models.crops import CropSource, crop_affine, image_pixels_per_crop_pixel

CONFIG = RefineConfig(crop_size=32, mm_per_pixel=0.2, image_pixels_per_pixel=1.5)


@pytest.mark.parametrize("spacing", [None, np.array([0.1, 0.1]), np.array([0.2, 0.25]), np.array([np.nan, 0.1])])
@pytest.mark.parametrize("center", [(50.3, 40.7), (0.0, 0.0), (-0.5, 79.5), (99.4, -0.2)])
def test_image_crop_image_round_trip(center: tuple[float, float], spacing: np.ndarray | None) -> None:
    """Points of the crop's whole area, its centre at the image's corners and edges, map back within 0.01 px."""
    affine = crop_affine(CONFIG, np.array(center), spacing, angle_rad=0.3, scale=1.1)
    crop_points = np.stack(np.meshgrid(np.linspace(-0.5, 31.5, 7), np.linspace(-0.5, 31.5, 7)), -1).reshape(-1, 2)
    back = affine.apply(affine.inverse().apply(crop_points))
    assert np.abs(back - crop_points).max() < 0.01
    image_points = np.array([center, (center[0] + 3.2, center[1] - 1.1)])
    again = affine.inverse().apply(affine.apply(image_points))
    assert np.abs(again - image_points).max() < 0.01
    # The centre lands on the crop's centre pixel.
    assert np.allclose(affine.apply(np.array(center)), [15.5, 15.5])


def test_physical_resolution() -> None:
    """0.2 mm crop pixels over a 0.1 mm/px image: 2 image pixels per crop pixel; without spacing: the fallback."""
    assert image_pixels_per_crop_pixel(CONFIG, np.array([0.1, 0.1])) == pytest.approx((2.0, 2.0))
    assert image_pixels_per_crop_pixel(CONFIG, np.array([0.2, 0.4])) == pytest.approx((1.0, 0.5))
    assert image_pixels_per_crop_pixel(CONFIG, None) == (1.5, 1.5)
    assert image_pixels_per_crop_pixel(CONFIG, np.array([np.nan, np.nan])) == (1.5, 1.5)
    a = crop_affine(CONFIG, np.array([10.0, 10.0]), np.array([0.1, 0.1]))
    # 10 image pixels = 1 mm = 5 crop pixels.
    assert np.allclose(a.apply(np.array([20.0, 10.0])) - a.apply(np.array([10.0, 10.0])), [5.0, 0.0])


def _ramp(h: int, w: int) -> np.ndarray:
    """Float image whose value is a linear function of (x, y), so bilinear sampling is exact inside it."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    return ((x * 3 + y * 5) / (3 * w + 5 * h)).astype(np.float32)


@pytest.mark.parametrize("spacing", [np.array([0.2, 0.2]), np.array([0.05, 0.05])])
def test_crops_sample_the_image_at_the_mapped_points(spacing: np.ndarray) -> None:
    """Each crop pixel holds the image's value at the image point it maps to (linear image: exact up to
    rounding; the 0.05 mm image is average-pooled by 4 first, which keeps a linear image linear)."""
    h, w = 200, 160
    image = _ramp(h, w)
    source = CropSource.from_image(image, CONFIG, spacing)
    assert source.factor == (1 if spacing[0] == 0.2 else 4)
    affine = crop_affine(CONFIG, np.array([80.0, 100.0]), spacing, angle_rad=0.2)
    crop = source.crops([affine], CONFIG.crop_size)[0, 0].numpy()
    grid = np.stack(np.meshgrid(np.arange(32.0), np.arange(32.0)), -1)
    pts = affine.inverse().apply(grid)
    expected = (pts[..., 0] * 3 + pts[..., 1] * 5) / (3 * w + 5 * h)
    assert np.abs(crop - expected).max() < 1e-4


def test_outside_the_image_is_zero_and_inside_says_so() -> None:
    image = np.full((40, 30), 200, dtype=np.uint8)
    source = CropSource.from_image(image, CONFIG, None)
    affine = crop_affine(CONFIG, np.array([0.0, 0.0]), None)
    crop = source.crops([affine], CONFIG.crop_size)[0, 0]
    assert torch.all(crop[:8, :8] == 0) and crop[-1, -1] == pytest.approx(200 / 255)
    points = np.array([[0.0, 0.0], [-0.6, 3.0], [29.5, 39.5], [np.nan, 1.0], [30.0, 1.0]])
    assert source.inside(points).tolist() == [True, False, True, False, False]


def test_no_affines_give_an_empty_batch() -> None:
    source = CropSource.from_image(np.zeros((10, 10), dtype=np.uint8), CONFIG, None)
    assert source.crops([], 32).shape == (0, 1, 32, 32)


def test_an_absurd_spacing_pools_no_wider_than_the_image() -> None:
    """A spacing of 1e-300 mm would ask for a pooling factor past any integer (avg_pool2d overflowed)."""
    source = CropSource.from_image(np.full((40, 30), 7, dtype=np.uint8), CONFIG, np.array([1e-300, 1e-300]))
    assert source.factor == 30 and source.pixels.shape[-2:] == (2, 1)
