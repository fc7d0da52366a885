"""The API's answers to errors: every exception a request raises becomes an RFC 9457 problem document (the
problems themselves are in server.problems, free of the web framework)."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from .problems import BUSY, PROBLEM_JSON, Problem

log = logging.getLogger("kamp.server")


def problem_response(request: Request, problem: Problem) -> JSONResponse:
    body = {
        "type": f"/problems/{problem.slug}",
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
        "instance": request.url.path,
        **problem.extra,
    }
    return JSONResponse(body, status_code=problem.status, media_type=PROBLEM_JSON, headers=problem.headers)


def path_template(app: FastAPI, path: str) -> str | None:
    """The OpenAPI path template that names `path` most closely (the most literal segments: /annotations/import
    before /annotations/{study_id}), or None."""
    segments = path.rstrip("/").split("/")
    best: tuple[int, str | None] = (-1, None)
    for template in app.openapi()["paths"]:
        parts = template.rstrip("/").split("/")
        if len(parts) != len(segments):
            continue
        literal = [p == s for p, s in zip(parts, segments, strict=True) if not p.startswith("{")]
        if all(literal) and len(literal) > best[0]:
            best = (len(literal), template)
    return best[1]


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """The methods the OpenAPI schema documents for `path`'s template."""
    template = path_template(app, path)
    operations = app.openapi()["paths"][template] if template else {}
    return sorted(m.upper() for m in operations if m in _METHODS)


_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(request, exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        headers = dict(exc.headers) if exc.headers else None
        if exc.status_code == 405:  # Starlette names the methods of one route of the path only
            headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(app, request.url.path))}
        return problem_response(request, Problem(exc.status_code, detail, headers=headers))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()
        ]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"])
        detail = f"{where}: {first['msg']}" if where else str(first["msg"])
        return problem_response(
            request, Problem(422, detail, slug="invalid-request", title="Invalid request", extra={"errors": errors})
        )

    @app.exception_handler(PoolTimeout)
    async def _saturated(request: Request, exc: PoolTimeout) -> JSONResponse:
        return problem_response(request, BUSY)

    @app.exception_handler(DataError)
    async def _data(request: Request, exc: DataError) -> JSONResponse:
        # e.g. a NUL character, which PostgreSQL text cannot hold: the request's fault, not the server's.
        reason = str(exc.orig).splitlines()[0] if exc.orig else "a value the database cannot store"
        return problem_response(
            request, Problem(422, f"the request holds a value that cannot be stored: {reason}", slug="unstorable-value")
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(
            request, Problem(500, "an unexpected error occurred; it has been logged", slug="internal-error")
        )
