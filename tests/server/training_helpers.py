"""What the training API tests share: a fake queue in Celery's place, projects with annotated steps, and
jobs and versions written straight to the database where a test needs a state the API only reaches by training."""

from __future__ import annotations

import io
import itertools
import uuid
from typing import Any

import numpy as np
from PIL import Image
from sqlalchemy import select

from server.db.entities import JobStatus, ModelVersion, TrainingJob, VersionStatus
from server.storage import LocalBlobStore

from .api_helpers import CEPH, STEP0, STEP1
from .conftest import Api

_seeds = itertools.count(1)


class FakeQueue:
    """Stands in for Celery: checks that the job it is handed is committed (a worker could read it)."""

    def __init__(self, api: Api, fail: bool = False) -> None:
        self.api, self.fail, self.calls = api, fail, []  # type: list[uuid.UUID]

    def __call__(self, job_id: uuid.UUID) -> str:
        self.calls.append(job_id)
        with self.api.client.app.state.session_factory() as session:
            job = session.get(TrainingJob, job_id)
            assert job is not None and job.status == JobStatus.queued, "enqueued before the job was committed"
        if self.fail:
            raise ConnectionError("broker at redis://:s3cret@nowhere:6379 refused the connection")
        return f"task-{len(self.calls)}"


def fake_queue(api: Api, fail: bool = False) -> FakeQueue:
    queue = FakeQueue(api, fail)
    api.client.app.state.enqueue = queue
    return queue


def png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (40, 50), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def annotate_train_study(api: Api, key: str, pid: str, step: int, code: str) -> None:
    """Upload small images and annotate them until one draws the train role in the set."""
    h = api.headers(key)
    for _ in range(40):
        r = api.client.post("/v1/studies", files={"file": (f"s{next(_seeds)}.png", png(next(_seeds)))}, headers=h)
        assert r.status_code == 201, r.text
        body = {"study_id": r.json()["id"], "points": [{"code": code, "x": 10.0, "y": 12.0}]}
        a = api.client.post(f"/v1/projects/{pid}/landmark-sets/{step}/annotations", json=body, headers=h)
        assert a.status_code == 201, a.text
        if a.json()["split"] == "train":
            return
    raise AssertionError("no study drew the train role")


def project(api: Api, admin: str, *, annotated_steps: int = 2, **fields: Any) -> str:
    """A project with steps 0 and 1 (and an empty step 2), the first `annotated_steps` with a train study."""
    h = api.headers(admin)
    r = api.client.post("/v1/projects", json={**CEPH, **fields}, headers=h)
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    for body in (STEP0, STEP1, {"landmarks": [{"code": "Po"}]}):
        assert api.client.post(f"/v1/projects/{pid}/landmark-sets", json=body, headers=h).status_code == 201
    for step, code in list(enumerate(["S", "D"]))[:annotated_steps]:
        annotate_train_study(api, admin, pid, step, code)
    return pid


def submit(api: Api, key: str, pid: str, step: int, body: dict | None = None):  # type: ignore[no-untyped-def]
    kwargs = {} if body is None else {"json": body}
    return api.client.post(f"/v1/projects/{pid}/landmark-sets/{step}/submit", headers=api.headers(key), **kwargs)


def set_job(api: Api, job_id: str, **fields: Any) -> None:
    with api.client.app.state.session_factory() as session:
        job = session.get(TrainingJob, uuid.UUID(job_id))
        assert job is not None
        for name, value in fields.items():
            setattr(job, name, value)
        session.commit()


def add_versions(api: Api, pid: str, specs: list[dict[str, Any]]) -> list[str]:
    """Insert model versions as a worker would: numbered 1.., each with a checkpoint blob; `parent` is an index."""
    store = LocalBlobStore(api.settings.resolved_blob_dir)
    ids: list[uuid.UUID] = []
    with api.client.app.state.session_factory() as session:
        for n, spec in enumerate(specs, start=1):
            key = store.put(f"checkpoint v{n} of {pid}".encode())
            row = ModelVersion(
                project_id=uuid.UUID(pid),
                number=n,
                step=spec.get("step", 0),
                parent_id=ids[spec["parent"]] if "parent" in spec else None,
                checkpoint_blob=key,
                checkpoint_sha256=key,
                strategy="kamp",
                hyperparameters={"iterations": 250},
                report=spec.get("report", {}),
                status=spec["status"],
                reason=spec.get("reason", ""),
            )
            session.add(row)
            session.flush()
            ids.append(row.id)
        session.commit()
    return [str(i) for i in ids]


def active_versions(api: Api, pid: str) -> list[int]:
    with api.client.app.state.session_factory() as session:
        q = select(ModelVersion.number).where(
            ModelVersion.project_id == uuid.UUID(pid), ModelVersion.status == VersionStatus.active
        )
        return list(session.scalars(q))


def key_id(api: Api, clinic: str, admin: str, role: str) -> str:
    keys = api.client.get(f"/v1/clinics/{clinic}/api-keys", headers=api.headers(admin)).json()
    return next(k["id"] for k in keys if k["role"] == role)
