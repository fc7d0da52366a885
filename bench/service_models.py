"""A model made in a benchmark, registered as a project's active version straight through the service's storage
and database (the service has no route to upload a checkpoint: versions come from training jobs)."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from models.checkpoint import Checkpoint
    from server.settings import Settings


def activate_checkpoint(settings: Settings, project_id: uuid.UUID, checkpoint: Checkpoint, strategy: str) -> None:
    """Store `checkpoint` in the service's blob store and record it as `project_id`'s next, active version."""
    from sqlalchemy import func, select

    from server.db.entities import ModelVersion, VersionStatus
    from server.db.session import session_factory
    from server.storage import blob_store

    key = blob_store(settings).put(checkpoint.to_bytes())
    with session_factory(settings.resolved_database_url)() as session:
        versions = select(func.count()).select_from(ModelVersion).where(ModelVersion.project_id == project_id)
        session.add(
            ModelVersion(
                project_id=project_id,
                number=(session.scalar(versions) or 0) + 1,
                step=0,
                checkpoint_blob=key,
                checkpoint_sha256=key,
                strategy=strategy,
                status=VersionStatus.active,
            )
        )
        session.commit()
