"""Measurements of the catalogue's analyses from landmark coordinates, with a plausible range from the landmarks'
uncertainty.

Landmarks come in image pixels (x right, y down, keyed by catalogue code) and are put in an analysis frame: times
the pixel spacing (mm), and mirrored where the face looks left (nasion left of sella, or another pair of
FACING_PAIRS), so every construction reads the face looking right. Without a spacing, lengths are omitted (the
reason is answered) and angles and ratios are taken on the pixels, which assumes square pixels; where no pair
tells the face's direction, signed measurements (anterior, clockwise) are omitted too.

Uncertainty: each landmark is drawn `samples` times from an isotropic Gaussian whose radial error has the mean
given for it (`landmark_error`, e.g. the model's validation MRE of that landmark: a per-axis SD of
MRE / sqrt(pi / 2)); a measurement's range is the 5th to 95th percentile of its value over the draws.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import constructions as geo
from .catalogue import LENGTHS, Analysis, Catalogue, Measurement, load_catalogue

#: The range answered with a value: this central share of the values over the draws.
RANGE_PERCENTILES = (5.0, 95.0)


@dataclass(frozen=True, kw_only=True)
class MeasuredValue:
    """One measurement of one analysis on one image."""

    analysis: str
    code: str
    name: str
    unit: str
    value: float
    #: The 5th and 95th percentile of the value when the landmarks move by their errors; None without errors.
    low: float | None
    high: float | None
    norm_mean: float | None
    norm_sd: float | None
    #: (value - norm mean) / norm SD; None without a norm.
    deviation_sd: float | None
    class_code: str | None
    class_name: str | None
    landmarks: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class Unmeasured:
    """A measurement that could not be taken, and why (the landmarks it misses, catalogue codes)."""

    analysis: str
    code: str
    name: str
    reason: str
    missing: tuple[str, ...] = ()


@dataclass(frozen=True)
class Measurements:
    values: list[MeasuredValue]
    omitted: list[Unmeasured]


def measure(
    points: Mapping[str, Sequence[float]],
    spacing_mm: tuple[float, float] | None,
    *,
    catalogue: Catalogue | None = None,
    analyses: Iterable[str] | None = None,
    landmark_error: Mapping[str, float] | None = None,
    samples: int = 256,
    seed: int = 0,
) -> Measurements:
    """Every answered measurement of the chosen analyses (default: all) that `points` allow.

    Args:
        points: catalogue code -> (x, y) image pixels.
        spacing_mm: (x, y) mm per pixel, or None (then lengths are omitted).
        landmark_error: catalogue code -> the landmark's mean radial error, in mm (pixels without a spacing);
            the range of a measurement is given only where every landmark it reads has one.
    """
    catalogue = catalogue or load_catalogue()
    chosen = [catalogue.analysis(code) for code in analyses] if analyses is not None else list(catalogue.analyses)
    frame = _Frame(points, spacing_mm, landmark_error, samples, seed)
    values: list[MeasuredValue] = []
    omitted: list[Unmeasured] = []
    for analysis in chosen:
        for m in analysis.answered:
            outcome = _one(catalogue, analysis, m, frame)
            if isinstance(outcome, MeasuredValue):
                values.append(outcome)
            else:
                omitted.append(outcome)
    return Measurements(values, omitted)


def _one(catalogue: Catalogue, analysis: Analysis, m: Measurement, frame: _Frame) -> MeasuredValue | Unmeasured:
    codes = catalogue.landmarks_of(analysis, m)
    missing = tuple(c for c in codes if c not in frame.points)
    if missing:
        reason = f"needs the landmarks {', '.join(missing)}"
        return Unmeasured(analysis=analysis.code, code=m.code, name=m.name, reason=reason, missing=missing)
    if frame.spacing is None and _reads_kinds(analysis, m.construction, LENGTHS):
        reason = "a length: needs the image's pixel spacing"
        return Unmeasured(analysis=analysis.code, code=m.code, name=m.name, reason=reason)
    if not frame.facing_known and _reads_kinds(analysis, m.construction, SIGNED):
        pairs = ", ".join(f"{a} and {b}" for a, b in FACING_PAIRS[:4])
        reason = f"signed (anterior or a turn): needs the face's direction, from a pair such as {pairs}"
        return Unmeasured(analysis=analysis.code, code=m.code, name=m.name, reason=reason)
    draws = _evaluate(analysis, m.construction, frame)
    value = float(draws[0])
    if not math.isfinite(value):
        reason = "undefined for these points (coincident landmarks)"
        return Unmeasured(analysis=analysis.code, code=m.code, name=m.name, reason=reason)
    low, high = frame.range(draws, codes)
    chosen = m.classify(value)
    return MeasuredValue(
        analysis=analysis.code,
        code=m.code,
        name=m.name,
        unit=m.unit,
        value=value,
        low=low,
        high=high,
        norm_mean=m.norm.mean if m.norm else None,
        norm_sd=m.norm.sd if m.norm else None,
        deviation_sd=(value - m.norm.mean) / m.norm.sd if m.norm else None,
        class_code=chosen.code if chosen else None,
        class_name=chosen.name if chosen else None,
        landmarks=tuple(codes),
    )


def _reads_kinds(analysis: Analysis, construction: Mapping[str, Any], kinds: Sequence[str]) -> bool:
    """Whether the construction, or a measurement it sums, is of one of `kinds`."""
    if construction["kind"] == "sum":
        terms = construction["terms"]
        return any(_reads_kinds(analysis, analysis.measurement(c).construction, kinds) for c, _ in terms)
    return construction["kind"] in kinds


class _Frame:
    """The landmarks in the analysis frame, each as (1 + samples, 2): the point itself, then its draws."""

    def __init__(
        self,
        points: Mapping[str, Sequence[float]],
        spacing: tuple[float, float] | None,
        errors: Mapping[str, float] | None,
        samples: int,
        seed: int,
    ) -> None:
        self.spacing = spacing
        scale = np.asarray(spacing if spacing is not None else (1.0, 1.0), dtype=np.float64)
        placed = {c: np.asarray(p, dtype=np.float64)[:2] * scale for c, p in points.items()}
        faces_left = _faces_left(placed)
        #: Whether the face's direction is known (else signed measurements are not taken: their sign would guess).
        self.facing_known = faces_left is not None
        if faces_left:
            placed = {c: p * np.array([-1.0, 1.0]) for c, p in placed.items()}
        self.points = {c: p for c, p in placed.items() if np.all(np.isfinite(p))}
        self.errors = {c: float(e) for c, e in (errors or {}).items() if e is not None and math.isfinite(e)}
        codes = sorted(self.points)
        noise = np.random.default_rng(seed).normal(0.0, 1.0, size=(len(codes), samples, 2))
        self.draws: dict[str, np.ndarray] = {}
        for code, n in zip(codes, noise, strict=True):
            sd = self.errors.get(code, 0.0) / math.sqrt(math.pi / 2)
            self.draws[code] = np.concatenate([self.points[code][None], self.points[code] + n * sd])

    def range(self, draws: np.ndarray, codes: Sequence[str]) -> tuple[float | None, float | None]:
        """The 5th and 95th percentile of a measurement's draws (draws[0] is its value), or (None, None) where a
        landmark it reads has no error."""
        if len(draws) < 2 or any(c not in self.errors for c in codes):
            return None, None
        ordered = np.sort(draws[1:])  # NaN last: a draw with coincident points counts as out of range
        lo, hi = (np.interp(q / 100 * (len(ordered) - 1), np.arange(len(ordered)), ordered) for q in RANGE_PERCENTILES)
        return float(lo), float(hi)


#: Pairs of landmarks (posterior, anterior) far apart along the face, most reliable first: the first pair placed
#: tells which way the face looks.
FACING_PAIRS = (
    ("S", "N"),
    ("Po", "Or"),
    ("PNS", "ANS"),
    ("Ba", "N"),
    ("Ar", "Pog"),
    ("Go", "Pog"),
    ("Go", "Me"),
    ("U6", "UIT"),
    ("L6", "LIT"),
)
#: Constructions whose sign reads "anterior" or a turn as seen with the face looking right.
SIGNED = ("signed_angle", "point_to_line", "projected_distance", "signed_distance")


def _faces_left(points: Mapping[str, np.ndarray]) -> bool | None:
    """Whether the face looks towards -x, by the first of FACING_PAIRS placed (its anterior landmark left of its
    posterior one); None where no pair is placed."""
    for back, front in FACING_PAIRS:
        if back in points and front in points and np.all(np.isfinite([points[back], points[front]])):
            return bool(points[front][0] < points[back][0])
    return None


def _evaluate(analysis: Analysis, c: Mapping[str, Any], frame: _Frame) -> np.ndarray:
    """(1 + samples,) values of a construction (catalogue.py lists the kinds)."""
    kind = c["kind"]
    if kind == "sum":
        total = np.full(len(next(iter(frame.draws.values()))), float(c.get("constant", 0.0)))
        for code, weight in c["terms"]:
            total = total + weight * _evaluate(analysis, analysis.measurement(code).construction, frame)
        return total + c.get("offset", 0.0)
    return _geometry(c, frame) + c.get("offset", 0.0)


def _geometry(c: Mapping[str, Any], frame: _Frame) -> np.ndarray:
    kind = c["kind"]
    with np.errstate(invalid="ignore", divide="ignore"):
        if kind == "angle_at":
            return geo.angle_at(*(_point(p, frame) for p in c["points"]))
        if kind in ("angle_between", "signed_angle"):
            (a, b), (p, q) = ([_point(x, frame) for x in v] for v in c["vectors"])
            if kind == "angle_between":
                return geo.vector_angle(b - a, q - p)
            return geo.signed_vector_angle(b - a, q - p, c["positive"])
        if kind == "distance":
            return geo.distance(*(_point(p, frame) for p in c["points"]))
        if kind == "ratio":
            (a, b), (p, q) = ([_point(x, frame) for x in pair] for pair in c["of"])
            return geo.distance(a, b) / geo.distance(p, q) * c.get("scale", 1.0)
        if kind == "point_to_line":
            return geo.point_to_line(_point(c["point"], frame), *_line(c["line"], frame), c["positive"])
        if kind == "projected_distance":
            p, q = (_point(x, frame) for x in c["points"])
            return geo.projected_distance(p, q, *_line(c["line"], frame), c["positive"])
        if kind == "signed_distance":
            p, q = (_point(x, frame) for x in c["points"])
            return geo.signed_distance(p, q, c["positive"])
    raise ValueError(f"unknown construction kind {kind!r}")


def _point(item: Any, frame: _Frame) -> np.ndarray:
    return geo.resolve_point(item, frame.draws)


def _line(item: Any, frame: _Frame) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(item, Mapping):
        a, b = (_point(x, frame) for x in item["perpendicular_to"])
        return geo.perpendicular_through(_point(item["through"], frame), a, b)
    a, b = (_point(x, frame) for x in item)
    return a, b


@dataclass(frozen=True)
class AnalysisCoverage:
    """What a set of landmarks allows of one analysis: the measurements it can take, and for each other one the
    landmarks it misses (catalogue codes)."""

    analysis: str
    name: str
    computable: list[str]
    missing: dict[str, list[str]]


def coverage(known: Iterable[str], catalogue: Catalogue | None = None) -> list[AnalysisCoverage]:
    """For each analysis, the answered measurements that landmarks `known` (catalogue codes) allow."""
    catalogue = catalogue or load_catalogue()
    have = set(known)
    out = []
    for analysis in catalogue.analyses:
        computable, missing = [], {}
        for m in analysis.answered:
            lacking = [c for c in catalogue.landmarks_of(analysis, m) if c not in have]
            if lacking:
                missing[m.code] = lacking
            else:
                computable.append(m.code)
        out.append(AnalysisCoverage(analysis.code, analysis.name, computable, missing))
    return out
