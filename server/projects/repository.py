"""Queries of projects and landmark sets, always scoped to one clinic."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..db.entities import Landmark, LandmarkSet, Project
from ..problems import not_found


def get_project(session: Session, clinic_id: uuid.UUID, project_id: uuid.UUID) -> Project:
    """The clinic's project; another clinic's id answers 404 like a missing one."""
    project = session.get(Project, project_id)
    if project is None or project.clinic_id != clinic_id:
        raise not_found("project")
    return project


def list_projects(session: Session, clinic_id: uuid.UUID) -> list[Project]:
    return list(session.scalars(select(Project).where(Project.clinic_id == clinic_id).order_by(Project.created_at)))


def get_set(session: Session, project: Project, step: int) -> LandmarkSet:
    row = session.scalar(select(LandmarkSet).where(LandmarkSet.project_id == project.id, LandmarkSet.step == step))
    if row is None:
        raise not_found(f"landmark set {step} of this project")
    return row


def next_step(session: Session, project: Project) -> int:
    return int(session.scalar(select(func.count()).where(LandmarkSet.project_id == project.id)) or 0)


def project_codes(session: Session, project: Project) -> set[str]:
    return set(session.scalars(select(Landmark.code).where(Landmark.project_id == project.id)))
