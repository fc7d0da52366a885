"""The analyses' answers: the catalogue, a project's coverage and the measurements of a prediction."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, Field


class MeasurementOut(BaseModel):
    """One measurement taken on one image's predicted landmarks."""

    analysis: str = Field(description="the analysis' code (GET /v1/analyses)")
    code: str = Field(description="the measurement's code within its analysis")
    name: str
    unit: str = Field(description="deg, mm, % or ratio")
    value: float
    low: float | None = Field(
        description="5th percentile of the value when each landmark moves by its validation error (the version's "
        "per-landmark MRE); null where a landmark has none"
    )
    high: float | None = Field(description="95th percentile, as low")
    norm_mean: float | None = Field(description="the norm's mean, from the analysis' published source")
    norm_sd: float | None
    deviation_sd: float | None = Field(description="(value - norm_mean) / norm_sd")
    class_code: str | None = Field(description="the clinical class the value falls in, where the analysis has classes")
    class_name: str | None
    landmarks: list[str] = Field(description="the project's codes of the landmarks it was built from")


class OmittedOut(BaseModel):
    """A measurement the prediction could not give, and why."""

    analysis: str
    code: str
    name: str
    reason: str
    missing: list[str] = Field(description="the project's codes of the landmarks it lacks")


class NormOut(BaseModel):
    mean: float
    sd: float


class ClassOut(BaseModel):
    code: str
    name: str
    min: float | None = Field(description="the class holds where min <= value <= max (null: open)")
    max: float | None


class MeasurementDefOut(BaseModel):
    """One measurement of the catalogue."""

    code: str
    name: str
    unit: str
    landmarks: list[str] = Field(description="catalogue landmark codes it reads")
    construction: dict[str, Any] = Field(description="how it is built (models/analyses/catalogue.py)")
    norm: NormOut | None
    classes: list[ClassOut] = Field(description="tried in order: the first that holds is the value's class")


class AnalysisOut(BaseModel):
    code: str
    name: str
    source: str = Field(description="the published source of its definitions and norms")
    measurements: list[MeasurementDefOut]


class CatalogueOut(BaseModel):
    version: int
    landmarks: dict[str, str] = Field(description="catalogue landmark code -> name (ISBI 2015 / CL-Detection codes)")
    analyses: list[AnalysisOut]


class MissingLandmarkOut(BaseModel):
    code: str = Field(description="the project's code of the landmark")
    catalogue_code: str
    name: str
    step: int | None = Field(
        description="the project's step that defines it (its model awaits that step's training); null: no step "
        "defines it yet, a new step must add it"
    )


class AnalysisCoverageOut(BaseModel):
    analysis: str
    name: str
    computable: list[str] = Field(description="measurements the version can take")
    missing: dict[str, list[MissingLandmarkOut]] = Field(description="each other measurement: the landmarks it lacks")


class ProjectAnalysesOut(BaseModel):
    project_id: uuid.UUID
    model_version_id: uuid.UUID | None = Field(description="the version measured (default: the active one); null: none")
    model_version_number: int | None
    analysis_landmarks: dict[str, str]
    analyses: list[AnalysisCoverageOut]
