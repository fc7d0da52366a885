from __future__ import annotations

import uuid

from pydantic import BaseModel, Field

from ..bodies import RequestBody, UtcDatetime
from ..projects.schemas import CODE_PATTERN


class PointIn(RequestBody):
    code: str = Field(pattern=CODE_PATTERN, examples=["S"])
    # Strict: a JSON true or "12" is a client's mistake, not a coordinate.
    x: float = Field(
        strict=True, allow_inf_nan=False, description="pixels of the study image; pixel centres are integers"
    )
    y: float = Field(strict=True, allow_inf_nan=False)


class AnnotationIn(RequestBody):
    study_id: uuid.UUID
    annotator: str | None = Field(default=None, max_length=200, description="default: the API key's name")
    points: list[PointIn] = Field(min_length=1, max_length=500)
    seconds: float | None = Field(
        default=None,
        strict=True,
        ge=0,
        le=86_400,
        allow_inf_nan=False,
        description="time the annotator spent on this study, in seconds (the console records it)",
    )


class PointOut(BaseModel):
    code: str
    x: float
    y: float


class AnnotationOut(BaseModel):
    id: uuid.UUID
    study_id: uuid.UUID
    step: int
    version: int
    annotator: str
    split: str = Field(description="train or val: the study's role in this landmark set, frozen once drawn")
    points: list[PointOut]
    source: str
    seconds: float | None = Field(default=None, description="time spent annotating, when the client recorded it")
    created_at: UtcDatetime


class ImportOut(BaseModel):
    imported: int
    annotations: list[AnnotationOut]
