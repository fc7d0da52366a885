from __future__ import annotations

import uuid

from pydantic import BaseModel, ConfigDict, Field

from ..bodies import UtcDatetime


class Spacing(BaseModel):
    x_mm: float | None = Field(description="mm per pixel along x (columns); null when unknown")
    y_mm: float | None = Field(description="mm per pixel along y (rows); null when unknown")
    source: str = Field(description="PixelSpacing, ImagerPixelSpacing, header, user or none")


class StudyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    width: int
    height: int
    format: str
    modality: str | None
    spacing: Spacing
    deid_method: str | None
    pixel_sha256: str
    created_at: UtcDatetime
    created: bool = Field(default=True, description="false when the same image was uploaded before")
