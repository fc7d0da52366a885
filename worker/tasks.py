"""Thin Celery tasks: they take ids and call the job functions, which re-read the world."""

from __future__ import annotations

import uuid

from server.settings import get_settings

from .celery_app import celery_app
from .jobs import Outcome, reap_stale_jobs, run_training_job
from .predict_jobs import reap_stale_prediction_jobs, run_prediction_job

TASK_TRAIN_JOB = "kamp.train_job"
TASK_PREDICT_JOB = "kamp.predict_job"
TASK_REAP = "kamp.reap_stale_jobs"
#: Seconds between two looks for running jobs whose worker died.
REAP_EVERY_S = 60.0
#: How long a job waits before looking again whether the previous step's model exists.
WAIT_COUNTDOWN_S = 15


@celery_app.task(name=TASK_TRAIN_JOB, bind=True, max_retries=None)
def train_job(self, job_id: str) -> str:  # type: ignore[no-untyped-def]
    outcome = run_training_job(uuid.UUID(job_id), get_settings())
    if outcome == Outcome.waiting:
        raise self.retry(countdown=WAIT_COUNTDOWN_S)
    return outcome.value


@celery_app.task(name=TASK_PREDICT_JOB)
def predict_job(job_id: str) -> str:
    return run_prediction_job(uuid.UUID(job_id), get_settings()).value


@celery_app.task(name=TASK_REAP)
def reap() -> list[str]:
    settings = get_settings()
    return [str(j) for j in [*reap_stale_jobs(settings), *reap_stale_prediction_jobs(settings)]]


celery_app.conf.beat_schedule = {"reap-stale-jobs": {"task": TASK_REAP, "schedule": REAP_EVERY_S}}
