"""Queries of prediction jobs, always scoped to one clinic's project."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..db.entities import PredictionJob, Project
from ..problems import not_found


def get_job(session: Session, clinic_id: uuid.UUID, project_id: uuid.UUID, job_id: uuid.UUID) -> PredictionJob:
    """The job of the clinic's project; another clinic's or project's id answers 404 like a missing one."""
    q = select(PredictionJob).join(Project, Project.id == PredictionJob.project_id)
    q = q.where(PredictionJob.id == job_id, PredictionJob.project_id == project_id, Project.clinic_id == clinic_id)
    job = session.scalar(q)
    if job is None:
        raise not_found("prediction job")
    return job


def list_jobs(session: Session, project_id: uuid.UUID, limit: int) -> list[PredictionJob]:
    """The project's prediction jobs, newest first."""
    q = select(PredictionJob).where(PredictionJob.project_id == project_id)
    return list(session.scalars(q.order_by(PredictionJob.created_at.desc(), PredictionJob.id.desc()).limit(limit)))
