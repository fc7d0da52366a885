"""Queries of the training domain (projects, steps, model versions), always scoped to one clinic (through the
project). Finding and listing jobs is every kind's: server.jobs.repository."""

from __future__ import annotations

import uuid

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session

from ..db.entities import (
    Annotation,
    ModelVersion,
    Project,
    Split,
    TrainingJob,
    VersionEvent,
    VersionStatus,
)
from ..db.locks import hold_project
from ..jobs.repository import UNFINISHED
from ..problems import not_found


def lock_project(session: Session, clinic_id: uuid.UUID, project_id: uuid.UUID) -> Project:
    """The clinic's project, its row held until the transaction ends (server.db.locks.hold_project), read
    afresh. Serialises submissions and promotions within a project."""
    hold_project(session, project_id, clinic_id)
    project = session.scalar(
        select(Project)
        .where(Project.id == project_id, Project.clinic_id == clinic_id)
        .execution_options(populate_existing=True)
    )
    if project is None:
        raise not_found("project")
    return project


def active_job(session: Session, set_id: uuid.UUID) -> TrainingJob | None:
    """The set's queued or running job, if any."""
    return session.scalar(
        select(TrainingJob).where(TrainingJob.set_id == set_id, TrainingJob.status.in_(UNFINISHED)).limit(1)
    )


def annotated_train_studies(session: Session, set_id: uuid.UUID) -> int:
    """How many studies of the landmark set have the train role and an annotation of it."""
    annotated = exists().where(Annotation.study_id == Split.study_id, Annotation.set_id == Split.set_id)
    q = select(func.count()).select_from(Split).where(Split.set_id == set_id, Split.role == "train", annotated)
    return int(session.scalar(q) or 0)


def step_submitted(session: Session, project_id: uuid.UUID, step: int) -> bool:
    """Whether step `step` of the project was ever submitted for training (or has a model version)."""
    job = exists().where(TrainingJob.project_id == project_id, TrainingJob.step == step)
    version = exists().where(ModelVersion.project_id == project_id, ModelVersion.step == step)
    return bool(session.scalar(select(job | version)))


def get_version(session: Session, clinic_id: uuid.UUID, version_id: uuid.UUID) -> ModelVersion:
    """The clinic's model version; another clinic's id answers 404 like a missing one."""
    q = select(ModelVersion).join(Project, Project.id == ModelVersion.project_id)
    version = session.scalar(q.where(ModelVersion.id == version_id, Project.clinic_id == clinic_id))
    if version is None:
        raise not_found("model version")
    return version


def list_versions(session: Session, project_id: uuid.UUID) -> list[ModelVersion]:
    q = select(ModelVersion).where(ModelVersion.project_id == project_id).order_by(ModelVersion.number)
    return list(session.scalars(q.execution_options(populate_existing=True)))


def active_version(session: Session, project_id: uuid.UUID) -> ModelVersion | None:
    """The project's active version (the one predict serves), if any; read afresh, not from the session's cache."""
    q = select(ModelVersion).where(ModelVersion.project_id == project_id, ModelVersion.status == VersionStatus.active)
    return session.scalar(q.execution_options(populate_existing=True))


def version_number(session: Session, version_id: uuid.UUID | None) -> int | None:
    if version_id is None:
        return None
    return session.scalar(select(ModelVersion.number).where(ModelVersion.id == version_id))


def version_events(session: Session, version_id: uuid.UUID) -> list[VersionEvent]:
    q = select(VersionEvent).where(VersionEvent.version_id == version_id)
    return list(session.scalars(q.order_by(VersionEvent.created_at, VersionEvent.id)))


def version_job_id(session: Session, version_id: uuid.UUID) -> uuid.UUID | None:
    return session.scalar(select(TrainingJob.id).where(TrainingJob.model_version_id == version_id).limit(1))


def activate(session: Session, version: ModelVersion, *, action: str, actor: str, reason: str) -> None:
    """Make `version` its project's only active version; the active one(s) before it become archived. Every
    change is recorded as a VersionEvent. The caller holds the project's lock and commits."""
    for previous in list_versions(session, version.project_id):
        if previous.status == VersionStatus.active and previous.id != version.id:
            previous.status = VersionStatus.archived
            session.add(
                VersionEvent(
                    version_id=previous.id,
                    action="archived",
                    actor=actor,
                    reason=f"replaced by v{version.number} ({action}): {reason}",
                )
            )
    version.status = VersionStatus.active
    session.add(VersionEvent(version_id=version.id, action=action, actor=actor, reason=reason))
