"""Fair turns between clinics on shared training workers. Before a worker claims a training job it asks whether
the job's clinic should step aside: when it already runs `max_running_jobs_per_clinic` jobs, or when another
clinic has a queued job that can start now (step 0 or its previous step's model exists, and that clinic runs fewer
jobs than the limit) and was served less recently (its last job started earlier, or none ever did). A job that
steps aside is delivered again a moment later, behind the other clinics' messages, so one clinic's ten queued
steps interleave with another's one.

The order "served less recently" is total (ties broken by clinic id), so two clinics never step aside for each
other at once.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server.bodies import in_utc
from server.db.entities import JobStatus, Project, TrainingJob

from .lineage import promoted_version

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def clinic_of(session: Session, job: TrainingJob) -> uuid.UUID:
    return session.scalars(select(Project.clinic_id).where(Project.id == job.project_id)).one()


def should_step_aside(session: Session, job: TrainingJob, max_running: int) -> bool:
    """Whether `job` (queued) should let another clinic's job go first; see the module's docstring."""
    clinic = clinic_of(session, job)
    if _running(session, clinic) >= max_running:
        return True
    mine = _turn(session, clinic)
    others = session.execute(
        select(TrainingJob, Project.clinic_id)
        .join(Project, Project.id == TrainingJob.project_id)
        .where(
            TrainingJob.status == JobStatus.queued, Project.clinic_id != clinic, TrainingJob.cancel_requested.is_(False)
        )
    ).all()
    # Ahead: served less recently, and free to start a job now (a clinic at its limit would step aside too, and
    # both would wait while a worker idles). Each clinic's turn once.
    ahead = {
        other
        for other in {c for _, c in others}
        if _turn(session, other) < mine and _running(session, other) < max_running
    }
    return any(other in ahead and _ready(session, queued) for queued, other in others)


def _running(session: Session, clinic: uuid.UUID) -> int:
    """The clinic's training jobs running now."""
    return (
        session.scalar(
            select(func.count())
            .select_from(TrainingJob)
            .join(Project, Project.id == TrainingJob.project_id)
            .where(Project.clinic_id == clinic, TrainingJob.status == JobStatus.running)
        )
        or 0
    )


def _turn(session: Session, clinic: uuid.UUID) -> tuple[datetime, datetime, str]:
    """When the clinic was last served (its newest job start; never: the epoch), then since when it waits (its
    oldest queued job), then its id: lower goes first."""
    of_clinic = (Project.id == TrainingJob.project_id) & (Project.clinic_id == clinic)
    last = session.scalar(select(func.max(TrainingJob.started_at)).join(Project, of_clinic))
    queued = TrainingJob.status == JobStatus.queued
    waiting = session.scalar(select(func.min(TrainingJob.created_at)).join(Project, of_clinic).where(queued))
    return (in_utc(last) if last else _EPOCH, in_utc(waiting) if waiting else _EPOCH, str(clinic))


def _ready(session: Session, job: TrainingJob) -> bool:
    """A queued job that could start now: step 0, or a promoted model of its previous step exists."""
    return job.step == 0 or promoted_version(session, job.project_id, job.step - 1) is not None
