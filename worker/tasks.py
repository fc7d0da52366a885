"""Thin Celery tasks: they take ids and call the job functions, which re-read the world."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import multiprocessing
import os
import signal
import sys
import uuid

from celery.signals import beat_embedded_init, worker_ready

from models.precision import resolve_precision, set_torch_threads
from models.trainer import resolve_device
from server.settings import get_settings
from server.training.queue import TASK_PREDICT_JOB, TASK_TRAIN_JOB

from .celery_app import celery_app
from .jobs import Outcome, reap_stale_jobs, run_training_job
from .predict_jobs import reap_stale_prediction_jobs, run_prediction_job
from .requeue import requeue_lost_jobs
from .sweep import sweep_orphan_blobs

log = logging.getLogger("kamp.worker")
TASK_REAP = "kamp.reap_stale_jobs"
#: Seconds between two looks for running jobs whose worker died.
REAP_EVERY_S = 60.0
#: How long a job waits before looking again whether the previous step's model exists.
WAIT_COUNTDOWN_S = 15
#: How soon a job that let another clinic go first is delivered again (behind the messages queued meanwhile).
DEFER_COUNTDOWN_S = 2


@celery_app.task(name=TASK_TRAIN_JOB, bind=True, max_retries=None)
def train_job(self, job_id: str) -> str:  # type: ignore[no-untyped-def]
    settings = get_settings()
    set_torch_threads(settings.torch_threads)
    outcome = run_training_job(uuid.UUID(job_id), settings)
    if outcome == Outcome.waiting:
        raise self.retry(countdown=WAIT_COUNTDOWN_S)
    if outcome == Outcome.deferred:
        raise self.retry(countdown=DEFER_COUNTDOWN_S)
    return outcome.value


@celery_app.task(name=TASK_PREDICT_JOB)
def predict_job(job_id: str) -> str:
    settings = get_settings()
    set_torch_threads(settings.torch_threads)
    return run_prediction_job(uuid.UUID(job_id), settings).value


@celery_app.task(name=TASK_REAP)
def reap() -> list[str]:
    settings = get_settings()
    reaped = [*reap_stale_jobs(settings), *reap_stale_prediction_jobs(settings), *requeue_lost_jobs(settings)]
    sweep_orphan_blobs(settings)
    return [str(j) for j in reaped]


@worker_ready.connect
def _announce(**_: object) -> None:
    """Say once what this worker computes with (the tasks set the thread count again before each job)."""
    settings = get_settings()
    device = resolve_device("auto")
    threads = set_torch_threads(settings.torch_threads)
    precision = resolve_precision(settings.precision, device)
    log.warning(
        "kamp worker ready: %s, precision %s (%s), %d torch threads", device, precision, settings.precision, threads
    )


@beat_embedded_init.connect
def _die_with_the_worker(**_: object) -> None:
    """The embedded beat (`--beat`) is a child process of the worker: have the kernel stop it when the worker
    dies, even by SIGKILL, so that no orphan beat keeps scheduling reapers (Linux; elsewhere nothing)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError as exc:
        log.warning("the beat cannot follow its worker's death: %s", exc)
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:  # the worker died before the call
        os.kill(os.getpid(), signal.SIGTERM)


#: prctl(2) option: the signal the kernel sends this process when its parent dies.
PR_SET_PDEATHSIG = 1

celery_app.conf.beat_schedule = {"reap-stale-jobs": {"task": TASK_REAP, "schedule": REAP_EVERY_S}}
