"""Which model a step continues from: the rule the training job and the fair-turn check share."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.db.entities import ModelVersion, VersionStatus


def promoted_version(session: Session, project_id: uuid.UUID, step: int) -> ModelVersion | None:
    """The newest version of the project's `step` that was promoted at some time (active or archived), or None."""
    return session.scalar(
        select(ModelVersion)
        .where(
            ModelVersion.project_id == project_id,
            ModelVersion.step == step,
            ModelVersion.status.in_([VersionStatus.active, VersionStatus.archived]),
        )
        .order_by(ModelVersion.number.desc())
        .limit(1)
    )
