"""Row locks that serialise check-then-write sequences (a submission, a promotion, a worker recording a version)
on both databases the service runs on."""

from __future__ import annotations

import uuid

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from .entities import Project


def hold_project(session: Session, project_id: uuid.UUID, clinic_id: uuid.UUID | None = None) -> None:
    """Hold the project's row until the transaction ends; a second holder waits for the first to commit.

    PostgreSQL: SELECT ... FOR UPDATE. SQLite ignores FOR UPDATE, and its driver begins a transaction only at the
    first write, so two sessions could both read "no job yet" and both insert one: there a no-op UPDATE of the
    row takes the database's one write lock now, before the checks read anything. `clinic_id`: only that
    clinic's project (another's id locks nothing)."""
    where = [Project.id == project_id] + ([Project.clinic_id == clinic_id] if clinic_id is not None else [])
    if session.get_bind().dialect.name == "sqlite":
        session.execute(update(Project).where(*where).values(id=Project.id))
    else:
        session.execute(select(Project.id).where(*where).with_for_update())
