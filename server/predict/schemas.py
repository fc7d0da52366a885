from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field

from ..analyses.schemas import MeasurementOut, OmittedOut
from ..analyses.service import MeasureContext, measurements
from ..jobs.schemas import JobOutBase
from ..studies.schemas import Spacing

if TYPE_CHECKING:
    from models.predictor import Prediction

    from ..db.entities import ModelVersion


class PredictedLandmark(BaseModel):
    code: str
    name: str
    step: int
    x: float = Field(description="pixels of the original image (pixel centres at integers)")
    y: float
    x_mm: float | None = Field(description="x times the spacing; null when the spacing is unknown")
    y_mm: float | None
    confidence: float = Field(ge=0, le=1, description="the heatmap peak (1 = a full-height peak)")
    stage: Literal["local", "global"] = Field(
        description="which stage placed the point: 'local', the crop network at the image's own resolution; "
        "'global', the first stage (a one-stage model, or a point whose estimate left the image: its confidence "
        "is then halved)"
    )


class PredictionOut(BaseModel):
    model_version_id: uuid.UUID
    model_version_number: int
    checkpoint_sha256: str
    width: int
    height: int
    spacing: Spacing
    landmarks: list[PredictedLandmark]
    filename: str | None = None
    study_id: uuid.UUID | None = Field(
        default=None, description="the study the image was kept as, when asked (store=true); else null"
    )
    measurements: list[MeasurementOut] = Field(
        default_factory=list,
        description="every cephalometric measurement (GET /v1/analyses) the landmarks allow, with its plausible "
        "range, norm, deviation in SD and clinical class",
    )
    measurements_omitted: list[OmittedOut] = Field(
        default_factory=list,
        description="the measurements of analyses that share a landmark with the model but could not be taken, "
        "with the reason (landmarks the model lacks: the step a clinic must add; a length without a spacing)",
    )


def prediction_out(
    version: ModelVersion,
    prediction: Prediction,
    *,
    spacing_source: str,
    filename: str | None,
    analyses: MeasureContext | None = None,
) -> PredictionOut:
    """The answer for one image, the same from the synchronous routes and from a prediction job; with its
    measurements where `analyses` (the project's mapping and the version's errors) is given."""
    width, height = prediction.image_size
    values, omitted = measurements(prediction, analyses) if analyses is not None else ([], [])
    sx, sy = prediction.spacing_mm or (None, None)
    return PredictionOut(
        model_version_id=version.id,
        model_version_number=version.number,
        checkpoint_sha256=version.checkpoint_sha256,
        width=width,
        height=height,
        spacing=Spacing(x_mm=sx, y_mm=sy, source=spacing_source),
        landmarks=[PredictedLandmark(**vars(lm)) for lm in prediction.landmarks],
        filename=filename,
        measurements=values,
        measurements_omitted=omitted,
    )


class JobLinks(BaseModel):
    self: str
    results: str


class PredictionJobOut(JobOutBase):
    """An asynchronous prediction job: its model version (fixed at submission), status and progress."""

    model_version_id: uuid.UUID
    total: int = Field(description="images in the job")
    done: int = Field(description="images predicted so far")
    links: JobLinks
