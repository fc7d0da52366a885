"""Serves the console: `/` is its single page, `/console/...` its ES modules and stylesheet, all from this
package (no build step, nothing from a CDN: it works offline in a hospital network)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

STATIC = Path(__file__).parent / "static"

#: Scripts and styles only from this origin, no inline script, images only from here or the page's own blobs,
#: no framing (clickjacking), no referrer (a study id in the URL stays here).
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
        "connect-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


@router.get("/")
async def console_page() -> FileResponse:
    """The console's page; it signs in with an API key it keeps in the tab's session storage."""
    return FileResponse(STATIC / "index.html", media_type="text/html", headers=SECURITY_HEADERS)


class _Assets(StaticFiles):
    """StaticFiles with the console's security headers on every answer."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await super().__call__(scope, receive, send_with_headers)


def install_console(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/console", _Assets(directory=STATIC), name="console")
