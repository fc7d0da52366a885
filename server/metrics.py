"""/metrics in the Prometheus text format, so that an operator sees a freeze or a stuck queue before a clinic does.

Per request (a pure ASGI middleware): latency by route template, method and status, and requests in flight.
Per prediction: the decode and model times. Read from the database at each scrape: jobs by kind and status (the
queue depth), the age of the oldest queued job, and the age of the stalest heartbeat of a running job (a worker
that froze). Each app has its own registry (tests build several apps in one process).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import datetime

from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .bodies import in_utc
from .db.base import utcnow
from .db.entities import JobStatus, PredictionJob, TrainingJob

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_KINDS: dict[str, type[TrainingJob] | type[PredictionJob]] = {"training": TrainingJob, "prediction": PredictionJob}


class Metrics:
    """The app's registry and the instruments routes observe."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.registry = CollectorRegistry()
        self.request_seconds = Histogram(
            "kamp_http_request_seconds",
            "Time from the request reaching the app to its response's headers",
            ["route", "method", "status"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.in_flight = Gauge("kamp_http_requests_in_flight", "Requests being handled", registry=self.registry)
        self.predict_seconds = Histogram(
            "kamp_predict_stage_seconds",
            "Time of one synchronous prediction's stages: decoding the upload, the model",
            ["stage"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.registry.register(JobsCollector(sessions))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class JobsCollector(Collector):
    """Job gauges read from the database at scrape time (any worker's jobs, not only this process's)."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def collect(self) -> Iterator[Metric]:
        counts = GaugeMetricFamily("kamp_jobs", "Jobs by kind and status", labels=["kind", "status"])
        oldest = GaugeMetricFamily(
            "kamp_queue_oldest_seconds", "Age of the oldest queued job (0: none queued)", labels=["kind"]
        )
        stalest = GaugeMetricFamily(
            "kamp_job_heartbeat_age_seconds", "Age of the stalest heartbeat of a running job (0: none)", labels=["kind"]
        )
        now = utcnow()
        with self.sessions() as session:
            for kind, entity in _KINDS.items():
                found = dict(session.execute(select(entity.status, func.count()).group_by(entity.status)).all())
                for status in JobStatus:
                    counts.add_metric([kind, status.value], found.get(status, 0))
                queued = session.scalar(select(func.min(entity.created_at)).where(entity.status == JobStatus.queued))
                beat = session.scalar(select(func.min(entity.heartbeat_at)).where(entity.status == JobStatus.running))
                oldest.add_metric([kind], _age(now, queued))
                stalest.add_metric([kind], _age(now, beat))
        yield from (counts, oldest, stalest)


def _age(now: datetime, then: datetime | None) -> float:
    return 0.0 if then is None else max(0.0, (now - in_utc(then)).total_seconds())


class MetricsMiddleware:
    """Times every HTTP request by its route template ("unmatched" for a path of none)."""

    def __init__(self, app: ASGIApp, metrics: Metrics, template: Callable[[str], str | None]) -> None:
        self.app = app
        self.metrics = metrics
        self.template = template  # for requests answered before routing (server.body_guard's 401 and 413)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def watched(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                self._observe(scope, status[0], start)
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, watched)
        finally:
            self.metrics.in_flight.dec()

    def _observe(self, scope: Scope, status: int, start: float) -> None:
        route = scope.get("route")
        template = getattr(route, "path", None) or self.template(scope["path"]) or "unmatched"
        self.metrics.request_seconds.labels(template, scope["method"], str(status)).observe(time.perf_counter() - start)
