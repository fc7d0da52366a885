"""The rules every job follows, training or prediction, written once: finding a clinic's job, the claim and its
lease, the progress write that is also the heartbeat, the end, a cancel and the reaper's conditional fail. Each
kind keeps its own rules beside it (server.training, server.predict, worker.jobs, worker.predict_jobs).

Fencing: every claim takes a new lease number on the job row; every later write of the worker holding it
(progress and heartbeat, log lines, its version, its end) is conditional on the row still running under that
number. A worker that lost its job (paused past the reaper, or taken over by another delivery of a stale job)
writes nothing, and stops at its next write: a job never goes from failed to succeeded, and a step never gets
two versions from two workers.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.orm import Session

from ..db.base import utcnow
from ..db.entities import JobStatus, PredictionJob, Project, TrainingJob
from ..problems import not_found

JobEntity = type[TrainingJob] | type[PredictionJob]
Job = TypeVar("Job", TrainingJob, PredictionJob)
#: A job in these states has not ended: it may still be claimed, cancelled or reaped.
UNFINISHED = (JobStatus.queued, JobStatus.running)


def get_job(
    session: Session,
    entity: type[Job],
    job_id: uuid.UUID,
    *,
    clinic_id: uuid.UUID | None,
    project_id: uuid.UUID | None = None,
    for_update: bool = False,
) -> Job:
    """The clinic's job (of `project_id`, when given); another clinic's or project's id answers 404 like a missing
    one. `clinic_id` None finds any clinic's (the system key's operator). `for_update`: the row locked and
    re-read until the transaction ends."""
    q = select(entity).join(Project, Project.id == entity.project_id).where(entity.id == job_id)
    if clinic_id is not None:
        q = q.where(Project.clinic_id == clinic_id)
    if project_id is not None:
        q = q.where(entity.project_id == project_id)
    if for_update:
        q = q.with_for_update(of=entity).execution_options(populate_existing=True)
    job = session.scalar(q)
    if job is None:
        raise not_found("training job" if entity is TrainingJob else "prediction job")
    return job


def list_jobs(session: Session, entity: type[Job], project_id: uuid.UUID, limit: int) -> list[Job]:
    """The project's jobs of one kind, newest first."""
    q = select(entity).where(entity.project_id == project_id)
    return list(session.scalars(q.order_by(entity.created_at.desc(), entity.id.desc()).limit(limit)))


def log_line(line: str) -> ColumnElement[str]:
    """`line` appended to a training job's log, in SQL (the row's log as it is then, not as this session read it;
    prediction jobs keep no log)."""
    return func.coalesce(TrainingJob.log, "") + line + "\n"


def ended(status: JobStatus, **values: object) -> dict[str, object]:
    """The columns of a job that ends now as `status`, with `values` (the kind's own, an error, a log line)."""
    return {"status": status, "finished_at": utcnow(), **values}


class LeaseLost(Exception):
    """This worker no longer holds the job: it must stop without writing anything more."""


@dataclass(frozen=True)
class Lease:
    """A worker's hold on a claimed job: every write through it is conditional on the hold."""

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

    def beat(self, session: Session, **progress: object) -> bool:
        """A progress write (`progress`: the kind's own columns), which is also the heartbeat; committed, as its
        own short transaction. False if the lease was lost."""
        return self.write(session, **progress, heartbeat_at=utcnow())

    def log(self, session: Session, line: str, **values: object) -> None:
        """Append `line` to a training job's log (with `values`); LeaseLost if the job is no longer ours."""
        assert self.entity is TrainingJob, "only training jobs keep a log"
        if not self.write(session, **values, log=log_line(line)):
            raise LeaseLost

    def finish(self, session: Session, status: JobStatus, **values: object) -> bool:
        """End the job as `status` (with `values`) if this worker still holds it; committed. False: the lease was
        lost, nothing was written. (Within a larger transaction: `update(session, **ended(...))`.)"""
        return self.write(session, **ended(status, **values))

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


def cancel(
    session: Session, entity: JobEntity, job_id: uuid.UUID, *, only: tuple[JobStatus, ...], line: str | None = None
) -> bool:
    """Cancel the job now if its status is one of `only` (a conditional UPDATE: a worker may claim or end it
    meanwhile), with `line` appended to a training job's log; not committed, and the session's copy of the row
    is not refreshed. Whether it was cancelled."""
    values = ended(JobStatus.cancelled) | ({} if line is None else {"log": log_line(line)})
    result = session.execute(
        update(entity)
        .where(entity.id == job_id, entity.status.in_(only))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1  # type: ignore[attr-defined]


def fail_if_still_stale(
    session: Session, entity: JobEntity, job_id: uuid.UUID, beat: datetime | None, stale: datetime, advice: str
) -> bool:
    """Fail the job only if it is still running without a heartbeat since `stale` (a conditional UPDATE: a worker
    that beat after the reaper looked keeps its job), the error ending with `advice` (and in a training job's
    log). Whether it was failed; the caller commits."""
    when = beat.isoformat(timespec="seconds") if beat else "never"
    still_stale = (entity.id == job_id) & (entity.status == JobStatus.running) & (entity.heartbeat_at < stale)
    if entity is TrainingJob:  # one an admin asked to cancel ends as they asked: no claim would ever resume it
        note = f"cancelled at the request of an admin; its worker had stopped responding (last heartbeat {when})"
        asked = still_stale & TrainingJob.cancel_requested.is_(True)
        if _update(session, entity, asked, ended(JobStatus.cancelled, error=note, log=log_line(note))):
            return True
    error = f"the worker stopped responding (last heartbeat {when}); {advice}"
    values = ended(JobStatus.failed, error=error)
    if entity is TrainingJob:
        values["log"] = log_line(f"failed: {error}")
    return _update(session, entity, still_stale, values)


def _update(session: Session, entity: JobEntity, where: ColumnElement[bool], values: dict[str, object]) -> bool:
    """A conditional UPDATE of job rows; whether it changed one."""
    result = session.execute(update(entity).where(where).values(**values).execution_options(synchronize_session=False))
    return bool(result.rowcount)  # type: ignore[attr-defined]


def reap(session: Session, entity: JobEntity, stale_after_s: int, advice: str) -> list[uuid.UUID]:
    """Fail every running job of the kind whose worker has not beaten for `stale_after_s`, each committed on its
    own (see fail_if_still_stale); the jobs failed."""
    stale = utcnow() - timedelta(seconds=stale_after_s)
    running = session.execute(
        select(entity.id, entity.heartbeat_at).where(entity.status == JobStatus.running, entity.heartbeat_at < stale)
    ).all()
    reaped = []
    for job_id, beat in running:
        if fail_if_still_stale(session, entity, job_id, beat, stale, advice):
            reaped.append(job_id)
        session.commit()
    return reaped
