"""Service tests run twice: on SQLite (the embedded default) and on the machine's real PostgreSQL.

Every test gets a fresh database at the migrations' head (a copy of one migrated once per session), so tests never
see each other's rows."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from starlette.types import ASGIApp

from server.app import create_app
from server.cli import ensure_system_key
from server.migrate import upgrade
from server.settings import Settings

#: Superuser URL of the PostgreSQL server the tests create their databases on (trust auth on the CI machine).
PG_ADMIN_URL = os.environ.get("KAMP_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite database migrated once per session; each test gets a copy of the file."""
    path = tmp_path_factory.mktemp("template") / "kamp.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    """A PostgreSQL database migrated once per session; each test's database is created from it (TEMPLATE)."""
    name = f"kamp_template_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    upgrade(url)
    from server.db.session import session_factory

    session_factory.cache_clear()
    engine = create_engine(url)
    engine.dispose()  # no connection may stay open on a template
    try:
        yield name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database already at the migrations' head: a copy of the session's migrated template (the tests'
    own `upgrade` calls then find nothing to do)."""
    if request.param == "sqlite":
        target = tmp_path / "kamp.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), target)
        yield f"sqlite:///{target}"
        return
    template = request.getfixturevalue("postgres_template")
    name = f"kamp_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        from server.db.session import session_factory

        session_factory.cache_clear()  # drop pooled connections before the database goes
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@dataclass
class Api:
    client: TestClient
    settings: Settings
    system_key: str

    def headers(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    def clinic(self, name: str = "Riverside") -> tuple[str, str]:
        """Create a clinic; returns (its id, its first admin key)."""
        r = self.client.post("/v1/clinics", json={"name": name}, headers=self.headers(self.system_key))
        assert r.status_code == 201, r.text
        return r.json()["clinic"]["id"], r.json()["admin_key"]["key"]

    def key(self, clinic_id: str, admin_key: str, role: str) -> str:
        r = self.client.post(f"/v1/clinics/{clinic_id}/api-keys", json={"role": role}, headers=self.headers(admin_key))
        assert r.status_code == 201, r.text
        return r.json()["key"]


def make_api(database_url: str, tmp_path: Path, **overrides: object) -> Api:
    settings = Settings(data_dir=tmp_path / "var", database_url=database_url, **overrides)  # type: ignore[arg-type]
    upgrade(database_url)
    key = ensure_system_key(settings)
    assert key
    return Api(TestClient(create_app(settings)), settings, key)


@pytest.fixture
def api(database_url: str, tmp_path: Path) -> Iterator[Api]:
    a = make_api(database_url, tmp_path)
    with a.client:
        yield a


@contextlib.contextmanager
def serve(app: ASGIApp) -> Iterator[int]:
    """`app` served by a real uvicorn on a free local port, in a thread; yields the port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)
