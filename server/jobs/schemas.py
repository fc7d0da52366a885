"""The answer's fields every job has, training or prediction, and their one builder; each kind's answer
(server.training.schemas.JobOut, server.predict.schemas.PredictionJobOut) adds its own."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, Field

from ..bodies import UtcDatetime
from ..db.entities import PredictionJob, TrainingJob


class JobOutBase(BaseModel):
    """A job's identity, life and times."""

    id: uuid.UUID
    project_id: uuid.UUID
    status: str = Field(description="queued, running, succeeded, failed or cancelled")
    error: str | None
    created_by: uuid.UUID | None
    created_at: UtcDatetime
    started_at: UtcDatetime | None
    heartbeat_at: UtcDatetime | None
    finished_at: UtcDatetime | None


def job_fields(job: TrainingJob | PredictionJob) -> dict[str, Any]:
    """JobOutBase's fields of `job`, for the kind's answer to add its own to."""
    fields = {name: getattr(job, name) for name in JobOutBase.model_fields}
    return fields | {"status": job.status.value}
