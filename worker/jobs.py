"""The training job: claim it, train the step with KAMP from the parent version, validate, gate, record.

Idempotent: the job row is claimed with a conditional update, so a task delivered twice trains once; the
version and the job's success are committed in one transaction; a failure never touches the active version.
"""

from __future__ import annotations

import enum
import logging
import time
import traceback
import uuid
from collections.abc import Callable

import torch
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from models.checkpoint import Checkpoint
from models.config import BackboneConfig, CodecConfig, RefineConfig, TrainConfig, from_dict
from models.trainer import Progress, TrainReport, train_step
from server.db.base import utcnow
from server.db.entities import (
    JobStatus,
    LandmarkSet,
    ModelVersion,
    Project,
    Split,
    TrainingJob,
)
from server.db.session import session_factory
from server.jobs.repository import UNFINISHED, Lease, LeaseLost, cancel, claim, log_line, reap
from server.settings import Settings
from server.storage import BlobStore, blob_store
from server.training import repository as versions

from . import validation
from .data import set_data
from .fairness import should_step_aside
from .lineage import promoted_version
from .progress import JobProgress, planned_stages, stage_iterations
from .state_files import claimed_state, remove_states, state_folder
from .versions import record_version, triplet_text, with_associations

log = logging.getLogger("kamp.worker")
#: Seconds between progress writes to the job row (each is also the heartbeat and the cancel check).
PROGRESS_EVERY_S = 5.0


class Outcome(enum.StrEnum):
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"
    waiting = "waiting"  # the previous step's model does not exist yet
    deferred = "deferred"  # another clinic's turn first (worker.fairness)
    skipped = "skipped"  # another delivery owns or finished the job


class JobCancelled(Exception):
    pass


class JobTimedOut(Exception):
    """The job ran past KAMP_MAX_JOB_SECONDS."""


def run_training_job(job_id: uuid.UUID, settings: Settings) -> Outcome:
    factory = session_factory(settings.resolved_database_url)
    blobs = blob_store(settings)
    with factory() as session:
        job = session.get(TrainingJob, job_id)
        if job is None:
            log.warning("job %s does not exist", job_id)
            return Outcome.skipped
        project = session.get(Project, job.project_id)
        assert project is not None
        active_at_start = versions.active_version(session, job.project_id)
        parent_version, wait = _parent(session, job, active_at_start)
        if wait:
            _seen_waiting(session, job)
            return Outcome.waiting
        if job.status == JobStatus.queued and should_step_aside(session, job, settings.max_running_jobs_per_clinic):
            _seen_waiting(session, job)
            return Outcome.deferred
        lease = _claim(session, job, settings)
        if lease is None:
            return Outcome.skipped
        try:
            if job.step > 0 and parent_version is None:
                raise RuntimeError(f"step {job.step - 1} has no trained model version; train that step first")
            started_from = active_at_start.id if active_at_start else None
            return _train(session, settings, blobs, job, lease, project, parent_version, started_from)
        except JobCancelled:
            return _finish(session, lease, JobStatus.cancelled, "cancelled at the request of an admin")
        except LeaseLost:
            session.rollback()
            log.warning("job %s was taken from this worker (reaped or claimed again); it stops here", job_id)
            return Outcome.skipped
        except JobTimedOut as exc:
            session.rollback()
            log.warning("job %s stopped: %s", job_id, exc)
            return _finish(session, lease, JobStatus.failed, str(exc))
        except Exception as exc:
            session.rollback()
            log.exception("job %s failed", job_id)
            detail = f"{type(exc).__name__}: {exc}"
            return _finish(session, lease, JobStatus.failed, detail, log_tail=traceback.format_exc(limit=5))


def _parent(session: Session, job: TrainingJob, active: ModelVersion | None) -> tuple[ModelVersion | None, bool]:
    """(the version to continue from, whether to wait). The parent is the `active` version (the project's) if it
    is of step k-1, else the newest promoted-at-some-time (active or archived) version of step k-1."""
    if job.step == 0:
        return None, False
    prev = job.step - 1
    if active is not None and active.step == prev:
        return active, False
    candidate = promoted_version(session, job.project_id, prev)
    if candidate is not None:
        return candidate, False
    pending = session.scalar(
        select(func.count()).where(
            TrainingJob.project_id == job.project_id,
            TrainingJob.step == prev,
            TrainingJob.status.in_(UNFINISHED),
        )
    )
    return None, bool(pending)


def _claim(session: Session, job: TrainingJob, settings: Settings) -> Lease | None:
    """Claim the training job unless it was asked to cancel; a resumed job keeps its first start time."""
    now = utcnow()
    lease = claim(
        session,
        TrainingJob,
        job.id,
        now,
        settings.job_stale_after_s,
        TrainingJob.cancel_requested.is_(False),
        started_at=func.coalesce(TrainingJob.started_at, now),
    )
    session.refresh(job)
    if lease is None:
        log.info("job %s not claimed (status %s)", job.id, job.status)
        if job.status == JobStatus.queued and job.cancel_requested:
            _cancel_unstarted(session, job)
        return None
    lease.log(session, f"claimed by a worker at {now.isoformat(timespec='seconds')} (lease {lease.token})")
    return lease


def _train(
    session: Session,
    settings: Settings,
    blobs: BlobStore,
    job: TrainingJob,
    lease: Lease,
    project: Project,
    parent_version: ModelVersion | None,
    active_at_start: uuid.UUID | None,
) -> Outcome:
    """Train, validate and record the step; `active_at_start`: the project's active version when the job began
    (worker.versions.record_version promotes only if it is still the active one)."""
    landmark_set = session.get(LandmarkSet, job.set_id)
    assert landmark_set is not None
    # The service's precision unless the project's training settings or the submission name one.
    fields, triplet_source = with_associations({"precision": settings.precision, **job.config}, job, landmark_set)
    config = from_dict(TrainConfig, fields)
    tracker = _job_progress(session, job, project, parent_version, config)
    progress = _progress_writer(session, settings, job, lease, tracker)
    progress(Progress("preparing", 0, 0, {}, 0.0, 0.0))  # the whole job's first estimate, before any loading
    parent = Checkpoint.from_bytes(blobs.get(parent_version.checkpoint_blob)) if parent_version else None
    number = parent_version.number if parent_version else None
    checkpoint, train_report = _fit(
        session, settings, blobs, job, lease, project, parent, landmark_set, config, progress, number
    )
    if train_report.triplets:
        lease.log(session, f"KA-Net triplets ({triplet_source}): {triplet_text(train_report.triplets)}")
    key = blobs.put(checkpoint.to_bytes())
    lease.log(
        session,
        f"trained in {train_report.total_seconds:.0f} s (KA-Net {train_report.kanet_seconds:.0f} s, "
        f"local stage {train_report.refine_seconds:.0f} s; "
        f"{train_report.device}, {train_report.precision}, "
        f"{torch.get_num_threads()} torch threads); checkpoint {key[:12]}",
    )
    steps, gate, passes, reason = _validate(session, settings, blobs, job, project, checkpoint, parent, progress)
    report = train_report.to_dict() | {"stage_iterations": stage_iterations(config)}
    if train_report.triplets:
        report["triplet_source"] = triplet_source
    record_version(
        session, job, lease, project, parent_version, key, checkpoint, report,
        validation.report(steps) | {"gate": gate}, passes, reason, active_at_start=active_at_start,
    )  # fmt: skip
    remove_states(state_folder(settings.data_dir), job.set_id)
    return Outcome.succeeded


def _fit(
    session: Session,
    settings: Settings,
    blobs: BlobStore,
    job: TrainingJob,
    lease: Lease,
    project: Project,
    parent: Checkpoint | None,
    landmark_set: LandmarkSet,
    config: TrainConfig,
    progress: Callable[[Progress], None],
    parent_number: int | None,
) -> tuple[Checkpoint, TrainReport]:
    """The step trained on its own training studies (IKL: earlier steps' images may be gone), resumable from
    the set's training-state file (this claim's own, worker.state_files)."""
    data = set_data(session, blobs, landmark_set, "train")
    if len(data) == 0:
        raise RuntimeError(f"landmark set {job.step} has no annotated training study")
    lease.log(
        session,
        f"training step {job.step} with {job.strategy} on {len(data)} studies"
        + (f" from version {parent_number}" if parent_number else " from scratch"),
    )
    return train_step(
        parent,
        data,
        job.strategy,
        config,
        backbone=BackboneConfig(
            name=project.backbone, last_relu=project.backbone_last_relu, head_channels=project.head_channels
        ),
        codec=CodecConfig(input_size=(project.input_width, project.input_height)),
        refine=None if project.local_stage is None else from_dict(RefineConfig, project.local_stage),
        names={lm.code: lm.name for lm in landmark_set.landmarks},
        progress=progress,
        state_path=claimed_state(state_folder(settings.data_dir), job.set_id, job.id, lease.token),
    )


def _validate(
    session: Session,
    settings: Settings,
    blobs: BlobStore,
    job: TrainingJob,
    project: Project,
    checkpoint: Checkpoint,
    parent: Checkpoint | None,
    progress: Callable[[Progress], None],
) -> tuple[list[validation.StepValidation], dict[str, float], bool, str]:
    """The new version and its parent on every step's validation studies so far, and the gate's decision:
    (per step, the gate's settings, passes, reason)."""
    val_sets = {s.step: set_data(session, blobs, s, "val") for s in project.landmark_sets if s.step <= job.step}
    steps = validation.validate(
        checkpoint,
        parent,
        dict(sorted(val_sets.items())),
        settings.precision,
        on_step=lambda done, total: progress(Progress("validation", done, total, {}, 0.0, 0.0)),
    )
    gate = {
        "max_new_mre": settings.gate_max_new_mre,
        "old_tolerance": settings.gate_old_tolerance,
        **(project.gate or {}),
    }
    passes, reason = validation.gate(steps, job.step, gate["max_new_mre"], gate["old_tolerance"])
    return steps, gate, passes, reason


def _progress_writer(
    session: Session, settings: Settings, job: TrainingJob, lease: Lease, tracker: JobProgress
) -> Callable[[Progress], None]:
    """The trainer's progress callback: the job's progress (its stage's and the whole job's fraction and ETA,
    the loss curves) written every PROGRESS_EVERY_S and at each stage's end; each write is also the heartbeat,
    the lease check, the wall-time limit and the cancel check."""
    started = time.monotonic()
    last = [-PROGRESS_EVERY_S]

    def progress(p: Progress) -> None:
        overall = tracker.update(p.stage, p.iteration, p.total, p.losses)
        if time.monotonic() - last[0] < PROGRESS_EVERY_S and p.iteration < p.total:
            return
        if time.monotonic() - started > settings.max_job_seconds:
            raise JobTimedOut(
                f"the job ran longer than the limit of {settings.max_job_seconds} s (KAMP_MAX_JOB_SECONDS); "
                "retry to resume it from where it stopped"
            )
        last[0] = time.monotonic()
        values = {
            "stage": p.stage,
            "iteration": p.iteration,
            "total": p.total,
            "eta_s": round(p.eta_s, 1),
            "losses": {k: round(v, 5) for k, v in p.losses.items()},
        }
        if not lease.beat(session, progress=values | overall):
            raise LeaseLost
        if session.scalar(select(TrainingJob.cancel_requested).where(TrainingJob.id == job.id)):
            raise JobCancelled

    return progress


def _job_progress(
    session: Session, job: TrainingJob, project: Project, parent_version: ModelVersion | None, config: TrainConfig
) -> JobProgress:
    """The job's stages, priced by the parent version's measured rates when it has them."""
    last_report = (parent_version.hyperparameters or {}).get("train_report") if parent_version else None
    stages = planned_stages(
        config,
        job.strategy,
        parent_version is not None,
        project.local_stage is not None,
        _validation_studies(session, project, job.step),
        last_report,
    )
    return JobProgress(stages)


def _validation_studies(session: Session, project: Project, step: int) -> int:
    """How many validation studies the steps up to `step` have (what a job's validation will predict)."""
    sets = [s.id for s in project.landmark_sets if s.step <= step]
    return session.scalar(select(func.count()).where(Split.set_id.in_(sets), Split.role == "val")) or 0


def _finish(session: Session, lease: Lease, status: JobStatus, error: str, log_tail: str = "") -> Outcome:
    """End the job as `status` if this worker still holds it; the outcome to report."""
    values = {"error": error} if status == JobStatus.failed else {}
    line = f"{status.value}: {error}" + (f"\n{log_tail.rstrip()}" if log_tail else "")
    if not lease.finish(session, status, log=log_line(line), **values):
        return Outcome.skipped
    return Outcome.cancelled if status == JobStatus.cancelled else Outcome.failed


def _seen_waiting(session: Session, job: TrainingJob) -> None:
    """A queued job's message was handled (the job waits for the previous step): not lost (worker.requeue)."""
    session.execute(
        update(TrainingJob)
        .where(TrainingJob.id == job.id, TrainingJob.status == JobStatus.queued)
        .values(heartbeat_at=utcnow())
    )
    session.commit()


def _cancel_unstarted(session: Session, job: TrainingJob) -> None:
    cancel(session, TrainingJob, job.id, only=(JobStatus.queued,), line="cancelled: cancelled before it started")
    session.commit()


def reap_stale_jobs(settings: Settings) -> list[uuid.UUID]:
    """Mark running jobs whose worker stopped beating as failed, with the reason (cancelled, where an admin had
    asked for it); their training state stays on disk, so a retry resumes where they stopped. Returns the jobs
    reaped."""
    with session_factory(settings.resolved_database_url)() as session:
        return reap(session, TrainingJob, settings.job_stale_after_s, "retry to resume")
