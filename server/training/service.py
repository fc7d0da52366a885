"""The training domain's rules, in one place for the routes (and any other caller): submitting, retrying and
cancelling a step's training job, and promoting or rolling back a version. The worker's gate promotes through
the same `repository.activate`. Each function leaves the session to its caller's one commit (dispatch, for new
jobs: the job must be committed before it is enqueued) except where it says it commits."""

from __future__ import annotations

import uuid
from typing import Literal

from sqlalchemy.orm import Session

from models.config import merge_overrides
from models.registry import ASSOCIATING, switch_validated

from ..db.entities import JobStatus, ModelVersion, Project, Role, TrainingJob, VersionStatus
from ..jobs import repository as jobs
from ..problems import Problem
from ..projects import repository as projects
from ..settings import Settings
from . import repository as repo
from .bounds import check_bounds
from .config import invalid_training, validate_training
from .schemas import SubmitIn


def submit_job(
    session: Session, settings: Settings, clinic_id: uuid.UUID, project_id: uuid.UUID, step: int, body: SubmitIn,
    created_by: uuid.UUID,
) -> TrainingJob:  # fmt: skip
    """A new queued job for landmark set `step` (added, not committed). Steps train in order: step k may be
    queued while step k-1 is still queued or running (the worker waits for it), not before k-1 was submitted."""
    project = repo.lock_project(session, clinic_id, project_id)
    landmark_set = projects.get_set(session, project, step)
    strategy = body.strategy or project.strategy
    stored = project.training or {}
    if strategy != project.strategy:  # the other strategy's validated settings, not the project's strategy's
        stored = switch_validated(stored, project.strategy, strategy, project.modality)
    try:
        config = validate_training(merge_overrides(stored, body.training or {}))
        check_bounds(config, settings.training_bounds)
    except ValueError as exc:
        raise invalid_training(exc) from exc
    refuse_second_job(session, landmark_set.id, step)
    studies = repo.annotated_train_studies(session, landmark_set.id)
    if not studies:
        raise Problem(
            422,
            f"landmark set {step} has no annotated study with the train role yet; annotate studies first",
            slug="no-training-data",
        )
    if step > 0 and not repo.step_submitted(session, project.id, step - 1):
        raise Problem(
            409,
            f"landmark set {step - 1} was never submitted for training; steps are trained in order",
            slug="step-out-of-order",
        )
    log = f"submitted: {body.reason}\n" if body.reason else ""
    if step > 0 and studies < settings.few_train_studies:
        log += few_studies_warning(step, studies, settings.few_train_studies, strategy)
    job = new_job(project, landmark_set.id, step, strategy, config, attempt=1, log=log, created_by=created_by)
    session.add(job)
    return job


def few_studies_warning(step: int, studies: int, enough: int, strategy: str) -> str:
    """The job log's line for an incremental step trained from fewer annotated studies than `enough`; for a
    strategy with KA-Net (kamp), a second line: it learns its association from these studies alone."""
    line = (
        f"warning: landmark set {step} has {studies} annotated training {'study' if studies == 1 else 'studies'} "
        f"(fewer than {enough}): steps trained from so few moved the earlier landmarks in the benchmark "
        "(docs/benchmarks.md, low-shot profiles). The promotion gate decides whether the version becomes active; "
        "annotating more studies first is safer.\n"
    )
    if strategy in ASSOCIATING:
        line += (
            f"warning: {strategy} fits KA-Net's association of old and new landmarks to these studies alone; from one "
            "study a step it broke the landmarks it associated in the benchmark, where kamp_ksd_only, which has no "
            "KA-Net, did not.\n"
        )
    return line


def retry_job(
    session: Session, settings: Settings, clinic_id: uuid.UUID, job_id: uuid.UUID, created_by: uuid.UUID
) -> TrainingJob:
    """A failed or cancelled job again, as a new queued job (attempt + 1, same strategy and configuration;
    added, not committed). Its training state lets it resume. 422 if the service's bounds, tightened since,
    no longer allow its configuration."""
    old = jobs.get_job(session, TrainingJob, job_id, clinic_id=clinic_id)
    project = repo.lock_project(session, clinic_id, old.project_id)
    session.refresh(old)
    if old.status not in (JobStatus.failed, JobStatus.cancelled):
        raise Problem(
            409, f"only a failed or cancelled job can be retried; this one is {old.status.value}", slug="not-retryable"
        )
    refuse_second_job(session, old.set_id, old.step)
    try:
        check_bounds(old.config, settings.training_bounds)
    except ValueError as exc:
        raise invalid_training(exc, " (the bounds changed since the job was submitted)") from exc
    job = new_job(
        project, old.set_id, old.step, old.strategy, dict(old.config),
        attempt=old.attempt + 1, log=f"retry of job {old.id} (attempt {old.attempt})\n", created_by=created_by,
    )  # fmt: skip
    session.add(job)
    return job


def cancel_job(
    session: Session, clinic_id: uuid.UUID | None, job_id: uuid.UUID, role: Role, key_name: str
) -> tuple[TrainingJob, bool]:
    """Cancel a queued job at once, or ask a running one to stop (it ends cancelled when its worker sees it);
    committed. (the job, whether it is still running). A finished job: 409. `clinic_id` None: any clinic's."""
    job = jobs.get_job(session, TrainingJob, job_id, clinic_id=clinic_id, for_update=True)
    line = f"cancel requested with the {role.value} key {key_name!r}"
    if not jobs.cancel(session, TrainingJob, job.id, only=(JobStatus.queued,), line=line):
        session.refresh(job)  # not queued (any more: SQLite has no row lock): running, or finished
        if job.status != JobStatus.running:
            raise Problem(409, f"the job has finished ({job.status.value}); nothing to cancel", slug="job-finished")
        job.log = (job.log or "") + line + "\n"
        job.cancel_requested = True
    session.commit()
    session.refresh(job)  # a queued job was cancelled by an UPDATE of the row, not of this copy
    return job, job.status == JobStatus.running


def promote_version(
    session: Session, clinic_id: uuid.UUID, version_id: uuid.UUID, actor: str, reason: str
) -> ModelVersion:
    """Make the version the project's only active one (the active one archived, both recorded); committed. A
    candidate, a version the gate rejected (a recorded human override) or an archived one may be promoted."""
    version = locked_version(session, clinic_id, version_id)
    if version.status == VersionStatus.active:
        raise Problem(409, f"v{version.number} is the active version already", slug="already-active")
    repo.activate(session, version, action="promoted", actor=actor, reason=reason)
    session.commit()
    return version


def rollback_version(
    session: Session, clinic_id: uuid.UUID, version_id: uuid.UUID, actor: str, reason: str
) -> ModelVersion:
    """Make an earlier, archived version active again (the active one archived, both recorded); committed."""
    version = locked_version(session, clinic_id, version_id)
    if version.status != VersionStatus.archived:
        raise Problem(
            409,
            f"only an archived version can be rolled back to; v{version.number} is {version.status.value}",
            slug="not-archived",
        )
    current = repo.active_version(session, version.project_id)
    if decision(version, current) != "rollback":
        assert current is not None  # with none active, an archived version is always one to roll back to
        raise Problem(
            409,
            f"v{version.number} is newer than the active v{current.number}; promote it instead of rolling back",
            slug="not-earlier",
        )
    repo.activate(session, version, action="rolled_back", actor=actor, reason=reason)
    session.commit()
    return version


def decision(version: ModelVersion, active: ModelVersion | None) -> Literal["promote", "rollback"] | None:
    """What an admin can do with `version` while `active` is the project's active version: nothing for the active
    one, roll back to an archived version older than the active one (or when none is active), else promote
    (a candidate, a rejected version, or an archived one newer than the active)."""
    if version.status == VersionStatus.active:
        return None
    if version.status == VersionStatus.archived and (active is None or version.number < active.number):
        return "rollback"
    return "promote"


def locked_version(session: Session, clinic_id: uuid.UUID, version_id: uuid.UUID) -> ModelVersion:
    """The version, re-read after its project's row is locked (so its status is the committed one)."""
    version = repo.get_version(session, clinic_id, version_id)
    repo.lock_project(session, clinic_id, version.project_id)
    session.refresh(version)
    return version


def new_job(
    project: Project, set_id: uuid.UUID, step: int, strategy: str, config: dict, **fields: object
) -> TrainingJob:
    return TrainingJob(
        project_id=project.id,
        set_id=set_id,
        step=step,
        status=JobStatus.queued,
        strategy=strategy,
        config=config,
        progress={},
        cancel_requested=False,
        **fields,
    )


def refuse_second_job(session: Session, set_id: uuid.UUID, step: int) -> None:
    """409 while the set has a queued or running job."""
    running = repo.active_job(session, set_id)
    if running is not None:
        raise Problem(
            409,
            f"landmark set {step} has a {running.status.value} training job already ({running.id}); "
            "cancel it or wait for it",
            slug="job-in-progress",
            extra={"job_id": str(running.id)},
        )
