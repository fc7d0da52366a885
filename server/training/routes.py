"""/v1/.../jobs (submit, follow, cancel, retry) and /v1/.../versions (history, promote, roll back, download)."""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request, Response
from fastapi.responses import FileResponse
from sqlalchemy.orm import Session

from ..auth import AdminDep, Principal, ReaderDep, require
from ..db.entities import ModelVersion, Project, Role, TrainingJob, VersionStatus
from ..deps import SessionDep, SettingsDep
from ..jobs import repository as jobs
from ..jobs.params import ListLimit
from ..jobs.schemas import job_fields
from ..problems import Problem, not_found
from ..projects import repository as projects
from ..projects.params import StepPath
from ..storage import blob_store
from . import repository as repo
from . import service
from .queue import dispatch
from .schemas import (
    LOG_TAIL_LINES,
    EventOut,
    JobOut,
    ReasonIn,
    SubmitIn,
    VersionDetail,
    VersionHistory,
    VersionOut,
    VersionSummary,
)

#: Who may cancel a job: its clinic's admin, or the system key (any clinic's).
CancelDep = Annotated[Principal, Depends(require(Role.system, Role.admin))]
router = APIRouter()

_QUEUE_DOWN: dict[int | str, dict[str, Any]] = {
    503: {"description": "the job queue could not be reached; the job is marked failed"}
}


def _tail(log: str, lines: int = LOG_TAIL_LINES) -> str:
    return "\n".join(log.splitlines()[-lines:])


def _without_tracebacks(log: str) -> str:
    """The log with each Python traceback (its frames name the server's files) cut to a line saying so; the
    failure's own line ("failed: ...") stays above it."""
    out: list[str] = []
    inside = False
    for line in log.splitlines():
        if line.startswith("Traceback (most recent call last):"):
            inside = True
            out.append("(traceback: in the log admins read)")
        elif inside and (line.startswith(" ") or not line.strip()):
            continue
        elif inside:
            inside = False  # the exception's own line, already in the failure's line: the traceback's last
        else:
            out.append(line)
    return "\n".join(out)


def _job_out(job: TrainingJob, principal: Principal | None = None) -> JobOut:
    """The job as `principal` may read it: admins (and the system key) get the whole log's tail, an annotator's
    has no tracebacks."""
    log = job.log or ""
    if principal is not None and principal.role not in (Role.admin, Role.system):
        log = _without_tracebacks(log)
    return JobOut(
        **job_fields(job),
        set_id=job.set_id,
        step=job.step,
        strategy=job.strategy,
        config=job.config,
        progress=job.progress,
        log=_tail(log),
        attempt=job.attempt,
        cancel_requested=job.cancel_requested,
        model_version_id=job.model_version_id,
        celery_task_id=job.celery_task_id,
    )


def _summary(report: object) -> VersionSummary:
    steps = report.get("steps") if isinstance(report, dict) else None
    return VersionSummary(steps=[s for s in steps if isinstance(s, dict)] if isinstance(steps, list) else [])


def _version_fields(version: ModelVersion, parent_number: int | None, active: ModelVersion | None) -> dict:
    return {
        "id": version.id,
        "number": version.number,
        "step": version.step,
        "parent_id": version.parent_id,
        "parent_number": parent_number,
        "status": version.status.value,
        "strategy": version.strategy,
        "checkpoint_sha256": version.checkpoint_sha256,
        "created_at": version.created_at,
        "reason": version.reason,
        "summary": _summary(version.report),
        "decision": service.decision(version, active),
    }


def _version_detail(session: Session, version: ModelVersion) -> VersionDetail:
    return VersionDetail(
        **_version_fields(
            version, repo.version_number(session, version.parent_id), repo.active_version(session, version.project_id)
        ),
        project_id=version.project_id,
        job_id=repo.version_job_id(session, version.id),
        hyperparameters=version.hyperparameters,
        report=version.report,
        events=[EventOut.model_validate(e) for e in repo.version_events(session, version.id)],
    )


def _dispatch(request: Request, session: Session, job: TrainingJob) -> None:
    dispatch(session, job, request.app.state.enqueue, retry="retry it later")


@router.post(
    "/v1/projects/{project_id}/landmark-sets/{step}/submit",
    status_code=202,
    response_model=JobOut,
    tags=["jobs"],
    responses=_QUEUE_DOWN,
)
def submit(
    request: Request,
    project_id: uuid.UUID,
    step: StepPath,
    session: SessionDep,
    settings: SettingsDep,
    principal: AdminDep,
    body: Annotated[SubmitIn | None, Body()] = None,
) -> JobOut:
    """Queue the training of landmark set `step`: a new model version that learns the set's landmarks and keeps
    the earlier ones. Steps train in order: step k may be queued while step k-1 is still queued or running
    (the worker waits for it), but not before step k-1 was ever submitted."""
    job = service.submit_job(
        session, settings, principal.clinic(), project_id, step, body or SubmitIn(), principal.key_id
    )
    _dispatch(request, session, job)
    return _job_out(job)


@router.get("/v1/jobs/{job_id}", response_model=JobOut, tags=["jobs"])
def get_job(job_id: uuid.UUID, session: SessionDep, principal: ReaderDep) -> JobOut:
    """A job's status, progress and the tail of its log."""
    return _job_out(jobs.get_job(session, TrainingJob, job_id, clinic_id=principal.clinic()), principal)


@router.get("/v1/projects/{project_id}/jobs", response_model=list[JobOut], tags=["jobs"])
def list_jobs(
    project_id: uuid.UUID,
    session: SessionDep,
    principal: ReaderDep,
    limit: ListLimit = 100,
) -> list[JobOut]:
    """The project's jobs, newest first."""
    project = projects.get_project(session, principal.clinic(), project_id)
    return [_job_out(j, principal) for j in jobs.list_jobs(session, TrainingJob, project.id, limit)]


@router.post(
    "/v1/jobs/{job_id}/cancel",
    response_model=JobOut,
    tags=["jobs"],
    responses={202: {"model": JobOut, "description": "the job is running: it stops at its next progress report"}},
)
def cancel_job(job_id: uuid.UUID, response: Response, session: SessionDep, principal: CancelDep) -> JobOut:
    """A queued job is cancelled at once (200); a running one is asked to stop (202, cancel_requested) and
    ends cancelled when the worker sees it. A finished job answers 409. A clinic's admin cancels its own jobs;
    the system key, any clinic's (an operator must be able to stop a job that holds the shared workers)."""
    clinic = None if principal.role == Role.system else principal.clinic()
    job, running = service.cancel_job(session, clinic, job_id, principal.role, principal.name)
    if running:
        response.status_code = 202
    return _job_out(job)


@router.post("/v1/jobs/{job_id}/retry", status_code=202, response_model=JobOut, tags=["jobs"], responses=_QUEUE_DOWN)
def retry_job(
    request: Request, job_id: uuid.UUID, session: SessionDep, settings: SettingsDep, principal: AdminDep
) -> JobOut:
    """A failed or cancelled job again, as a new job (attempt + 1) with the same strategy and configuration."""
    job = service.retry_job(session, settings, principal.clinic(), job_id, principal.key_id)
    _dispatch(request, session, job)
    return _job_out(job)


@router.get("/v1/projects/{project_id}/versions", response_model=VersionHistory, tags=["versions"])
def version_history(project_id: uuid.UUID, session: SessionDep, principal: ReaderDep) -> VersionHistory:
    """Every model version of the project, oldest first, with its lineage and validation summary."""
    project = projects.get_project(session, principal.clinic(), project_id)
    versions = repo.list_versions(session, project.id)
    numbers = {v.id: v.number for v in versions}
    active = next((v for v in versions if v.status == VersionStatus.active), None)
    return VersionHistory(
        active_version_id=active.id if active else None,
        versions=[
            VersionOut(**_version_fields(v, numbers.get(v.parent_id) if v.parent_id else None, active))
            for v in versions
        ],
    )


@router.get("/v1/versions/{version_id}", response_model=VersionDetail, tags=["versions"])
def get_version(version_id: uuid.UUID, session: SessionDep, principal: ReaderDep) -> VersionDetail:
    """A version with its full validation report, hyper-parameters and audit trail."""
    return _version_detail(session, repo.get_version(session, principal.clinic(), version_id))


@router.post("/v1/versions/{version_id}/promote", response_model=VersionDetail, tags=["versions"])
def promote(version_id: uuid.UUID, body: ReasonIn, session: SessionDep, principal: AdminDep) -> VersionDetail:
    """Make this version the project's only active one (the active one before it is archived). A candidate, a
    version the gate rejected (a recorded human override) or an archived one may be promoted."""
    version = service.promote_version(session, principal.clinic(), version_id, str(principal.key_id), body.reason)
    return _version_detail(session, version)


@router.post("/v1/versions/{version_id}/rollback", response_model=VersionDetail, tags=["versions"])
def rollback(version_id: uuid.UUID, body: ReasonIn, session: SessionDep, principal: AdminDep) -> VersionDetail:
    """Make an earlier, archived version active again; the active version is archived."""
    version = service.rollback_version(session, principal.clinic(), version_id, str(principal.key_id), body.reason)
    return _version_detail(session, version)


def _download_name(project_name: str, number: int) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", project_name).strip("-.")[:100] or "model"
    return f"{safe}-v{number}.safetensors"


@router.get(
    "/v1/versions/{version_id}/checkpoint",
    tags=["versions"],
    response_class=FileResponse,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "the safetensors checkpoint"},
        304: {"description": "If-None-Match holds the checkpoint's sha256"},
    },
)
def download_checkpoint(
    request: Request, version_id: uuid.UUID, session: SessionDep, settings: SettingsDep, principal: AdminDep
) -> Response:
    """The version's checkpoint file (weights with its configuration and landmarks); its ETag is its sha256."""
    clinic = principal.clinic()
    version = repo.get_version(session, clinic, version_id)
    project = session.get(Project, version.project_id)
    if project is None:  # pragma: no cover - the foreign key guarantees it
        raise not_found("project")
    etag = f'"{version.checkpoint_sha256}"'
    if etag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]:
        return Response(status_code=304, headers={"ETag": etag})
    store = blob_store(settings)
    try:
        present = store.exists(version.checkpoint_blob)
    except ValueError:
        present = False
    if not present:
        raise Problem(404, f"the checkpoint of v{version.number} is missing from blob storage", slug="blob-missing")
    name = _download_name(project.name, version.number)
    return Response(
        store.get(version.checkpoint_blob),
        media_type="application/octet-stream",
        headers={"ETag": etag, "Content-Disposition": f'attachment; filename="{name}"'},
    )
