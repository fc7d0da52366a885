"""The Celery app: Redis in production, SQLite (kombu's SQLAlchemy transport) on the embedded default."""

from __future__ import annotations

from celery import Celery

from server.settings import Settings, get_settings
from server.training.queue import QUEUE_TRAINING, TASK_QUEUES

#: Longer than any training run: Redis re-delivers an unacknowledged task only after this many seconds.
VISIBILITY_TIMEOUT_S = 24 * 3600


def make_celery(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = Celery(
        "kamp",
        broker=settings.resolved_broker_url,
        backend=settings.resolved_result_backend,
        include=["worker.tasks"],
    )
    app.conf.update(
        task_acks_late=True,  # a task killed mid-way is delivered again ...
        task_reject_on_worker_lost=True,  # ... also when its worker process dies
        worker_prefetch_multiplier=1,  # one long job at a time per worker process
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        # Redis only (kombu's SQLAlchemy transport hands these options to create_engine). The embedded SQLite
        # broker does not re-deliver a task whose worker died: the reaper marks such a job failed, and a retry
        # resumes it from its training state.
        broker_transport_options=(
            {"visibility_timeout": VISIBILITY_TIMEOUT_S} if settings.resolved_broker_url.startswith("redis") else {}
        ),
        broker_connection_retry_on_startup=True,
        task_routes={task: {"queue": queue} for task, queue in TASK_QUEUES.items()},
        task_default_queue=QUEUE_TRAINING,  # the periodic reaper runs where training runs
        result_expires=7 * 24 * 3600,
    )
    return app


celery_app = make_celery()
