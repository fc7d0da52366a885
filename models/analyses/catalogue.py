"""The catalogue of cephalometric measurements and analyses: data (catalogue.json), read into typed records.

A measurement is a construction on landmarks named by catalogue codes (the ISBI 2015 / CL-Detection 2023 codes),
with a unit, an optional norm (mean and SD) and optional clinical classes. Constructions (models.analyses.measure
evaluates them):

- ``angle_at``: the angle at the middle of three points, degrees in [0, 180].
- ``angle_between``: the angle between two directed vectors (each a pair of points), degrees in [0, 180].
- ``signed_angle``: the rotation from the first vector to the second, degrees in (-180, 180], positive
  ``clockwise`` or ``counterclockwise`` as seen on the image with the face looking right.
- ``distance``: between two points, mm.
- ``ratio``: of two distances (``of``: two point pairs).
- ``point_to_line``: the perpendicular distance of a point from a line, mm, positive on the ``positive`` side
  (anterior, posterior, superior or inferior).
- ``projected_distance``: the first point's foot on a line minus the second's, along the line, mm, positive
  where the first lies towards ``positive``.
- ``signed_distance``: the distance between two points, with the sign of the first's offset towards
  ``positive``.
- ``sum``: ``constant`` plus weighted other measurements of the same analysis (``terms``: [code, weight]).
Every construction may add an ``offset`` to its value. A point is a code or ``{"mid": [code, code]}``; a line is
two points (directed) or ``{"through": point, "perpendicular_to": [point, point]}``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

#: Units a measurement may have: degrees, millimetres, percent, or a plain ratio.
UNITS = ("deg", "mm", "%", "ratio")
KINDS = (
    "angle_at",
    "angle_between",
    "signed_angle",
    "distance",
    "ratio",
    "point_to_line",
    "projected_distance",
    "signed_distance",
    "sum",
)
#: Kinds whose value is a length: they need the pixel spacing.
LENGTHS = ("distance", "point_to_line", "projected_distance", "signed_distance")
#: What each kind reads: its keys and their shapes ("point", "points:N", "vectors", "pairs", "line", "side").
SHAPES: dict[str, dict[str, str]] = {
    "angle_at": {"points": "points:3"},
    "angle_between": {"vectors": "vectors"},
    "signed_angle": {"vectors": "vectors", "positive": "turn"},
    "distance": {"points": "points:2"},
    "ratio": {"of": "vectors"},
    "point_to_line": {"point": "point", "line": "line", "positive": "side"},
    "projected_distance": {"points": "points:2", "line": "line", "positive": "side"},
    "signed_distance": {"points": "points:2", "positive": "side"},
    "sum": {"terms": "terms"},
}
SIDES = ("anterior", "posterior", "superior", "inferior")
TURNS = ("clockwise", "counterclockwise")


class CatalogueError(ValueError):
    """The catalogue's data is inconsistent (a unit, kind, code or reference that does not exist)."""


@dataclass(frozen=True, kw_only=True)
class Norm:
    mean: float
    sd: float


@dataclass(frozen=True, kw_only=True)
class ClinicalClass:
    """A class of the value: it holds where min <= value <= max (a missing bound is open); a measurement's
    classes are tried in order and the first that holds is the value's."""

    code: str
    name: str
    min: float | None = None
    max: float | None = None

    def holds(self, value: float) -> bool:
        """Whether min <= value <= max (an open bound holds)."""
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)


@dataclass(frozen=True, kw_only=True, eq=False)  # compared and hashed by identity: one object per entry
class Measurement:
    code: str
    name: str
    unit: str
    construction: dict[str, Any]
    norm: Norm | None = None
    classes: tuple[ClinicalClass, ...] = ()
    #: A component of other measurements of its analysis, not answered on its own.
    part: bool = False

    def classify(self, value: float) -> ClinicalClass | None:
        """The first class that holds `value`, or None (no class does, or the measurement has none)."""
        return next((c for c in self.classes if c.holds(value)), None)


@dataclass(frozen=True, kw_only=True, eq=False)
class Analysis:
    code: str
    name: str
    source: str
    measurements: tuple[Measurement, ...]

    def measurement(self, code: str) -> Measurement:
        """This analysis' measurement `code`; KeyError naming the analysis if it has none."""
        for m in self.measurements:
            if m.code == code:
                return m
        raise KeyError(f"analysis {self.code!r} has no measurement {code!r}")

    @property
    def answered(self) -> tuple[Measurement, ...]:
        """The measurements answered to a user (not the parts of others)."""
        return tuple(m for m in self.measurements if not m.part)


@dataclass(frozen=True, kw_only=True)
class Catalogue:
    version: int
    #: Catalogue landmark code -> its name.
    landmarks: dict[str, str]
    analyses: tuple[Analysis, ...]
    about: str = field(default="")

    def analysis(self, code: str) -> Analysis:
        """The analysis `code`; KeyError listing the known ones if there is none."""
        for a in self.analyses:
            if a.code == code:
                return a
        raise KeyError(f"no analysis {code!r}; known: {', '.join(a.code for a in self.analyses)}")

    def landmarks_of(self, analysis: Analysis, measurement: Measurement) -> list[str]:
        """The landmark codes a measurement reads, directly or through the measurements it sums, in order."""
        return list(_landmarks_of(analysis, measurement))


@cache
def _landmarks_of(analysis: Analysis, measurement: Measurement) -> tuple[str, ...]:
    return tuple(dict.fromkeys(_landmarks(analysis, measurement.construction)))


def _landmarks(analysis: Analysis, construction: Mapping[str, Any]) -> Iterator[str]:
    if construction["kind"] == "sum":
        for code, _ in construction["terms"]:
            yield from _landmarks(analysis, analysis.measurement(code).construction)
        return
    for key in ("points", "point", "vectors", "line", "of"):
        if key in construction:
            yield from _codes(construction[key])


def _codes(item: Any) -> Iterator[str]:
    """Every landmark code in a point, line or list of them."""
    if isinstance(item, str):
        yield item
    elif isinstance(item, Mapping):
        for key in ("mid", "through", "perpendicular_to"):
            if key in item:
                yield from _codes(item[key])
    else:
        for sub in item:
            yield from _codes(sub)


@cache
def load_catalogue() -> Catalogue:
    """The catalogue shipped with the package (models/analyses/catalogue.json), checked."""
    text = resources.files(__package__).joinpath("catalogue.json").read_text(encoding="utf-8")
    return parse_catalogue(json.loads(text))


def parse_catalogue(data: Mapping[str, Any]) -> Catalogue:
    """A catalogue from its JSON form; CatalogueError where it is inconsistent."""
    analyses = tuple(_analysis(a) for a in data["analyses"])
    catalogue = Catalogue(
        version=int(data["version"]), landmarks=dict(data["landmarks"]), analyses=analyses, about=data.get("about", "")
    )
    check(catalogue)
    return catalogue


def _analysis(data: Mapping[str, Any]) -> Analysis:
    return Analysis(
        code=data["code"],
        name=data["name"],
        source=data["source"],
        measurements=tuple(_measurement(m) for m in data["measurements"]),
    )


def _measurement(data: Mapping[str, Any]) -> Measurement:
    norm = data.get("norm")
    return Measurement(
        code=data["code"],
        name=data["name"],
        unit=data["unit"],
        construction=dict(data["construction"]),
        norm=Norm(mean=float(norm["mean"]), sd=float(norm["sd"])) if norm else None,
        classes=tuple(ClinicalClass(**c) for c in data.get("classes", ())),
        part=bool(data.get("part", False)),
    )


def check(catalogue: Catalogue) -> None:
    """CatalogueError unless every analysis and measurement code is unique where it must be, every unit and kind
    is known, every landmark code is in the catalogue's landmarks and every sum names a measurement of its
    analysis without a cycle."""
    codes = [a.code for a in catalogue.analyses]
    if len(set(codes)) != len(codes):
        raise CatalogueError(f"analysis codes repeat: {codes}")
    for analysis in catalogue.analyses:
        seen = [m.code for m in analysis.measurements]
        if len(set(seen)) != len(seen):
            raise CatalogueError(f"{analysis.code}: measurement codes repeat")
        for m in analysis.measurements:
            where = f"{analysis.code}/{m.code}"
            if m.unit not in UNITS:
                raise CatalogueError(f"{where}: unit {m.unit!r} is not one of {UNITS}")
            if m.construction.get("kind") not in KINDS:
                raise CatalogueError(f"{where}: kind {m.construction.get('kind')!r} is not one of {KINDS}")
            _check_shape(m.construction, where)
            for c in m.classes:
                if c.min is not None and c.max is not None and c.min > c.max:
                    raise CatalogueError(f"{where}: class {c.code} has min > max")
            if m.norm is not None and m.norm.sd <= 0:
                raise CatalogueError(f"{where}: a norm's SD must be positive")
            _check_terms(analysis, m, where, ())
            unknown = [c for c in catalogue.landmarks_of(analysis, m) if c not in catalogue.landmarks]
            if unknown:
                raise CatalogueError(f"{where}: landmarks {unknown} are not in the catalogue's landmarks")


def _check_terms(analysis: Analysis, m: Measurement, where: str, path: tuple[str, ...]) -> None:
    if m.construction["kind"] != "sum":
        return
    if m.code in path:
        raise CatalogueError(f"{where}: sums refer to each other in a cycle: {' -> '.join((*path, m.code))}")
    for code, _ in m.construction["terms"]:
        try:
            term = analysis.measurement(code)
        except KeyError as exc:
            raise CatalogueError(f"{where}: {exc.args[0]}") from exc
        _check_terms(analysis, term, where, (*path, m.code))


def _check_shape(construction: Mapping[str, Any], where: str) -> None:
    """CatalogueError unless the construction has exactly the keys of its kind (SHAPES), each of its shape."""
    shape = SHAPES[construction["kind"]]
    keys = set(construction) - {"kind", "offset", "constant", "scale"}
    if keys != set(shape):
        raise CatalogueError(f"{where}: a {construction['kind']} reads {sorted(shape)}, got {sorted(keys)}")
    for key, form in shape.items():
        if not _fits(construction[key], form):
            raise CatalogueError(f"{where}: {key} is not {form}: {construction[key]!r}")


def _fits(value: Any, form: str) -> bool:
    if form == "side":
        return value in SIDES
    if form == "turn":
        return value in TURNS
    if form == "point":
        return isinstance(value, str) or (isinstance(value, Mapping) and len(value.get("mid", ())) == 2)
    if form.startswith("points:"):
        return isinstance(value, list) and len(value) == int(form[7:]) and all(_fits(v, "point") for v in value)
    if form == "vectors":
        return isinstance(value, list) and len(value) == 2 and all(_fits(v, "points:2") for v in value)
    if form == "line":
        if isinstance(value, Mapping):
            return _fits(value.get("through"), "point") and _fits(value.get("perpendicular_to"), "points:2")
        return _fits(value, "points:2")
    return isinstance(value, list) and all(isinstance(t, list) and len(t) == 2 for t in value)  # terms
