"""Queued jobs whose broker message was lost (a Redis restarted without persistence between publish and pick-up)
would stay queued forever and block their landmark set. A worker touches a queued job's heartbeat whenever it
handles its message (a training job waiting for the previous step's model does so every WAIT_COUNTDOWN_S); the
reaper publishes the message again for a queued job nobody has touched for `job_stale_after_s`. A job whose
message was only late gets two: the conditional claim runs it once and skips the other.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.orm import Session

from server.db.base import utcnow
from server.db.entities import JobStatus, PredictionJob, TrainingJob
from server.db.session import session_factory
from server.jobs.repository import JobEntity, log_line
from server.settings import Settings
from server.training.queue import TASK_PREDICT_JOB, TASK_TRAIN_JOB, Enqueue, celery_enqueue

log = logging.getLogger("kamp.worker")


def requeue_lost_jobs(settings: Settings, enqueue: dict[JobEntity, Enqueue] | None = None) -> list[uuid.UUID]:
    """Publish again every queued job untouched for `job_stale_after_s`; returns them. `enqueue`: the publisher
    of each kind of job (default: Celery's)."""
    publishers = enqueue or {
        TrainingJob: celery_enqueue(settings, TASK_TRAIN_JOB),
        PredictionJob: celery_enqueue(settings, TASK_PREDICT_JOB),
    }
    cutoff = utcnow() - timedelta(seconds=settings.job_stale_after_s)
    requeued: list[uuid.UUID] = []
    with session_factory(settings.resolved_database_url)() as session:
        for entity, publish in publishers.items():
            untouched = (entity.status == JobStatus.queued) & (
                func.coalesce(entity.heartbeat_at, entity.created_at) < cutoff
            )
            for job_id in list(session.scalars(select(entity.id).where(untouched))):
                if _touch(session, entity, job_id, untouched) and _publish(publish, job_id):
                    requeued.append(job_id)
    return requeued


def _touch(session: Session, entity: JobEntity, job_id: uuid.UUID, untouched: ColumnElement[bool]) -> bool:
    """Mark the job touched (one reaper publishes it, however many run); False if it was picked up meanwhile."""
    values: dict[str, object] = {"heartbeat_at": utcnow()}
    if entity is TrainingJob:
        values["log"] = log_line("its queue message was not picked up: published again")
    result = session.execute(
        update(entity)
        .where(entity.id == job_id, untouched)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return result.rowcount == 1  # type: ignore[attr-defined]


def _publish(publish: Enqueue, job_id: uuid.UUID) -> bool:
    try:
        publish(job_id)
    except Exception as exc:  # the broker is still down: the next round tries again
        log.warning("could not publish lost job %s again: %s", job_id, type(exc).__name__)
        return False
    log.warning("job %s was queued but nobody picked it up: published again", job_id)
    return True
