"""The prediction job: claim it, predict its images in chunks with the job's model version, store the answers as
one JSON blob, delete the images.

Idempotent: the row is claimed with a conditional update (queued -> running), so a task delivered twice predicts
once; every later write is conditional on the job still running. The images are deleted when the job ends,
whichever way (and by a redelivery that finds the job finished, should a worker have died just before).
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from sqlalchemy.orm import Session

from server.analyses.service import context as measure_context
from server.db.base import utcnow
from server.db.entities import JobStatus, ModelVersion, PredictionJob
from server.db.session import session_factory
from server.imaging import DecodedImage, ImagingError, decode_image
from server.jobs.repository import Lease, claim, reap
from server.predict import job_inputs
from server.predict.cache import ModelCache
from server.predict.frames import model_inputs, model_size
from server.predict.schemas import prediction_out
from server.settings import Settings
from server.storage import BlobStore, blob_store

from .jobs import Outcome

log = logging.getLogger("kamp.worker")
#: Images per forward pass and per progress write (each is also the heartbeat).
CHUNK = 8
#: Models of this worker process, by precision, so that consecutive jobs of one version load it once.
_models: dict[str, ModelCache] = {}


def run_prediction_job(job_id: uuid.UUID, settings: Settings) -> Outcome:
    factory = session_factory(settings.resolved_database_url)
    blobs = blob_store(settings)
    with factory() as session:
        job = session.get(PredictionJob, job_id)
        if job is None:
            log.warning("prediction job %s does not exist", job_id)
            return Outcome.skipped
        lease = _claim(session, job, settings)
        if lease is None:
            if job.status not in (JobStatus.queued, JobStatus.running):
                job_inputs.delete(blobs, job.inputs)  # left behind if a worker died right after finishing it
            return Outcome.skipped
        try:
            outcome = _predict(session, settings, blobs, job, lease)
        except Exception as exc:
            session.rollback()
            ended = _end(session, lease, JobStatus.failed, error=f"{type(exc).__name__}: {exc}")
            if ended:
                log.exception("prediction job %s failed", job_id)
            else:  # e.g. cancelled while this chunk ran: its images were deleted under it
                log.info("prediction job %s ended elsewhere (%s: %s)", job_id, type(exc).__name__, exc)
            outcome = Outcome.failed if ended else Outcome.skipped
        if outcome != Outcome.skipped:  # skipped: the job was taken from us; its new owner cleans up
            job_inputs.delete(blobs, job.inputs)
        return outcome


def _claim(session: Session, job: PredictionJob, settings: Settings) -> Lease | None:
    """Claim the prediction job; a job taken over from a dead worker starts again from its first image."""
    now = utcnow()
    lease = claim(session, PredictionJob, job.id, now, settings.job_stale_after_s, started_at=now, done=0)
    session.refresh(job)
    if lease is None:
        log.info("prediction job %s not claimed (status %s)", job.id, job.status)
    return lease


def _predict(session: Session, settings: Settings, blobs: BlobStore, job: PredictionJob, lease: Lease) -> Outcome:
    version = session.get(ModelVersion, job.model_version_id)
    assert version is not None  # a foreign key
    cache = _models.setdefault(settings.precision, ModelCache(capacity=2, precision=settings.precision))
    predictor = cache.get(version.id, version.checkpoint_blob, blobs)
    analyses = measure_context(session, version)
    inputs: list[dict[str, Any]] = list(job.inputs)
    results: list[dict[str, Any]] = []
    for start in range(0, len(inputs), CHUNK):
        entries = inputs[start : start + CHUNK]
        # Decoded as at submission (with the spacing the client gave then), so the spacing is the submitted one.
        images = [_decode(blobs, job.id, e, settings, model_size(predictor)) for e in entries]
        pixels, spacing, frames = model_inputs(images)
        predictions = predictor.predict(pixels, spacing, None, frames)
        for entry, prediction in zip(entries, predictions, strict=True):
            source, name = entry["spacing_source"], entry["filename"]
            out = prediction_out(version, prediction, spacing_source=source, filename=name, analyses=analyses)
            results.append(out.model_dump(mode="json"))
        if not lease.beat(session, done=start + len(entries)):
            return Outcome.skipped
    key = blobs.put(json.dumps(results).encode())  # atomic: a temporary file renamed into place
    done = _end(session, lease, JobStatus.succeeded, result_blob=key, done=len(inputs))
    return Outcome.succeeded if done else Outcome.skipped


def _decode(
    blobs: BlobStore,
    job_id: uuid.UUID,
    entry: dict[str, Any],
    settings: Settings,
    at_least: tuple[int, int] | None,
) -> DecodedImage:
    """One image of the job, decoded again as at submission, for a model of input size `at_least` (a JPEG as
    the synchronous routes decode it, reduced; see `server.predict.routes.decode_for_model`). A whole decode
    must give the pixels validated at submission, a reduced one the same size."""
    name = entry["filename"]
    data = job_inputs.unpack(job_id, blobs.get(entry["blob"]))
    try:
        image = decode_image(
            data,
            filename=name,
            limits=settings.image_limits,
            spacing_mm=job_inputs.user_spacing(entry),
            at_least=at_least,
        )
    except ImagingError as exc:
        raise RuntimeError(f"{name}: {exc.message}") from exc
    same = (image.width, image.height) == (entry["width"], entry["height"]) and (
        image.reduction > 1 or image.pixel_sha256 == entry["pixel_sha256"]
    )
    if not same:
        raise RuntimeError(f"{name}: the image decodes to other pixels than at submission")
    return image


def _end(session: Session, lease: Lease, status: JobStatus, **values: object) -> bool:
    """Finish the job as `status` with `values` (its end is its last heartbeat too); False if this worker no longer
    holds it."""
    return lease.finish(session, status, heartbeat_at=utcnow(), **values)


def reap_stale_prediction_jobs(settings: Settings) -> list[uuid.UUID]:
    """Fail running prediction jobs whose worker stopped beating, and delete their images. Returns them."""
    blobs = blob_store(settings)
    with session_factory(settings.resolved_database_url)() as session:
        reaped = reap(session, PredictionJob, settings.job_stale_after_s, "submit the images again")
        for job_id in reaped:  # each failure is committed: the images go only once nobody can use them
            job = session.get(PredictionJob, job_id)
            assert job is not None  # jobs are never deleted
            job_inputs.delete(blobs, job.inputs)
    return reaped
