"""Limits before reading (server.body_guard), on a real HTTP server: a body without a valid key, or declared over
its route's limit, is refused before one byte of it is read; one that streams past its limit is cut there."""

from __future__ import annotations

import contextlib
import json
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.body_guard import FORM_OVERHEAD, body_limit
from server.settings import Settings

from .api_helpers import assert_problem
from .conftest import Api, make_api, serve

GIB = 1 << 30


class BodyCounter:
    """ASGI wrapper: the body bytes the application read through `receive`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.read = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def counted() -> Message:
            message = await receive()
            self.read += len(message.get("body", b""))
            return message

        await self.app(scope, counted, send)


@pytest.fixture
def served(database_url: str, tmp_path: Path) -> Iterator[tuple[Api, BodyCounter, int]]:
    """(the API, its body counter, the port of a uvicorn serving it)."""
    api = make_api(database_url, tmp_path, max_upload_bytes=1_000_000)
    counter = BodyCounter(api.client.app)
    with api.client, serve(counter) as port:
        yield api, counter, port


def _send_head(port: int, path: str, headers: dict[str, str]) -> socket.socket:
    conn = socket.create_connection(("127.0.0.1", port), timeout=10)
    lines = [f"POST {path} HTTP/1.1", "Host: test", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    conn.sendall("\r\n".join(lines).encode())
    return conn


def _status_after(conn: socket.socket, body: bytes) -> tuple[int, bytes]:
    """Send `body` (the server may stop reading), then read the whole answer: (its status, its bytes)."""
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # it answered and closed before taking it all
        conn.sendall(body)
    answer = b""
    while not _complete(answer):
        chunk = conn.recv(65536)
        if not chunk:
            break
        answer += chunk
    conn.close()
    return int(answer.split(b" ", 2)[1]), answer


def _complete(answer: bytes) -> bool:
    head, sep, body = answer.partition(b"\r\n\r\n")
    lengths = [line.split(b":", 1)[1] for line in head.lower().split(b"\r\n") if line.startswith(b"content-length:")]
    return bool(sep) and len(body) >= int(lengths[0]) if lengths else bool(sep)


def test_a_gigabyte_without_a_key_is_refused_before_its_body_is_read(
    served: tuple[Api, BodyCounter, int], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _, counter, port = served
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))  # where a multipart parser would spool the file
    headers = {"Content-Type": "multipart/form-data; boundary=xyz", "Content-Length": str(GIB)}
    t0 = time.monotonic()
    conn = _send_head(port, "/v1/studies", headers)
    status, answer = _status_after(conn, b"--xyz\r\n" + b"\0" * (4 << 20))  # 4 MiB of the declared 1 GiB
    assert status == 401 and b"application/problem+json" in answer
    assert time.monotonic() - t0 < 5  # answered without waiting for the rest of the gigabyte
    assert counter.read == 0 and list(spool.iterdir()) == []
    conn = _send_head(port, "/v1/studies", {**headers, "Authorization": "Bearer kamp_nope_nope"})
    assert _status_after(conn, b"x" * 65536)[0] == 401 and counter.read == 0


def test_a_body_declared_over_the_limit_is_refused_before_it_is_read(served: tuple[Api, BodyCounter, int]) -> None:
    api, counter, port = served
    _, admin = api.clinic()
    headers = {
        "Content-Type": "multipart/form-data; boundary=xyz",
        "Content-Length": str(1_000_000 + FORM_OVERHEAD + 1),
        "Authorization": f"Bearer {admin}",
    }
    status, _ = _status_after(_send_head(port, "/v1/studies", headers), b"--xyz\r\n")
    assert status == 413 and counter.read == 0
    json_headers = {"Content-Type": "application/json", "Content-Length": str(GIB), "Authorization": f"Bearer {admin}"}
    assert _status_after(_send_head(port, "/v1/projects", json_headers), b"{")[0] == 413 and counter.read == 0


def test_a_multipart_body_to_a_route_without_files_gets_the_json_limit(served: tuple[Api, BodyCounter, int]) -> None:
    # FastAPI reads a multipart body to a JSON route whole into memory before the role check: no 2 GiB for it.
    api, counter, port = served
    clinic, admin = api.clinic()
    predict = api.key(clinic, admin, "predict")
    over_json = str(api.settings.max_json_bytes + 1)
    for path in ("/v1/projects", f"/v1/projects/{uuid.uuid4()}/landmark-sets", "/v1/clinics"):
        headers = {"Content-Type": "multipart/form-data; boundary=x", "Content-Length": over_json}
        status, answer = _status_after(_send_head(port, path, headers | {"Authorization": f"Bearer {predict}"}), b"--x")
        assert status == 413 and b"body-too-large" in answer and counter.read == 0


@pytest.mark.parametrize(
    ("path", "limit"),
    [
        ("/v1/studies", "upload"),
        ("/v1/projects/p/predict/render", "upload"),
        ("/v1/projects/p/predict/batch", "request"),
        ("/v1/projects/p/predict/jobs", "request"),
        ("/v1/projects/p/landmark-sets/0/annotations/import", "request"),
        ("/dicomweb/studies", "request"),
        ("/dicomweb/projects/p/studies/1.2.3", "request"),
        ("/v1/projects", "json"),
        ("/v1/projects/p/landmark-sets/0/annotations", "json"),
        ("/v1/projects/p/predict/jobs/j/cancel", "json"),
        ("/v1/studies/s", "json"),
    ],
)
def test_only_routes_that_take_files_get_a_multipart_limit(path: str, limit: str) -> None:
    settings = Settings(max_upload_bytes=1000, max_json_bytes=2000, max_request_bytes=3000)
    expected = {"upload": 1000 + FORM_OVERHEAD, "json": 2000, "request": 3000}[limit]
    assert body_limit(settings, path, "multipart/form-data; boundary=x")[0] == expected
    assert body_limit(settings, path, "application/json")[0] == 2000


def test_a_chunked_body_is_cut_at_its_limit(served: tuple[Api, BodyCounter, int]) -> None:
    api, counter, port = served
    _, admin = api.clinic()
    headers = {
        "Content-Type": "multipart/form-data; boundary=xyz",
        "Transfer-Encoding": "chunked",
        "Authorization": f"Bearer {admin}",
    }
    conn = _send_head(port, "/v1/studies", headers)
    part = b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
    chunk = b"\0" * 65536

    def framed(data: bytes) -> bytes:
        return f"{len(data):x}\r\n".encode() + data + b"\r\n"

    status, answer = _status_after(conn, framed(part) + framed(chunk) * 48)  # 3 MiB: three times the limit
    assert status == 413 and b"upload-too-large" in answer
    # Read up to the first message of the server over the limit (uvicorn hands on what its buffer holds).
    assert 1_000_000 < counter.read <= 1_000_000 + FORM_OVERHEAD + (256 << 10)


def test_limits_through_the_test_client(database_url: str, tmp_path: Path) -> None:
    api = make_api(database_url, tmp_path, max_json_bytes=1000)
    with api.client:
        _, admin = api.clinic()
        big = {"name": "x" * 2000, "landmarks": []}
        assert_problem(api.client.post("/v1/projects", json=big, headers=api.headers(admin)), 413, "body-too-large")
        # FastAPI parses any +json type, and a body without a type, as JSON: whole, in memory. The same limit.
        raw = json.dumps(big).encode()
        for kind in ("application/vnd.kamp+json", "application/problem+json", "text/plain", None):
            headers = api.headers(admin) | ({"Content-Type": kind} if kind else {})
            r = api.client.post("/v1/projects", content=raw, headers=headers)
            assert_problem(r, 413, "body-too-large")
        assert_problem(api.client.post("/v1/projects", json={"name": "p"}), 401, "unauthorized")
