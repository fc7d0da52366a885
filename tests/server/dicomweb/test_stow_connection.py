"""A STOW-RS request holds no database connection while its body arrives: slow uploads must not starve the
pool every other request draws from."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx

from ...worker.tiny import TINY_PROJECT
from ..conftest import make_api, serve


def test_a_slow_stow_into_a_project_leaves_the_pool_to_others(database_url: str, tmp_path: Path) -> None:
    api = make_api(database_url, tmp_path, db_pool_size=1, db_max_overflow=0, db_pool_timeout_s=1.0)
    with api.client, serve(api.client.app) as port:
        _, admin = api.clinic()
        h = api.headers(admin)
        pid = api.client.post("/v1/projects", json=TINY_PROJECT, headers=h).json()["id"]
        for root in ("/dicomweb", f"/dicomweb/projects/{pid}"):
            with socket.create_connection(("127.0.0.1", port)) as upload:
                head = (
                    f"POST {root}/studies HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {admin}\r\n"
                    'Content-Type: multipart/related; type="application/dicom"; boundary=b\r\n'
                    "Transfer-Encoding: chunked\r\n\r\n"
                )
                upload.sendall(head.encode() + b"5\r\n--b\r\n\r\n")  # begun, and slow: the rest never comes
                time.sleep(0.5)
                r = httpx.get(f"http://127.0.0.1:{port}/v1/projects", headers=h, timeout=30)
                assert r.status_code == 200, (root, r.status_code, r.text)  # the one connection was free
