"""Limits before reading: a request's key and size are checked before any byte of its body is read or spooled.

FastAPI reads (and, for multipart, spools to disk) a whole body before a route's dependencies run, so neither
the key check nor a route's size check could stop a large body without a key. This pure ASGI middleware runs
first: a request with a body but no valid key answers 401, one that declares more than its limit answers 413,
both before the body is read; a body that streams past its limit (chunked, or longer than declared) is cut at
the first message over it and answers 413. The verified principal is handed on, so the key is looked up once.
"""

from __future__ import annotations

import re

from fastapi.concurrency import run_in_threadpool
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .auth import VERIFIED, Principal, presented_key, verify_key
from .errors import problem_response
from .problems import BUSY, Problem
from .settings import Settings

#: Routes that take one uploaded file: their body is that file and a few form fields.
_SINGLE_UPLOAD = re.compile(r"^/v1/(studies|projects/[^/]+/predict(/render|/sr)?)$")
#: Routes that take several files in one multipart body: a prediction batch or job, an annotation import, STOW-RS.
_MULTI_UPLOAD = re.compile(
    r"^(/v1/projects/[^/]+/(predict/(batch|jobs)|landmark-sets/[^/]+/annotations/import)"
    r"|/dicomweb(/projects/[^/]+)?/studies(/[^/]+)?)$"
)
#: Room for a multipart body's boundaries, part headers and form fields beside its file.
FORM_OVERHEAD = 64 * 1024


def body_limit(settings: Settings, path: str, content_type: str) -> tuple[int, str]:
    """(the most bytes a request body to `path` may hold, the problem slug of a body over it). Only multipart
    bodies (files) to the routes that take files may be large. Any other is parsed whole in memory before the
    route's role check (FastAPI reads application/*+json and a body without a type as JSON, and a multipart body
    to a route without a file part as a form in memory), so it gets the JSON limit."""
    if content_type.split(";")[0].strip().lower().startswith("multipart/"):
        if _SINGLE_UPLOAD.match(path):
            return settings.max_upload_bytes + FORM_OVERHEAD, "upload-too-large"
        if _MULTI_UPLOAD.match(path):
            return settings.max_request_bytes, "body-too-large"
    return settings.max_json_bytes, "body-too-large"


class BodyGuardMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings, sessions: sessionmaker[Session]) -> None:
        self.app = app
        self.settings = settings
        self.sessions = sessions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope) if scope["type"] == "http" else None
        if headers is None or not _has_body(headers):
            await self.app(scope, receive, send)
            return
        limit, slug = body_limit(self.settings, scope["path"], headers.get("content-type", ""))
        try:
            principal = await run_in_threadpool(self._verify, presented_key(headers))
            _check_declared(headers, limit, slug)
        except Problem as problem:
            await _answer(scope, receive, send, problem)
            return
        except PoolTimeout:
            await _answer(scope, receive, send, BUSY)
            return
        scope.setdefault("state", {})[VERIFIED] = principal
        await _CappedBody(self.app, limit, slug).run(scope, receive, send)

    def _verify(self, key: str) -> Principal:
        with self.sessions() as session:
            return verify_key(session, key)


def _has_body(headers: Headers) -> bool:
    declared = headers.get("content-length")
    return (declared is not None and declared.strip() != "0") or "chunked" in headers.get("transfer-encoding", "")


def _check_declared(headers: Headers, limit: int, slug: str) -> None:
    declared = headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise _too_large(limit, slug)


def _too_large(limit: int, slug: str) -> Problem:
    return Problem(413, f"the request body is larger than this route's limit of {limit} bytes", slug=slug)


async def _answer(scope: Scope, receive: Receive, send: Send, problem: Problem) -> None:
    """Answer `problem` without reading the body; the server closes the connection on the unread rest."""
    await problem_response(Request(scope), problem)(scope, receive, send)


class _CappedBody:
    """One request, its body cut at `limit` bytes: past it the app is told the client left (its body parser then
    fails), and whatever it answers is replaced by a 413."""

    def __init__(self, app: ASGIApp, limit: int, slug: str) -> None:
        self.app, self.limit, self.slug = app, limit, slug
        self.received = 0
        self.over = False
        self.answered = False

    async def run(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def counted() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                self.received += len(message.get("body", b""))
                if self.received > self.limit:
                    self.over = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded(message: Message) -> None:
            if not self.over:
                await send(message)
            elif not self.answered:
                self.answered = True
                await problem_response(Request(scope), _too_large(self.limit, self.slug))(scope, counted, send)

        try:
            await self.app(scope, counted, guarded)
        except Exception:
            if not self.over:
                raise
        if self.over and not self.answered:
            await guarded({"type": "http.response.start"})
