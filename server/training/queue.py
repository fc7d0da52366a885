"""Enqueueing jobs (training, batch prediction) through Celery by task name, so the API never imports worker code.

The worker registers the tasks under TASK_TRAIN_JOB and TASK_PREDICT_JOB; the API only needs a client that can
publish to the broker.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING

from sqlalchemy import update

from ..db.entities import JobStatus
from ..jobs.repository import ended
from ..problems import Problem
from ..settings import Settings

if TYPE_CHECKING:
    from celery import Celery
    from sqlalchemy.orm import Session

    from ..db.entities import PredictionJob, TrainingJob

TASK_TRAIN_JOB = "kamp.train_job"
TASK_PREDICT_JOB = "kamp.predict_job"
#: Each kind of job has its own queue, so a prediction job never waits behind a training run when a worker
#: serves the prediction queue (`kamp serve` starts one per queue; `kamp worker --queues` picks).
QUEUE_TRAINING = "training"
QUEUE_PREDICTION = "prediction"
TASK_QUEUES = {TASK_TRAIN_JOB: QUEUE_TRAINING, TASK_PREDICT_JOB: QUEUE_PREDICTION}

#: Fail fast when the broker is down: the caller marks the job failed and answers 503 instead of hanging.
_PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}

Enqueue = Callable[[uuid.UUID], str]

log = logging.getLogger("kamp.queue")
_CREDENTIALS = re.compile(r"//[^/@\s]*@")


def queue_error(exc: BaseException) -> str:
    """What to tell a client whose job could not be enqueued: the kind of failure, not the broker's address or
    the password its URL may carry (the operator's log has the whole error, its password masked)."""
    log.warning("could not enqueue a job: %s: %s", type(exc).__name__, _CREDENTIALS.sub("//***@", str(exc)))
    return f"could not reach the job queue: {type(exc).__name__}"


@lru_cache
def celery_client(broker_url: str, result_backend: str) -> Celery:
    from celery import Celery  # imported on first use: an API that never enqueues does not pay for it

    client = Celery("kamp", broker=broker_url, backend=result_backend)
    client.conf.broker_connection_timeout = 5
    return client


def broker_answers(settings: Settings, timeout_s: float = 2.0) -> None:
    """Raise (the transport's error) unless the broker accepts a connection within `timeout_s`."""
    client = celery_client(settings.resolved_broker_url, settings.resolved_result_backend)
    with client.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, timeout=timeout_s)


def celery_enqueue(settings: Settings, task: str = TASK_TRAIN_JOB) -> Enqueue:
    """A function that publishes one job's `task` and answers its Celery task id.

    The job's state lives in the database, so the task's result is never stored (ignore_result); that also
    keeps a result backend that is down from stalling the request."""
    broker, backend = settings.resolved_broker_url, settings.resolved_result_backend

    def enqueue(job_id: uuid.UUID) -> str:
        result = celery_client(broker, backend).send_task(
            task, args=[str(job_id)], queue=TASK_QUEUES[task], ignore_result=True, retry_policy=_PUBLISH_RETRY
        )
        return str(result.id)

    return enqueue


def dispatch(
    session: Session,
    job: TrainingJob | PredictionJob,
    enqueue: Enqueue,
    *,
    retry: str,
    on_failure: Callable[[], None] | None = None,
) -> None:
    """Commit the job, then enqueue it (a worker must never get an id it cannot read yet), then store the task
    id. If the queue cannot be reached the job is marked failed (if still queued), `on_failure` runs, and a 503
    problem says so, ending with `retry`: nothing stays queued that no worker sees."""
    session.commit()
    try:
        task_id = enqueue(job.id)
    except Exception as exc:
        error = queue_error(exc)
        entity = type(job)
        session.execute(
            update(entity)
            .where(entity.id == job.id, entity.status == JobStatus.queued)
            .values(**ended(JobStatus.failed, error=error))
        )
        session.commit()
        if on_failure is not None:
            on_failure()
        raise Problem(
            503, f"{error}; the job is marked failed, {retry}", slug="queue-unavailable", extra={"job_id": str(job.id)}
        ) from exc
    job.celery_task_id = task_id
    session.commit()
