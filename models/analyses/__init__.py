"""Cephalometric analyses: a declarative catalogue of measurements (catalogue.json) computed from landmarks."""

from __future__ import annotations

from collections.abc import Mapping

from .catalogue import Analysis, Catalogue, CatalogueError, ClinicalClass, Measurement, Norm, load_catalogue
from .measure import AnalysisCoverage, MeasuredValue, Measurements, Unmeasured, coverage, measure

__all__ = [
    "Analysis",
    "AnalysisCoverage",
    "Catalogue",
    "CatalogueError",
    "ClinicalClass",
    "MeasuredValue",
    "Measurement",
    "Measurements",
    "Norm",
    "Unmeasured",
    "coverage",
    "load_catalogue",
    "measure",
    "project_code",
    "to_catalogue",
]


def project_code(mapping: Mapping[str, str], code: str) -> str:
    """The project's code of catalogue landmark `code` (`mapping`: catalogue code -> project code; a code it
    does not name keeps its own)."""
    return mapping.get(code, code)


def to_catalogue(values: Mapping[str, object], mapping: Mapping[str, str], catalogue: Catalogue | None = None) -> dict:
    """Values keyed by project code (points, errors) -> keyed by catalogue code, for the catalogue's landmarks
    that the project has."""
    catalogue = catalogue or load_catalogue()
    out = {}
    for code in catalogue.landmarks:
        mine = project_code(mapping, code)
        if mine in values:
            out[code] = values[mine]
    return out
