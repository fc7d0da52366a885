"""Server-Timing for every response: `app;dur=<ms>`, from the moment the application is handed the request to
the moment it sends the response headers. Beside a client's own latency it splits the time spent in the
application from the time on the wire and in the HTTP server (bench/predict.py reports both)."""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class ServerTimingMiddleware:
    """A pure ASGI middleware (no task or stream of its own, unlike starlette's BaseHTTPMiddleware, which costs
    about a millisecond per request); a route's own Server-Timing entries are kept, `app` appended."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()

        async def timed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = with_app_timing(message.get("headers", []), time.perf_counter() - start)
            await send(message)

        await self.app(scope, receive, timed_send)


def with_app_timing(headers: Any, seconds: float) -> list[tuple[bytes, bytes]]:
    """`headers` (ASGI: (name, value) byte pairs) with `app;dur=<ms>` added to Server-Timing, or that header
    added."""
    entry = f"app;dur={1e3 * seconds:.1f}".encode()
    out = [(bytes(k), bytes(v)) for k, v in headers]
    for i, (name, value) in enumerate(out):
        if name.lower() == b"server-timing":
            out[i] = (name, value + b", " + entry)
            return out
    out.append((b"server-timing", entry))
    return out
