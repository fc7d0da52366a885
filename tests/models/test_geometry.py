"""models.geometry.Affine against answers worked out by hand (pixel-centre convention, y pointing down)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.geometry import Affine


def test_identity_and_scale_translate_apply() -> None:
    assert np.array_equal(Affine.identity().apply(np.array([3.0, -2.0])), [3.0, -2.0])
    # x' = 2 * 1 + 1 = 3, y' = 3 * 1 - 1 = 2
    a = Affine.scale_translate(2.0, 3.0, 1.0, -1.0)
    assert np.allclose(a.apply(np.array([1.0, 1.0])), [3.0, 2.0])


def test_apply_keeps_leading_shape_and_nan() -> None:
    a = Affine.scale_translate(2.0, 3.0, 1.0, -1.0)
    points = np.array([[[0.0, 0.0], [1.0, 2.0]], [[np.nan, np.nan], [-1.0, 0.5]]])  # (2, 2, 2)
    out = a.apply(points)
    assert out.shape == (2, 2, 2) and out.dtype == np.float64
    assert np.allclose(out[0], [[1.0, -1.0], [3.0, 5.0]])
    assert np.isnan(out[1, 0]).all()  # an unlabelled point stays unlabelled
    assert np.allclose(out[1, 1], [-1.0, 0.5])


def test_then_applies_self_first() -> None:
    shift = Affine.scale_translate(1.0, 1.0, 1.0, 0.0)  # x + 1
    double = Affine.scale_translate(2.0, 2.0)  # 2x
    origin = np.array([0.0, 0.0])
    assert np.allclose(shift.then(double).apply(origin), [2.0, 0.0])  # 2 * (0 + 1)
    assert np.allclose(double.then(shift).apply(origin), [1.0, 0.0])  # 2 * 0 + 1
    p = np.array([[3.0, -4.0], [0.25, 7.5]])
    assert np.allclose(shift.then(double).apply(p), double.apply(shift.apply(p)))


def test_inverse() -> None:
    a = Affine.rotation_about((3.0, -1.0), 0.7, 1.5).then(Affine.scale_translate(2.0, 0.5, 4.0, 1.0))
    assert np.allclose(a.then(a.inverse()).matrix, np.eye(2, 3))
    assert np.allclose(a.inverse().then(a).matrix, np.eye(2, 3))
    # scale 2, shift 3: the inverse of x' = 2x + 3 is x = (x' - 3) / 2
    inv = Affine.scale_translate(2.0, 2.0, 3.0, 3.0).inverse()
    assert np.allclose(inv.apply(np.array([5.0, 1.0])), [1.0, -1.0])


def test_resize_maps_edges_and_centres() -> None:
    # A 4x2 frame onto 8x4: scale 2; the frame edges -0.5 and W - 0.5 map onto the new edges and the
    # centre of pixel 0 (covering [-0.5, 0.5]) onto the centre of the covering span [-0.5, 1.5], i.e. 0.5.
    r = Affine.resize((4, 2), (8, 4))
    assert np.allclose(r.matrix, [[2.0, 0.0, 0.5], [0.0, 2.0, 0.5]])
    assert np.allclose(r.apply(np.array([-0.5, -0.5])), [-0.5, -0.5])
    assert np.allclose(r.apply(np.array([3.5, 1.5])), [7.5, 3.5])
    assert np.allclose(r.apply(np.array([0.0, 0.0])), [0.5, 0.5])
    # Downsizing by 4 along x only: pixel centres 1.5 of the source span [-0.5, 3.5] -> pixel 0 of the target.
    d = Affine.resize((8, 4), (2, 4))
    assert np.allclose(d.apply(np.array([1.5, 2.0])), [0.0, 2.0])


def test_rotation_about() -> None:
    # A quarter turn about (1, 1): with y down, +90 degrees takes the +x direction to +y.
    rot = Affine.rotation_about((1.0, 1.0), math.pi / 2)
    assert np.allclose(rot.apply(np.array([1.0, 1.0])), [1.0, 1.0])  # the centre is fixed
    assert np.allclose(rot.apply(np.array([2.0, 1.0])), [1.0, 2.0])
    assert np.allclose(rot.apply(np.array([1.0, 2.0])), [0.0, 1.0])
    # With scale 2 the offset from the centre doubles.
    rot2 = Affine.rotation_about((1.0, 1.0), math.pi / 2, scale=2.0)
    assert np.allclose(rot2.apply(np.array([2.0, 1.0])), [1.0, 3.0])
    assert rot2.mean_scale == pytest.approx(2.0)
    # Angle 0, scale 1 is the identity whatever the centre.
    assert np.allclose(Affine.rotation_about((5.0, -7.0), 0.0).matrix, np.eye(2, 3))


def test_mean_scale() -> None:
    assert Affine.scale_translate(2.0, 8.0, 5.0, 5.0).mean_scale == pytest.approx(4.0)
    assert Affine.scale_translate(-3.0, 3.0).mean_scale == pytest.approx(3.0)  # a flip keeps the scale
