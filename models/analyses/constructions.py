"""The geometry of cephalometric constructions, on points of an analysis frame.

Points are (S, 2) float64 arrays: S samples of one point (S = 1 for a plain measurement; more to propagate the
landmarks' uncertainty), (x, y) with the face looking towards +x and y pointing down, as on an image, in mm
(pixels where the spacing is unknown). "Anterior" is +x, "superior" is -y; "clockwise" is as seen on that image.
Every function returns (S,) values: degrees for angles, the points' unit for lengths.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

#: Unit vectors of the anatomical directions in the analysis frame.
DIRECTIONS = {
    "anterior": np.array([1.0, 0.0]),
    "posterior": np.array([-1.0, 0.0]),
    "superior": np.array([0.0, -1.0]),
    "inferior": np.array([0.0, 1.0]),
}


def _cross(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """z of u x v for (S, 2) vectors; positive where v is clockwise from u on an image (y down)."""
    return u[:, 0] * v[:, 1] - u[:, 1] * v[:, 0]


def _dot(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.einsum("sd,sd->s", u, v)


def vector_angle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Unsigned angle between (S, 2) vectors, degrees in [0, 180] (atan2: exact near 0 and 180 as well)."""
    return np.degrees(np.abs(np.arctan2(_cross(u, v), _dot(u, v))))


def signed_vector_angle(u: np.ndarray, v: np.ndarray, positive: str) -> np.ndarray:
    """The rotation from u to v, degrees in (-180, 180], positive "clockwise" or "counterclockwise"."""
    angle = np.degrees(np.arctan2(_cross(u, v), _dot(u, v)))
    if positive == "clockwise":
        return angle
    if positive == "counterclockwise":
        return -angle
    raise ValueError(f"positive must be clockwise or counterclockwise, not {positive!r}")


def angle_at(a: np.ndarray, vertex: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The angle a-vertex-b at the vertex, degrees in [0, 180]."""
    return vector_angle(a - vertex, b - vertex)


def distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|b - a|, in the points' unit."""
    return np.linalg.norm(b - a, axis=-1)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _side(direction: np.ndarray, positive: str) -> np.ndarray:
    """(S, 2) unit vectors along or against `direction`, whichever points more towards `positive`."""
    towards = DIRECTIONS[positive]
    sign = np.where(direction @ towards >= 0, 1.0, -1.0)
    return direction * sign[:, None]


def point_to_line(p: np.ndarray, a: np.ndarray, b: np.ndarray, positive: str) -> np.ndarray:
    """Signed perpendicular distance of p from the line through a and b, positive on the side of `positive`."""
    d = _unit(b - a)
    normal = _side(np.stack([-d[:, 1], d[:, 0]], axis=-1), positive)
    return _dot(p - a, normal)


def projected_distance(p: np.ndarray, q: np.ndarray, a: np.ndarray, b: np.ndarray, positive: str) -> np.ndarray:
    """p's foot on the line through a and b minus q's, along the line oriented towards `positive`."""
    d = _side(_unit(b - a), positive)
    return _dot(p - q, d)


def signed_distance(p: np.ndarray, q: np.ndarray, positive: str) -> np.ndarray:
    """|p - q|, negative where p lies behind q with respect to `positive` (its offset's component)."""
    offset = p - q
    sign = np.where(offset @ DIRECTIONS[positive] >= 0, 1.0, -1.0)
    return sign * np.linalg.norm(offset, axis=-1)


def resolve_point(item: Any, points: Mapping[str, np.ndarray]) -> np.ndarray:
    """A catalogue point: a landmark code's array in `points`, or {"mid": [p, q]} the mean of two points (any
    array shape: (S, 2) draws or one (2,) point)."""
    if isinstance(item, str):
        return points[item]
    a, b = (resolve_point(x, points) for x in item["mid"])
    return (a + b) / 2


def perpendicular_through(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two points of the line through p perpendicular to the line a-b: (p, p + the normal of a-b)."""
    d = _unit(b - a)
    return p, p + np.stack([-d[:, 1], d[:, 0]], axis=-1)
