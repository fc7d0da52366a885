"""The analyses' rules in the service: a project's landmark mapping, what its version can measure, and the
measurements of a prediction (models.analyses does the geometry). Web-free: routes, the prediction worker and
DICOMweb call it."""

from __future__ import annotations

import re
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.analyses import Catalogue, coverage, load_catalogue, measure, project_code, to_catalogue

from ..db.entities import ModelVersion, Project, VersionStatus
from ..problems import Problem, not_found
from ..projects.schemas import CODE_PATTERN
from .schemas import MeasurementOut, OmittedOut

if TYPE_CHECKING:
    from models.predictor import Prediction

#: The modality whose projects are measured.
CEPHALOMETRIC = "cephalometric"
_CODE = re.compile(CODE_PATTERN)


def check_mapping(mapping: Mapping[str, str]) -> dict[str, str]:
    """A project's mapping (catalogue code -> project code), checked: 422 naming an unknown catalogue code, an
    invalid project code, or two catalogue codes mapped to one project code."""
    known = load_catalogue().landmarks
    unknown = sorted(c for c in mapping if c not in known)
    if unknown:
        raise Problem(
            422,
            f"analysis_landmarks: {', '.join(unknown)} are not landmarks of the catalogue (GET /v1/analyses lists "
            f"them: {', '.join(known)})",
            slug="invalid-request",
            title="Invalid request",
        )
    bad = sorted(v for v in mapping.values() if not _CODE.fullmatch(v))  # "$" of re.match passes "S\n"
    if bad:
        raise Problem(422, f"analysis_landmarks: invalid landmark codes {bad}", slug="invalid-request")
    targets = [project_code(mapping, c) for c in known]
    doubled = sorted({t for t in targets if targets.count(t) > 1})
    if doubled:
        raise Problem(
            422,
            f"analysis_landmarks: {', '.join(doubled)} would stand for two catalogue landmarks",
            slug="invalid-request",
        )
    return dict(mapping)


@dataclass(frozen=True)
class MeasureContext:
    """What measuring a version's predictions needs: the project's mapping and the version's per-landmark
    validation MRE (project codes), with the unit each was measured in ("mm", or "px" where the validation
    studies had no spacing)."""

    mapping: dict[str, str] = field(default_factory=dict)
    errors: dict[str, tuple[float, str]] = field(default_factory=dict)
    #: Cephalometric projects only: another modality's codes may look like the catalogue's ("A", "B", "S").
    enabled: bool = True

    def errors_in(self, unit: str) -> dict[str, float]:
        """The errors measured in `unit`: a range in mm needs errors in mm (and one in pixels, pixels)."""
        return {code: mre for code, (mre, u) in self.errors.items() if u == unit}


class _ErrorCache:
    """Per-landmark validation errors by version (a version's report never changes), least recently used out."""

    def __init__(self, capacity: int = 64) -> None:
        self._rows: OrderedDict[uuid.UUID, dict[str, tuple[float, str]]] = OrderedDict()
        self._lock = threading.Lock()
        self.capacity = capacity

    def get(self, session: Session, version_id: uuid.UUID) -> dict[str, tuple[float, str]]:
        """The version's errors (landmark_errors of its report), read once."""
        with self._lock:
            if version_id in self._rows:
                self._rows.move_to_end(version_id)
                return self._rows[version_id]
        report = session.scalar(select(ModelVersion.report).where(ModelVersion.id == version_id)) or {}
        errors = landmark_errors(report)
        with self._lock:
            self._rows[version_id] = errors
            while len(self._rows) > self.capacity:
                self._rows.popitem(last=False)
        return errors


_errors = _ErrorCache()


def landmark_errors(report: Mapping[str, Any]) -> dict[str, tuple[float, str]]:
    """Each landmark's validation MRE and its unit from a version's report (the step that validated it),
    project codes."""
    out: dict[str, tuple[float, str]] = {}
    for step in report.get("steps", []):
        unit = str(step.get("unit", "mm"))
        for code, summary in (step.get("landmarks") or {}).items():
            mre = (summary or {}).get("mre")
            if isinstance(mre, int | float) and mre == mre:
                out[code] = (float(mre), unit)
    return out


def context(session: Session, version: ModelVersion) -> MeasureContext:
    """The mapping of the version's project (read now: an admin may change it) and the version's errors; a
    project of another modality than cephalometric is not measured."""
    row = session.execute(
        select(Project.modality, Project.analysis_landmarks).where(Project.id == version.project_id)
    ).one()
    if row.modality != CEPHALOMETRIC:
        return MeasureContext(enabled=False)
    return MeasureContext(dict(row.analysis_landmarks or {}), _errors.get(session, version.id))


def measurements(prediction: Prediction, ctx: MeasureContext) -> tuple[list[MeasurementOut], list[OmittedOut]]:
    """The measurements of every analysis that shares a landmark with the prediction, and those it cannot give."""
    points = {lm.code: (lm.x, lm.y) for lm in prediction.landmarks}
    known = to_catalogue(points, ctx.mapping)
    if not ctx.enabled or not known:
        return [], []
    errors = to_catalogue(ctx.errors_in("px" if prediction.spacing_mm is None else "mm"), ctx.mapping)
    catalogue = load_catalogue()
    relevant = [a.code for a in catalogue.analyses if analysis_landmarks(a.code) & known.keys()]
    result = measure(known, prediction.spacing_mm, analyses=relevant, landmark_error=errors or None)
    theirs = _mine(ctx.mapping)
    values = [MeasurementOut(**{**vars(v), "landmarks": theirs(v.landmarks)}) for v in result.values]
    omitted = [OmittedOut(**{**vars(o), "missing": theirs(o.missing)}) for o in result.omitted]
    return values, omitted


@cache
def analysis_landmarks(analysis: str) -> frozenset[str]:
    """The catalogue codes every answered measurement of `analysis` reads (the catalogue never changes)."""
    catalogue = load_catalogue()
    a = catalogue.analysis(analysis)
    return frozenset(c for m in a.answered for c in catalogue.landmarks_of(a, m))


def _mine(mapping: Mapping[str, str]) -> Callable[[Iterable[str]], list[str]]:
    """Catalogue codes -> the project's codes."""
    return lambda codes: [project_code(mapping, c) for c in codes]


@dataclass(frozen=True)
class Missing:
    code: str  # the project's code
    catalogue_code: str
    name: str
    step: int | None  # the project's step that defines it, if one does (it then awaits training or annotation)


def project_coverage(project: Project, version: ModelVersion | None) -> list[dict[str, Any]]:
    """For each analysis: the measurements `version` (None: no model yet) can take, and for each other one the
    landmarks it lacks, with the step of the project that defines each (None: no step does yet; a clinic adds a
    step with it)."""
    catalogue = load_catalogue()
    mapping = dict(project.analysis_landmarks or {})
    steps = {lm.code: s.step for s in project.landmark_sets for lm in s.landmarks}
    have = set(version_codes(project, version)) if version is not None else set()
    known = [c for c in catalogue.landmarks if project_code(mapping, c) in have]
    out = []
    for cov in coverage(known):
        missing = {m: [vars(_missing(catalogue, mapping, steps, c)) for c in codes] for m, codes in cov.missing.items()}
        out.append({"analysis": cov.analysis, "name": cov.name, "computable": cov.computable, "missing": missing})
    return out


def _missing(catalogue: Catalogue, mapping: Mapping[str, str], steps: Mapping[str, int], code: str) -> Missing:
    mine = project_code(mapping, code)
    return Missing(code=mine, catalogue_code=code, name=catalogue.landmarks[code], step=steps.get(mine))


def version_codes(project: Project, version: ModelVersion) -> list[str]:
    """The landmark codes a version predicts: those of its project's steps up to its own (a step's model keeps
    every earlier step's landmarks)."""
    return [lm.code for s in project.landmark_sets if s.step <= version.step for lm in s.landmarks]


def measured_version(session: Session, project: Project, version_id: uuid.UUID | None) -> ModelVersion | None:
    """The project's given version (404 if it is not the project's), else its active one (None if none)."""
    wanted = ModelVersion.id == version_id if version_id is not None else ModelVersion.status == VersionStatus.active
    version = session.scalar(select(ModelVersion).where(ModelVersion.project_id == project.id, wanted))
    if version is None and version_id is not None:
        raise not_found("model version")
    return version
