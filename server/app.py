"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI, Response
from sqlalchemy import text

from .analyses.routes import router as analyses_router
from .annotations.routes import router as annotations_router
from .auth import RateLimiter, SystemDep
from .body_guard import BodyGuardMiddleware
from .clinics.routes import router as clinics_router
from .console.routes import install_console
from .db.session import PoolLimits, session_factory
from .deps import SessionDep, SettingsDep
from .dicomweb.routes import project_router as dicomweb_project_router
from .dicomweb.routes import router as dicomweb_router
from .errors import install_problem_handlers, path_template
from .metrics import CONTENT_TYPE, Metrics, MetricsMiddleware
from .predict.batcher import InferenceBatcher
from .predict.cache import ModelCache
from .predict.jobs import router as prediction_jobs_router
from .predict.routes import router as predict_router
from .problems import PROBLEM_RESPONSES, Problem
from .projects.routes import router as projects_router
from .settings import Settings, get_settings
from .studies.routes import router as studies_router
from .studies.service import DecodeSlots
from .timing import ServerTimingMiddleware
from .training.queue import TASK_PREDICT_JOB, broker_answers, celery_enqueue
from .training.routes import router as training_router

DESCRIPTION = """
Incremental anatomical landmark learning with KAMP. Clinics upload X-ray studies, annotate landmarks step by
step (landmark sets), and GPU workers train a new model version each time a set is added.

Authenticate with `Authorization: Bearer <API key>`. Every error is an RFC 9457 problem document
(`application/problem+json`) whose `type` is `/problems/<slug>` and whose `detail` says what went wrong.
"""


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Starlette runs every blocking route and dependency on anyio's default thread limiter.
    anyio.to_thread.current_default_thread_limiter().total_tokens = app.state.settings.api_threads
    yield


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title="KAMP landmarks",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=_lifespan,
        responses=PROBLEM_RESPONSES,
    )
    app.state.settings = settings
    pool = PoolLimits(settings.db_pool_size, settings.db_max_overflow, settings.db_pool_timeout_s)
    app.state.session_factory = session_factory(settings.resolved_database_url, pool)
    app.state.rate_limiter = RateLimiter()
    app.state.enqueue = celery_enqueue(settings)  # tests swap in a fake
    app.state.enqueue_prediction = celery_enqueue(settings, TASK_PREDICT_JOB)
    install_problem_handlers(app)
    app.include_router(clinics_router)
    app.include_router(projects_router)
    app.include_router(analyses_router)
    app.include_router(studies_router)
    app.include_router(annotations_router)
    app.include_router(predict_router)
    app.include_router(prediction_jobs_router)
    app.state.model_cache = ModelCache(precision=settings.precision)
    app.state.inference = InferenceBatcher(settings.inference_max_batch, threads=settings.torch_threads)
    app.include_router(training_router)
    app.include_router(dicomweb_router)
    app.include_router(dicomweb_project_router)
    install_console(app)
    app.add_middleware(BodyGuardMiddleware, settings=settings, sessions=app.state.session_factory)
    app.add_middleware(ServerTimingMiddleware)
    app.state.metrics = Metrics(app.state.session_factory)
    app.state.decode_slots = DecodeSlots(settings.max_concurrent_decodes, settings.decode_wait_s)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics, template=lambda p: path_template(app, p))

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        """The process is up (answered on the event loop: a full thread pool does not delay it)."""
        return {"status": "ok"}

    @app.get("/metrics", tags=["ops"], response_class=Response, responses={200: {"content": {CONTENT_TYPE: {}}}})
    def metrics(_: SystemDep) -> Response:
        """Prometheus metrics (system key): request latency by route and status, requests in flight, jobs by
        kind and status, the oldest queued job's age, the stalest running job's heartbeat, prediction stages."""
        return Response(app.state.metrics.exposition(), media_type=CONTENT_TYPE)

    @app.get("/readyz", tags=["ops"])
    def readyz(session: SessionDep, settings: SettingsDep) -> dict[str, str]:
        """The database and the job queue's broker answer (neither's address is named)."""
        try:
            session.execute(text("SELECT 1"))
        except Exception as exc:
            raise Problem(503, f"the database does not answer: {type(exc).__name__}", slug="not-ready") from exc
        try:
            broker_answers(settings)
        except Exception as exc:
            raise Problem(503, f"the job queue does not answer: {type(exc).__name__}", slug="not-ready") from exc
        return {"status": "ready"}

    return app
