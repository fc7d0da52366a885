"""Real worker processes: Celery over the machine's Redis with PostgreSQL, and `kamp serve` on the embedded
defaults (SQLite database and broker), driven through HTTP on real cephalograms."""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis
from sqlalchemy import create_engine, text

from models.datasets import load_protocol
from server.cli import worker_command
from server.settings import Settings

from ..server.conftest import PG_ADMIN_URL
from .tiny import TINY_PROJECT, TINY_TRAINING

pytestmark = pytest.mark.slow


def _env(settings: dict[str, str]) -> dict[str, str]:
    # One torch thread per worker: the test machine has 2 cores and the tests run beside each other.
    return {**os.environ, **settings, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _worker(env: dict[str, str], log: Path) -> subprocess.Popen:
    cmd = [*worker_command(beat=False), "--without-gossip", "--without-mingle"]
    return subprocess.Popen(cmd, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)


def _wait(predicate: Callable[[], object], timeout: float, what: str, log: Path | None = None) -> object:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    tail = log.read_text()[-3000:] if log and log.exists() else ""
    raise AssertionError(f"timed out waiting for {what}\n{tail}")


class Client:
    def __init__(self, http: httpx.Client | object, key: str) -> None:
        self.http, self.key = http, key

    def __call__(self, method: str, url: str, **kw: object) -> httpx.Response:
        return self.http.request(method, url, headers={"Authorization": f"Bearer {self.key}"}, **kw)  # type: ignore[attr-defined]


def _project_with_step(
    c: Client, data_root: Path, step: int, pid: str | None, n: int = 6, training: dict | None = None
) -> str:
    protocol = load_protocol(data_root, "cld38-5step")
    ds = protocol.load_dataset(data_root)
    if pid is None:
        r = c("POST", "/v1/projects", json={**TINY_PROJECT, "training": training or TINY_TRAINING})
        assert r.status_code == 201, r.text
        pid = r.json()["id"]
    codes = protocol.steps[step].landmarks[:4]
    assert (
        c("POST", f"/v1/projects/{pid}/landmark-sets", json={"landmarks": [{"code": x} for x in codes]}).status_code
        == 201
    )
    for image_id in protocol.steps[step].images[:n]:
        sid = c(
            "POST",
            "/v1/studies",
            files={"file": (f"{image_id}.jpg", ds.image_path(image_id).read_bytes())},
            data={"spacing_x_mm": "0.2", "spacing_y_mm": "0.2"},
        ).json()["id"]
        kp = ds.keypoints([image_id], codes, protocol.annotator)[0]
        r = c(
            "POST",
            f"/v1/projects/{pid}/landmark-sets/{step}/annotations",
            json={
                "study_id": sid,
                "points": [{"code": x, "x": float(a), "y": float(b)} for x, (a, b) in zip(codes, kp, strict=True)],
            },
        )
        assert r.status_code == 201, r.text
    return pid


def _job(c: Client, job_id: str) -> dict:
    return c("GET", f"/v1/jobs/{job_id}").json()


# ---- Redis + PostgreSQL ------------------------------------------------------------------------------------


@pytest.fixture
def production_like(tmp_path: Path) -> Iterator[tuple[dict[str, str], Settings]]:
    name = f"kamp_worker_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    db = random.randint(1, 15)
    env = {
        "KAMP_DATABASE_URL": PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}",
        "KAMP_BROKER_URL": f"redis://127.0.0.1:6379/{db}",
        "KAMP_RESULT_BACKEND": f"redis://127.0.0.1:6379/{db}",
        "KAMP_DATA_DIR": str(tmp_path / "data"),
        "KAMP_VALIDATION_FRACTION": "0.5",
        "KAMP_GATE_MAX_NEW_MRE": "10000",
        "KAMP_GATE_OLD_TOLERANCE": "10000",
    }
    redis.Redis(db=db).flushdb()
    settings = Settings(**{k.removeprefix("KAMP_").lower(): v for k, v in env.items()})  # type: ignore[arg-type]
    try:
        yield env, settings
    finally:
        redis.Redis(db=db).flushdb()
        from server.db.session import session_factory

        session_factory.cache_clear()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_worker_on_redis_and_postgresql(
    production_like: tuple[dict[str, str], Settings], data_root: Path, tmp_path: Path
) -> None:
    from fastapi.testclient import TestClient

    from server.app import create_app
    from server.cli import ensure_system_key
    from server.migrate import upgrade

    env, settings = production_like
    upgrade(settings.resolved_database_url)
    system = ensure_system_key(settings)
    log = tmp_path / "worker.log"
    worker = _worker(_env(env), log)
    try:
        with TestClient(create_app(settings)) as http:
            admin_key = Client(http, system)("POST", "/v1/clinics", json={"name": "A"}).json()["admin_key"]["key"]
            c = Client(http, admin_key)
            pid = _project_with_step(c, data_root, 0, None)
            job0 = c("POST", f"/v1/projects/{pid}/landmark-sets/0/submit", json={"reason": "first set"})
            assert job0.status_code == 202, job0.text
            j0 = job0.json()["id"]
            _wait(lambda: _job(c, j0)["status"] == "succeeded", 180, "step 0's job", log)
            _project_with_step(c, data_root, 1, pid)
            j1 = c("POST", f"/v1/projects/{pid}/landmark-sets/1/submit", json={}).json()["id"]
            _wait(lambda: _job(c, j1)["status"] == "succeeded", 180, "step 1's job", log)
            history = c("GET", f"/v1/projects/{pid}/versions").json()
            versions = history["versions"]
            assert [(v["number"], v["step"], v["status"]) for v in versions] == [(1, 0, "archived"), (2, 1, "active")]
            assert versions[1]["parent_id"] == versions[0]["id"] and history["active_version_id"] == versions[1]["id"]
            assert [s["step"] for s in versions[1]["summary"]["steps"]] == [0, 1]
            # The project's model has both stages: the predict route answers every point from the local one.
            image = (data_root / "isbi2015" / "images" / "151.jpg").read_bytes()
            form = {"spacing_x_mm": "0.2", "spacing_y_mm": "0.2"}
            answer = c("POST", f"/v1/projects/{pid}/predict", files={"file": ("a.jpg", image)}, data=form)
            assert answer.status_code == 200, answer.text
            assert [lm["stage"] for lm in answer.json()["landmarks"]] == ["local"] * 8

            # The same task delivered again: it finds the job done, trains nothing, makes no version.
            from server.training.queue import celery_enqueue

            task_id = celery_enqueue(settings)(uuid.UUID(j1))
            # Results are not stored (job state lives in the database): the worker's log tells the outcome.
            done = re.compile(rf"Task kamp.train_job\[{task_id}\] succeeded .*'skipped'")
            _wait(lambda: done.search(log.read_text()), 60, "the duplicate delivery", log)
            assert len(c("GET", f"/v1/projects/{pid}/versions").json()["versions"]) == 2
    finally:
        worker.terminate()
        worker.wait(timeout=30)


@pytest.mark.usefixtures("one_torch_thread")
def test_prediction_job_on_redis_and_postgresql(
    production_like: tuple[dict[str, str], Settings], data_root: Path, tmp_path: Path
) -> None:
    from fastapi.testclient import TestClient

    from server.app import create_app
    from server.cli import ensure_system_key
    from server.db.entities import ModelVersion, PredictionJob, VersionStatus
    from server.db.session import session_factory
    from server.migrate import upgrade
    from server.storage import LocalBlobStore
    from server.training.queue import TASK_PREDICT_JOB, celery_enqueue

    from ..server.test_predict import tiny_checkpoint

    env, settings = production_like
    upgrade(settings.resolved_database_url)
    system = ensure_system_key(settings)
    log = tmp_path / "worker.log"
    worker = _worker(_env(env), log)
    try:
        with TestClient(create_app(settings)) as http:
            admin_key = Client(http, system)("POST", "/v1/clinics", json={"name": "A"}).json()["admin_key"]["key"]
            c = Client(http, admin_key)
            pid = c("POST", "/v1/projects", json=TINY_PROJECT).json()["id"]
            blobs = LocalBlobStore(settings.resolved_blob_dir)
            key = blobs.put(tiny_checkpoint(data_root, 15).to_bytes())
            with session_factory(settings.resolved_database_url)() as session:
                version = ModelVersion(
                    project_id=uuid.UUID(pid),
                    number=1,
                    step=0,
                    checkpoint_blob=key,
                    checkpoint_sha256=key,
                    strategy="finetune",
                    status=VersionStatus.active,
                )
                session.add(version)
                session.commit()
            image = (data_root / "isbi2015" / "images" / "151.jpg").read_bytes()
            form = {"spacing_x_mm": "0.1", "spacing_y_mm": "0.1"}
            r = c("POST", f"/v1/projects/{pid}/predict/jobs", files=[("files", ("a.jpg", image))], data=form)
            assert r.status_code == 202, r.text
            job = r.json()
            _wait(
                lambda: c("GET", job["links"]["self"]).json()["status"] == "succeeded", 120, "the prediction job", log
            )
            [result] = c("GET", job["links"]["results"]).json()
            sync = c("POST", f"/v1/projects/{pid}/predict", files={"file": ("a.jpg", image)}, data=form).json()
            for field in ("model_version_id", "width", "height", "spacing"):
                assert result[field] == sync[field]
            assert (result["filename"], sync["filename"]) == ("image-1", "a.jpg")  # a job keeps no uploaded name
            assert [lm["code"] for lm in result["landmarks"]] == [lm["code"] for lm in sync["landmarks"]]
            for a, b in zip(result["landmarks"], sync["landmarks"], strict=True):
                for field in ("x", "y", "x_mm", "y_mm", "confidence"):
                    assert a[field] == pytest.approx(b[field], abs=1e-3)
            with session_factory(settings.resolved_database_url)() as session:
                row = session.get(PredictionJob, uuid.UUID(job["id"]))
                assert row is not None and row.inputs and not any(blobs.exists(e["blob"]) for e in row.inputs)

            # The same task delivered again finds the job finished and does nothing.
            task_id = celery_enqueue(settings, TASK_PREDICT_JOB)(uuid.UUID(job["id"]))
            done = re.compile(rf"Task kamp.predict_job\[{task_id}\] succeeded .*'skipped'")
            _wait(lambda: done.search(log.read_text()), 60, "the duplicate delivery", log)
    finally:
        worker.terminate()
        worker.wait(timeout=30)


def test_worker_killed_mid_job_is_reaped_and_the_retry_resumes(
    production_like: tuple[dict[str, str], Settings], data_root: Path, tmp_path: Path
) -> None:
    from fastapi.testclient import TestClient

    from server.app import create_app
    from server.cli import ensure_system_key
    from server.migrate import upgrade
    from worker.jobs import reap_stale_jobs

    env, settings = production_like
    upgrade(settings.resolved_database_url)
    system = ensure_system_key(settings)
    log = tmp_path / "worker.log"
    long = {**TINY_TRAINING, "iterations": 400, "state_every": 20}
    worker = _worker(_env(env), log)
    with TestClient(create_app(settings)) as http:
        admin_key = Client(http, system)("POST", "/v1/clinics", json={"name": "A"}).json()["admin_key"]["key"]
        c = Client(http, admin_key)
        pid = _project_with_step(c, data_root, 0, None, n=4, training=long)
        job = c("POST", f"/v1/projects/{pid}/landmark-sets/0/submit", json={}).json()["id"]
        _wait(lambda: (_job(c, job)["progress"] or {}).get("iteration", 0) >= 60, 240, "training progress", log)
        worker.send_signal(signal.SIGKILL)  # no warm shutdown, no acknowledgement, no goodbye
        worker.wait(timeout=30)
        assert _job(c, job)["status"] == "running"
        time.sleep(2)
        reaped = reap_stale_jobs(Settings(**{**settings.model_dump(), "job_stale_after_s": 1}))
        assert [str(j) for j in reaped] == [job]
        failed = _job(c, job)
        assert failed["status"] == "failed" and "stopped responding" in failed["error"]
        assert c("GET", f"/v1/projects/{pid}/versions").json()["versions"] == []
        retry = c("POST", f"/v1/jobs/{job}/retry").json()["id"]
        worker = _worker(_env(env), log)
        try:
            _wait(lambda: _job(c, retry)["status"] == "succeeded", 240, "the retried job", log)
        finally:
            worker.terminate()
            worker.wait(timeout=30)
        version = c("GET", f"/v1/versions/{_job(c, retry)['model_version_id']}").json()
        assert version["hyperparameters"]["train_report"]["resumed_from"] >= 60


# ---- kamp serve on the embedded defaults ---------------------------------------------------------------------


def test_kamp_serve_embedded_end_to_end(tmp_path: Path, data_root: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = _env(
        {
            "KAMP_DATA_DIR": str(tmp_path / "var"),
            "KAMP_VALIDATION_FRACTION": "0.5",
            "KAMP_GATE_MAX_NEW_MRE": "10000",
            "KAMP_GATE_OLD_TOLERANCE": "10000",
        }
    )
    for k in [k for k in env if k in ("KAMP_DATABASE_URL", "KAMP_BROKER_URL", "KAMP_RESULT_BACKEND")]:
        del env[k]
    log = tmp_path / "serve.log"
    serve = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "serve", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        key = _wait(lambda: re.search(r"system-admin key.*: (kamp_\S+)", log.read_text()), 60, "the system key", log)
        base = f"http://127.0.0.1:{port}"
        _wait(lambda: _ready(base), 60, "the API", log)
        with httpx.Client(base_url=base, timeout=60) as http:
            admin = Client(http, key.group(1))("POST", "/v1/clinics", json={"name": "A"}).json()["admin_key"]["key"]
            c = Client(http, admin)
            pid = _project_with_step(c, data_root, 0, None, n=4)
            job = c("POST", f"/v1/projects/{pid}/landmark-sets/0/submit", json={}).json()["id"]
            _wait(lambda: _job(c, job)["status"] in ("succeeded", "failed"), 240, "the embedded worker", log)
            assert _job(c, job)["status"] == "succeeded", _job(c, job)
            assert c("GET", f"/v1/projects/{pid}/versions").json()["versions"][0]["status"] == "active"
            # A prediction job goes through the embedded prediction worker (its own queue and process).
            image = (data_root / "isbi2015" / "images" / "151.jpg").read_bytes()
            r = c("POST", f"/v1/projects/{pid}/predict/jobs", files=[("files", ("151.jpg", image))])
            assert r.status_code == 202, r.text
            url = r.json()["links"]["self"]
            _wait(lambda: c("GET", url).json()["status"] in ("succeeded", "failed"), 120, "the prediction worker", log)
            assert c("GET", url).json()["status"] == "succeeded", c("GET", url).json()
            landmarks = c("GET", f"{url}/results").json()[0]["landmarks"]
            assert len(landmarks) == 4 and {lm["stage"] for lm in landmarks} == {"local"}
    finally:
        serve.send_signal(signal.SIGINT)
        try:
            serve.wait(timeout=40)
        except subprocess.TimeoutExpired:
            serve.kill()


def _ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
