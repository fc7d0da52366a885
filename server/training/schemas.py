from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..bodies import RequestBody, UtcDatetime
from ..jobs.schemas import JobOutBase
from ..projects.schemas import SERVED_STRATEGIES, check_strategy
from .config import validate_training

#: Lines of a job's log in its answer (the newest ones).
LOG_TAIL_LINES = 200


class SubmitIn(RequestBody):
    """What to train; everything is optional and defaults to the project's settings."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"strategy": "kamp", "training": {"iterations": 250, "kanet": {"iterations": 150}}, "reason": "step 1"}
            ]
        }
    )
    strategy: str | None = Field(
        default=None,
        description="default: the project's strategy; another one trains its own validated settings for the "
        "project's modality where the project's training defaults hold its strategy's",
        examples=["kamp"],
        json_schema_extra={"anyOf": [SERVED_STRATEGIES, {"type": "null"}]},
    )
    training: dict[str, Any] | None = Field(
        default=None,
        description="TrainConfig overrides on top of the project's training defaults",
        examples=[{"iterations": 250, "kanet": {"iterations": 150}}],
    )
    reason: str = Field(default="", max_length=2000, description="kept as the first line of the job's log")

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, v: str | None) -> str | None:
        return None if v is None else check_strategy(v)

    @field_validator("training")
    @classmethod
    def _valid_training(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if v is None else validate_training(v)


class JobOut(JobOutBase):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "7f1c2a4e-7a51-4b7e-9a8e-0b7b5d0c1a11",
                    "project_id": "0d7e8d36-51f4-4d0c-9c3a-6f6a4b0f2b8e",
                    "set_id": "4b1b7a6c-2f57-4a3b-8f0a-2d6e5c1e9d27",
                    "step": 1,
                    "status": "running",
                    "strategy": "kamp",
                    "config": {"iterations": 250},
                    "progress": {
                        "stage": "train",
                        "iteration": 120,
                        "total": 250,
                        "eta_s": 95.0,
                        "overall": 0.42,
                        "overall_eta_s": 160.0,
                    },
                    "log": "submitted: step 1\nstage I: KA-Net ...",
                    "error": None,
                    "attempt": 1,
                    "cancel_requested": False,
                    "created_by": "c2c7a5f1-6f0b-4d4e-b0c4-3f9b2c8a7e55",
                    "created_at": "2026-11-25T09:00:00Z",
                    "started_at": "2026-11-25T09:00:05Z",
                    "heartbeat_at": "2026-11-25T09:02:00Z",
                    "finished_at": None,
                    "model_version_id": None,
                    "celery_task_id": "1c994881-714f-49ed-aba9-5aba5b60db91",
                }
            ]
        }
    )
    set_id: uuid.UUID
    step: int
    strategy: str
    config: dict[str, Any] = Field(description="TrainConfig overrides: the project's defaults and the request's")
    progress: dict[str, Any] = Field(
        description='while running: {"stage" (preparing, kanet, train, refine, validation), "iteration", "total", '
        '"eta_s" (the stage\'s), "losses", "overall" (0..1 across every stage), "overall_eta_s" (the whole job\'s, '
        'null until something can price it), "curve" ({stage: [[iteration, losses]]}, at most 100 points each)}'
    )
    log: str = Field(description=f"the last {LOG_TAIL_LINES} lines")
    attempt: int
    cancel_requested: bool
    model_version_id: uuid.UUID | None
    celery_task_id: str | None


class VersionSummary(BaseModel):
    steps: list[dict[str, Any]] = Field(
        default_factory=list,
        description="validation per step, from the report: {step, mre, unit, ...}",
        examples=[[{"step": 0, "mre": 1.62, "unit": "mm"}, {"step": 1, "mre": 2.05, "unit": "mm"}]],
    )


class VersionOut(BaseModel):
    id: uuid.UUID
    number: int
    step: int
    parent_id: uuid.UUID | None
    parent_number: int | None
    status: str = Field(description="candidate, active, rejected or archived")
    strategy: str
    checkpoint_sha256: str
    created_at: UtcDatetime
    reason: str
    summary: VersionSummary
    decision: Literal["promote", "rollback"] | None = Field(
        description="what an admin can do with it now: rollback (an archived version older than the active one), "
        "promote (a candidate, a rejected version or a newer archived one), or null (the active version)"
    )


class VersionHistory(BaseModel):
    active_version_id: uuid.UUID | None = Field(description="the version that answers predictions; null if none")
    versions: list[VersionOut] = Field(description="oldest first")


class EventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    action: str = Field(description="promoted, rejected, rolled_back or archived", examples=["promoted"])
    actor: str = Field(description='the API key id, or "gate" for the automatic decision')
    reason: str
    created_at: UtcDatetime


class VersionDetail(VersionOut):
    project_id: uuid.UUID
    job_id: uuid.UUID | None = Field(description="the training job that made this version")
    hyperparameters: dict[str, Any]
    report: dict[str, Any]
    events: list[EventOut] = Field(description="the audit trail, oldest first")


class ReasonIn(RequestBody):
    reason: str = Field(min_length=1, max_length=2000, examples=["v4 passed review on the March studies"])
