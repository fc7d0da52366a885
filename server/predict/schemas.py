from __future__ import annotations

import uuid

from pydantic import BaseModel, Field

from ..studies.schemas import Spacing


class PredictedLandmark(BaseModel):
    code: str
    name: str
    step: int
    x: float = Field(description="pixels of the original image (pixel centres at integers)")
    y: float
    x_mm: float | None = Field(description="x times the spacing; null when the spacing is unknown")
    y_mm: float | None
    confidence: float = Field(ge=0, le=1, description="the heatmap peak (1 = a full-height peak)")


class PredictionOut(BaseModel):
    model_version_id: uuid.UUID
    model_version_number: int
    checkpoint_sha256: str
    width: int
    height: int
    spacing: Spacing
    landmarks: list[PredictedLandmark]
    filename: str | None = None
