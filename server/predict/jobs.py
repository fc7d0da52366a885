"""/v1/projects/{id}/predict/jobs: prediction on many images by a worker (submit, follow, cancel, fetch the results).

The images are validated up front exactly as /predict/batch does and kept as blobs only until the job ends; the
job is committed before it is enqueued (a worker must never get an id it cannot read yet)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, File, Request, Response, UploadFile
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from ..auth import Principal
from ..db.entities import JobStatus, PredictionJob
from ..deps import SessionDep, SettingsDep
from ..jobs import repository as jobs
from ..jobs.params import ListLimit
from ..jobs.schemas import job_fields
from ..problems import Problem
from ..projects import repository as projects
from ..settings import Settings
from ..storage import BlobStore, blob_store
from ..studies import names
from ..studies.routes import parse_spacing
from ..training.queue import dispatch
from . import job_inputs
from .routes import PredictDep, SpacingX, SpacingY, VersionField, decode_one_of_several, resolve_version
from .schemas import JobLinks, PredictionJobOut, PredictionOut

router = APIRouter(prefix="/v1/projects/{project_id}/predict/jobs", tags=["predict"])

_QUEUE_DOWN: dict[int | str, dict[str, Any]] = {
    503: {"description": "the job queue could not be reached; the job is marked failed"}
}


def _job_out(job: PredictionJob) -> PredictionJobOut:
    path = f"/v1/projects/{job.project_id}/predict/jobs/{job.id}"
    return PredictionJobOut(
        **job_fields(job),
        model_version_id=job.model_version_id,
        total=job.total,
        done=job.done,
        links=JobLinks(self=path, results=f"{path}/results"),
    )


def _dispatch(request: Request, session: Session, job: PredictionJob, blobs: BlobStore) -> None:
    """Enqueue the committed job; if the queue cannot be reached it is marked failed and its images deleted."""
    dispatch(
        session,
        job,
        request.app.state.enqueue_prediction,
        retry="submit the images again later",
        on_failure=lambda: job_inputs.delete(blobs, job.inputs),
    )


@router.post("", status_code=202, response_model=PredictionJobOut, responses=_QUEUE_DOWN)
async def submit_prediction_job(
    project_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: PredictDep,
    files: Annotated[list[UploadFile], File(description="the images (up to KAMP_MAX_PREDICTION_JOB_IMAGES)")],
    spacing_x_mm: SpacingX = None,
    spacing_y_mm: SpacingY = None,
    version_id: VersionField = None,
) -> PredictionJobOut:
    """Queue the prediction of many images with one model version (the given one, else the one active now; a
    later promotion does not change the job). Any unusable image refuses the whole request, naming the file,
    and nothing is stored. Follow the job at links.self; its answers are at links.results once it succeeded."""
    limit = settings.max_prediction_job_images
    if not files:
        raise Problem(422, "upload at least one image as `files`", slug="no-images")
    if len(files) > limit:
        raise Problem(413, f"at most {limit} images per job; got {len(files)}", slug="job-too-large")
    spacing = parse_spacing(spacing_x_mm, spacing_y_mm)
    # Database, decoding, blob and broker work all block: off the event loop, in one trip through the pool.
    job = _Submission(project_id, version_id, files, spacing)
    return await run_in_threadpool(_submit, request, session, settings, principal, job)


@dataclass(frozen=True)
class _Submission:
    project_id: uuid.UUID
    version_id: uuid.UUID | None
    files: list[UploadFile]
    spacing: tuple[float, float] | None


def _submit(
    request: Request, session: Session, settings: Settings, principal: Principal, sub: _Submission
) -> PredictionJobOut:
    version = resolve_version(session, principal.clinic(), sub.project_id, sub.version_id)
    session.rollback()  # hand the connection back to the pool while the images decode
    blobs = blob_store(settings)
    job_id = uuid.uuid4()
    inputs: list[dict] = []
    try:
        for position, f in enumerate(sub.files, start=1):  # one image in memory at a time: they were spooled
            image = decode_one_of_several(f, settings, sub.spacing, None, request.app.state.decode_slots)
            inputs.append(job_inputs.store(blobs, job_id, image, names.neutral_name(position, f.filename)))
        job = PredictionJob(
            id=job_id,
            project_id=sub.project_id,
            model_version_id=version.id,
            status=JobStatus.queued,
            total=len(inputs),
            done=0,
            inputs=inputs,
            created_by=principal.key_id,
        )
        session.add(job)
        session.commit()
    except BaseException:
        job_inputs.delete(blobs, inputs)  # unique to this job: nobody else holds them
        raise
    _dispatch(request, session, job, blobs)
    return _job_out(job)


@router.get("", response_model=list[PredictionJobOut])
def list_prediction_jobs(
    project_id: uuid.UUID,
    session: SessionDep,
    principal: PredictDep,
    limit: ListLimit = 100,
) -> list[PredictionJobOut]:
    """The project's prediction jobs, newest first."""
    project = projects.get_project(session, principal.clinic(), project_id)
    return [_job_out(j) for j in jobs.list_jobs(session, PredictionJob, project.id, limit)]


@router.get("/{job_id}", response_model=PredictionJobOut)
def get_prediction_job(
    project_id: uuid.UUID, job_id: uuid.UUID, session: SessionDep, principal: PredictDep
) -> PredictionJobOut:
    """A job's status and progress (images done of total)."""
    return _job_out(jobs.get_job(session, PredictionJob, job_id, clinic_id=principal.clinic(), project_id=project_id))


@router.post(
    "/{job_id}/cancel",
    response_model=PredictionJobOut,
    responses={409: {"description": "the job has already ended (succeeded, failed or cancelled)"}},
)
def cancel_prediction_job(
    project_id: uuid.UUID, job_id: uuid.UUID, session: SessionDep, settings: SettingsDep, principal: PredictDep
) -> PredictionJobOut:
    """Stop a queued or running job: it ends cancelled at once and its images are deleted. A running job's
    worker stops at its next chunk (8 images) and drops its partial answers. A job that has ended answers 409."""
    job = jobs.get_job(session, PredictionJob, job_id, clinic_id=principal.clinic(), project_id=project_id)
    cancelled = jobs.cancel(session, PredictionJob, job.id, only=jobs.UNFINISHED)  # the worker may end it meanwhile
    session.commit()
    session.refresh(job)
    if not cancelled:
        raise Problem(
            409,
            f"the job has already ended ({job.status.value}); only a queued or running job can be cancelled",
            slug="job-ended",
        )
    job_inputs.delete(blob_store(settings), job.inputs)
    return _job_out(job)


@router.get(
    "/{job_id}/results",
    response_model=list[PredictionOut],
    responses={409: {"description": "the job has not succeeded (yet): queued, running or failed (with its error)"}},
)
def prediction_job_results(
    project_id: uuid.UUID, job_id: uuid.UUID, session: SessionDep, settings: SettingsDep, principal: PredictDep
) -> Response:
    """Every image's prediction, in upload order, in the /predict/batch schema; once the job succeeded."""
    job = jobs.get_job(session, PredictionJob, job_id, clinic_id=principal.clinic(), project_id=project_id)
    if job.status in jobs.UNFINISHED:
        raise Problem(
            409,
            f"the job is {job.status.value} ({job.done} of {job.total} images done); ask again later",
            slug="job-not-finished",
            headers={"Retry-After": "5"},
        )
    if job.status == JobStatus.cancelled:
        raise Problem(409, "the job was cancelled: it has no results", slug="job-cancelled")
    if job.status != JobStatus.succeeded or job.result_blob is None:
        raise Problem(409, f"the job {job.status.value}: {job.error}", slug="job-failed")
    blobs = blob_store(settings)
    if not blobs.exists(job.result_blob):
        raise Problem(404, "the job's results are missing from blob storage", slug="blob-missing")
    return Response(blobs.get(job.result_blob), media_type="application/json")
