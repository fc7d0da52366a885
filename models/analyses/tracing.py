"""What to draw of an analysis on the image: the lines its measurements are built from and the arcs of its
angles, in image pixels (x right, y down), for a human to check a tracing. Drawing assumes square pixels (a
perpendicular is drawn perpendicular on the image)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .catalogue import Analysis, Catalogue, load_catalogue
from .constructions import resolve_point

Point = tuple[float, float]
#: A drawn line runs this share of its length beyond each of its two points.
EXTEND = 0.15


@dataclass(frozen=True)
class Segment:
    start: Point
    end: Point
    measurement: str
    #: A construction line (a perpendicular to its foot), drawn thinner than the lines it measures.
    helper: bool = False


@dataclass(frozen=True)
class Arc:
    """An angle's arc: from `start_deg` to `end_deg` (degrees clockwise from +x on the image, the short way)."""

    centre: Point
    radius: float
    start_deg: float
    end_deg: float
    measurement: str


def trace(
    analysis: str, points: Mapping[str, Sequence[float]], catalogue: Catalogue | None = None
) -> list[Segment | Arc]:
    """The lines and arcs of every answered measurement of `analysis` that `points` (catalogue code -> image
    pixels) allow."""
    catalogue = catalogue or load_catalogue()
    chosen = catalogue.analysis(analysis)
    have = {c: np.asarray(p, dtype=np.float64)[:2] for c, p in points.items()}
    out: list[Segment | Arc] = []
    for m in chosen.answered:
        if all(c in have for c in catalogue.landmarks_of(chosen, m)):
            out.extend(_shapes(chosen, m.construction, have, m.code))
    return out


def _shapes(a: Analysis, c: Mapping[str, Any], pts: Mapping[str, np.ndarray], code: str) -> list[Segment | Arc]:
    kind = c["kind"]
    if kind == "sum":
        return [s for term, _ in c["terms"] for s in _shapes(a, a.measurement(term).construction, pts, code)]
    if kind == "angle_at":
        p, v, q = (_point(x, pts) for x in c["points"])
        return [_segment(v, p, code), _segment(v, q, code), *_arc(v, p, q, code)]
    if kind in ("angle_between", "signed_angle"):
        (a1, b1), (a2, b2) = ([_point(x, pts) for x in vec] for vec in c["vectors"])
        return [_line(a1, b1, code), _line(a2, b2, code), *_crossing_arc(a1, b1, a2, b2, code)]
    if kind in ("distance", "signed_distance"):
        p, q = (_point(x, pts) for x in c["points"])
        return [_segment(p, q, code)]
    if kind == "ratio":
        return [_segment(_point(p, pts), _point(q, pts), code) for p, q in c["of"]]
    if kind in ("point_to_line", "projected_distance"):
        a1, b1 = _line_points(c["line"], pts)
        feet = [c["point"]] if kind == "point_to_line" else c["points"]
        return [_line(a1, b1, code), *(_perpendicular(_point(f, pts), a1, b1, code) for f in feet)]
    raise ValueError(f"unknown construction kind {kind!r}")


def _point(item: Any, pts: Mapping[str, np.ndarray]) -> np.ndarray:
    return resolve_point(item, pts)


def _line_points(item: Any, pts: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(item, Mapping):
        through = _point(item["through"], pts)
        a, b = (_point(x, pts) for x in item["perpendicular_to"])
        d = b - a
        return through, through + np.array([-d[1], d[0]])
    a, b = (_point(x, pts) for x in item)
    return a, b


def _xy(p: np.ndarray) -> Point:
    return float(p[0]), float(p[1])


def _segment(p: np.ndarray, q: np.ndarray, code: str, helper: bool = False) -> Segment:
    return Segment(_xy(p), _xy(q), code, helper)


def _line(p: np.ndarray, q: np.ndarray, code: str) -> Segment:
    """The line through p and q, drawn a little beyond both."""
    d = q - p
    return Segment(_xy(p - EXTEND * d), _xy(q + EXTEND * d), code)


def _perpendicular(p: np.ndarray, a: np.ndarray, b: np.ndarray, code: str) -> Segment:
    d = b - a
    foot = a + d * float(np.dot(p - a, d) / max(float(np.dot(d, d)), 1e-12))
    return _segment(p, foot, code, helper=True)


def _direction(v: np.ndarray) -> float:
    return math.degrees(math.atan2(float(v[1]), float(v[0])))


def _arc(vertex: np.ndarray, p: np.ndarray, q: np.ndarray, code: str) -> list[Arc]:
    """The arc of the angle p-vertex-q, at a fifth of its shorter arm."""
    radius = 0.2 * min(float(np.linalg.norm(p - vertex)), float(np.linalg.norm(q - vertex)))
    if radius <= 0:
        return []
    start, end = _direction(p - vertex), _direction(q - vertex)
    if (end - start) % 360 > 180:
        start, end = end, start
    return [Arc(_xy(vertex), radius, start, end, code)]


def _crossing_arc(a1: np.ndarray, b1: np.ndarray, a2: np.ndarray, b2: np.ndarray, code: str) -> list[Arc]:
    """The arc between two directed lines at their crossing, if they cross within a few lengths of them."""
    d1, d2 = b1 - a1, b2 - a2
    det = d1[0] * d2[1] - d1[1] * d2[0]
    if abs(det) < 1e-9:
        return []
    t = ((a2[0] - a1[0]) * d2[1] - (a2[1] - a1[1]) * d2[0]) / det
    x = a1 + t * d1
    reach = 3 * max(float(np.linalg.norm(d1)), float(np.linalg.norm(d2)))
    if float(np.linalg.norm(x - a1)) > reach:
        return []
    return _arc(x, x + d1, x + d2, code)
