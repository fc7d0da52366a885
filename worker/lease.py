"""Fencing of a claimed job. Every claim takes a new lease number on the job row; every later write of the worker
holding it (progress and heartbeat, log lines, its version, its end) is conditional on the row still running
under that number. A worker that lost its job (paused past the reaper, or taken over by another delivery of a
stale job) writes nothing, and stops at its next write: a job never goes from failed to succeeded, and a step
never gets two versions from two workers.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.orm import Session

from server.db.entities import JobStatus, PredictionJob, TrainingJob

JobEntity = type[TrainingJob] | type[PredictionJob]


class LeaseLost(Exception):
    """This worker no longer holds the job: it must stop without writing anything more."""


@dataclass(frozen=True)
class Lease:
    entity: JobEntity
    job_id: uuid.UUID
    token: int

    def held(self) -> ColumnElement[bool]:
        e = self.entity
        return (e.id == self.job_id) & (e.status == JobStatus.running) & (e.lease == self.token)

    def update(self, session: Session, **values: object) -> bool:
        """In the current transaction: update the job row with `values` if the lease still holds; False if it
        was lost."""
        result = session.execute(
            update(self.entity).where(self.held()).values(**values).execution_options(synchronize_session=False)
        )
        return result.rowcount == 1  # type: ignore[attr-defined]

    def write(self, session: Session, **values: object) -> bool:
        """`update`, committed."""
        written = self.update(session, **values)
        session.commit()
        return written

    def log(self, session: Session, line: str, **values: object) -> None:
        """Append `line` to a training job's log (with `values`); LeaseLost if the job is no longer ours."""
        assert self.entity is TrainingJob, "only training jobs keep a log"
        values["log"] = func.coalesce(TrainingJob.log, "") + line + "\n"
        if not self.write(session, **values):
            raise LeaseLost

    def lock(self, session: Session) -> None:
        """In the current transaction: lock the job row; LeaseLost (rolled back) if the lease no longer holds."""
        if session.scalar(select(self.entity.id).where(self.held()).with_for_update()) is None:
            session.rollback()
            raise LeaseLost


def claim(
    session: Session,
    entity: JobEntity,
    job_id: uuid.UUID,
    now: datetime,
    stale_after_s: int,
    *conditions: ColumnElement[bool],
    **values: object,
) -> Lease | None:
    """Conditional claim of a job row, for either kind of job: queued -> running, or a running job whose worker
    stopped beating (heartbeat older than `stale_after_s`), narrowed by `conditions`; sets the heartbeat to `now`
    and `values`, and takes the next lease. One winner however many workers try at once (a single UPDATE ...
    WHERE); committed. None: not claimed."""
    stale = now - timedelta(seconds=stale_after_s)
    claimable = (entity.status == JobStatus.queued) | (
        (entity.status == JobStatus.running) & (entity.heartbeat_at < stale)
    )
    result = session.execute(
        update(entity)
        .where(entity.id == job_id, claimable, *conditions)
        .values(status=JobStatus.running, heartbeat_at=now, lease=entity.lease + 1, **values)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return None
    # Just claimed with a fresh heartbeat: nobody else can claim it before this read.
    token = session.scalar(select(entity.lease).where(entity.id == job_id))
    return Lease(entity, job_id, int(token or 0))
