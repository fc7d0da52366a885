"""Training jobs and model versions through HTTP, on SQLite and PostgreSQL. Celery is replaced by a fake that
records the job ids it is given; no model is trained."""

from __future__ import annotations

import io
import itertools
import uuid
from typing import Any

import numpy as np
from PIL import Image
from sqlalchemy import select

from models.registry import strategy
from server.db.entities import JobStatus, ModelVersion, TrainingJob, VersionStatus
from server.storage import LocalBlobStore

from .conftest import Api
from .test_api_core import CEPH, STEP0, STEP1, assert_problem

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


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (40, 50), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def annotate_train_study(api: Api, key: str, pid: str, step: int, code: str) -> None:
    """Upload small images and annotate them until one draws the train role in the set."""
    h = api.headers(key)
    for _ in range(40):
        r = api.client.post("/v1/studies", files={"file": (f"s{next(_seeds)}.png", _png(next(_seeds)))}, headers=h)
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


def test_submit_queues_in_step_order_and_enqueues_after_commit(api: Api) -> None:
    clinic, admin = api.clinic()
    queue = fake_queue(api)
    pid = project(api, admin, training={"iterations": 5, "kanet": {"iterations": 3}}, strategy="lwf")
    # Step 1 before step 0 was ever submitted: the steps train in order.
    assert_problem(submit(api, admin, pid, 1), 409, "step-out-of-order", "never submitted")
    r = submit(api, admin, pid, 0, {"training": {"kanet": {"lr": "0.01"}, "batch_size": 4}, "reason": "first cut"})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["status"] == "queued" and job["step"] == 0 and job["attempt"] == 1 and job["strategy"] == "lwf"
    # The project stored LwF's validated settings (models.registry) beside its own.
    lwf = dict(strategy("lwf").validated)
    assert job["config"] == {**lwf, "iterations": 5, "kanet": {"iterations": 3, "lr": 0.01}, "batch_size": 4}
    assert job["created_by"] == key_id(api, clinic, admin, "admin") and "first cut" in job["log"]
    assert queue.calls == [uuid.UUID(job["id"])]
    fetched = api.client.get(f"/v1/jobs/{job['id']}", headers=api.headers(admin)).json()
    assert fetched["celery_task_id"] == "task-1" and fetched["status"] == "queued" and fetched["progress"] == {}
    assert_problem(submit(api, admin, pid, 0), 409, "job-in-progress")
    # Step 1 may queue while step 0's job is still queued; the worker waits for it. An empty body is fine.
    r1 = submit(api, admin, pid, 1)
    assert (
        r1.status_code == 202
        and r1.json()["step"] == 1
        and r1.json()["config"] == {**lwf, "iterations": 5, "kanet": {"iterations": 3}}
    )
    assert len(queue.calls) == 2
    annotator = api.key(clinic, admin, "annotator")
    listed = api.client.get(f"/v1/projects/{pid}/jobs", headers=api.headers(annotator)).json()
    assert [j["id"] for j in listed] == [r1.json()["id"], job["id"]]
    # Step 2 has no annotated train study.
    assert_problem(submit(api, admin, pid, 2), 422, "no-training-data", "no annotated study with the train role")
    assert_problem(submit(api, admin, pid, 3), 404, "not-found")
    assert len(queue.calls) == 2


def test_bad_submissions_are_422_and_queue_nothing(api: Api) -> None:
    _, admin = api.clinic()
    queue = fake_queue(api)
    pid = project(api, admin, annotated_steps=1)
    for body, contains in [
        ({"training": {"nope": 1}}, "nope"),
        ({"training": {"iterations": "many"}}, "iterations"),
        ({"training": {"kanet": {"bogus": 2}}}, "bogus"),
        ({"training": {"init": "sometimes"}}, "init"),
        ({"strategy": "magic"}, "unknown strategy"),
        ({"strategy": "joint"}, "benchmark baseline"),
        ({"training": {"iterations": 10**12}}, "iterations"),
        ({"training": {"iterations": 0}}, "iterations"),
        ({"training": {"iterations": -1}}, "iterations"),
        ({"training": {"batch_size": 0}}, "batch_size"),
        ({"training": {"device": "cuda:7"}}, "device"),
        ({"training": {"seed": 2**70}}, "seed"),
        ({"training": {"lr": 5}}, "lr"),
        ({"training": {"refine": {"iterations": 10**9}}}, "refine.iterations"),
        ({"strategy": "joint_partial"}, "earlier step's images kept"),
        ({"reason": 5}, "reason"),
    ]:
        assert_problem(submit(api, admin, pid, 0, body), 422, "invalid-request", contains)
    assert queue.calls == []
    assert api.client.get(f"/v1/projects/{pid}/jobs", headers=api.headers(admin)).json() == []
    # Nothing annotated at all: refused, with a message that says so.
    other = project(api, admin, annotated_steps=0, name="PA chest")
    assert_problem(submit(api, admin, other, 0), 422, "no-training-data", "annotate")


def test_queue_down_fails_the_job_and_retry_makes_a_new_attempt(api: Api) -> None:
    _, admin = api.clinic()
    fake_queue(api, fail=True)
    pid = project(api, admin, annotated_steps=1)
    body = assert_problem(submit(api, admin, pid, 0), 503, "queue-unavailable", "could not reach the job queue")
    failed = api.client.get(f"/v1/jobs/{body['job_id']}", headers=api.headers(admin)).json()
    assert failed["status"] == "failed" and failed["finished_at"] and failed["celery_task_id"] is None
    assert failed["error"].startswith("could not reach the job queue: ConnectionError")
    assert "s3cret" not in failed["error"] and "s3cret" not in body["detail"]
    assert "nowhere" not in failed["error"] and "nowhere" not in body["detail"]  # no internal host names
    queue = fake_queue(api)
    r = api.client.post(f"/v1/jobs/{failed['id']}/retry", headers=api.headers(admin))
    assert r.status_code == 202, r.text
    retried = r.json()
    assert retried["id"] != failed["id"] and retried["attempt"] == 2 and retried["status"] == "queued"
    assert retried["step"] == 0 and retried["strategy"] == failed["strategy"] and retried["config"] == failed["config"]
    assert queue.calls == [uuid.UUID(retried["id"])]
    # While the retry is queued, another retry of the failed job would be a second job for the set.
    assert_problem(api.client.post(f"/v1/jobs/{failed['id']}/retry", headers=api.headers(admin)), 409)
    set_job(api, retried["id"], status=JobStatus.succeeded)
    assert_problem(api.client.post(f"/v1/jobs/{retried['id']}/retry", headers=api.headers(admin)), 409, "not-retryable")


def test_cancel_queued_running_and_finished_jobs(api: Api) -> None:
    _, admin = api.clinic()
    queue = fake_queue(api)
    h = api.headers(admin)
    pid = project(api, admin, annotated_steps=1)
    job = submit(api, admin, pid, 0).json()
    r = api.client.post(f"/v1/jobs/{job['id']}/cancel", headers=h)
    assert r.status_code == 200 and r.json()["status"] == "cancelled" and r.json()["finished_at"]
    assert_problem(api.client.post(f"/v1/jobs/{job['id']}/cancel", headers=h), 409, "job-finished")
    limit, api.settings.max_train_iterations = api.settings.max_train_iterations, 1  # tightened since
    retry = api.client.post(f"/v1/jobs/{job['id']}/retry", headers=h)
    assert_problem(retry, 422, "invalid-request", "bounds changed since the job was submitted")
    api.settings.max_train_iterations = limit
    again = api.client.post(f"/v1/jobs/{job['id']}/retry", headers=h).json()
    assert again["attempt"] == 2 and len(queue.calls) == 2
    set_job(api, again["id"], status=JobStatus.running)
    r = api.client.post(f"/v1/jobs/{again['id']}/cancel", headers=h)
    assert r.status_code == 202 and r.json()["status"] == "running" and r.json()["cancel_requested"] is True
    set_job(api, again["id"], status=JobStatus.failed, log="\n".join(f"line {i}" for i in range(500)))
    assert_problem(api.client.post(f"/v1/jobs/{again['id']}/cancel", headers=h), 409, "job-finished")
    log = api.client.get(f"/v1/jobs/{again['id']}", headers=h).json()["log"].splitlines()
    assert len(log) == 200 and log[-1] == "line 499"


def test_annotators_read_job_logs_without_tracebacks(api: Api) -> None:
    clinic, admin = api.clinic()
    fake_queue(api)
    pid = project(api, admin, annotated_steps=1)
    job = submit(api, admin, pid, 0).json()
    trace = 'Traceback (most recent call last):\n  File "/srv/kamp/worker/jobs.py", line 81, in run\n'
    trace += "    x()\nOSError: disk\n"
    set_job(api, job["id"], status=JobStatus.failed, log="training step 0\nfailed: OSError: disk\n" + trace)
    annotator = api.key(clinic, admin, "annotator")
    seen = api.client.get(f"/v1/jobs/{job['id']}", headers=api.headers(annotator)).json()["log"]
    assert "/srv/kamp" not in seen and "failed: OSError: disk" in seen and "training step 0" in seen
    listed = api.client.get(f"/v1/projects/{pid}/jobs", headers=api.headers(annotator)).json()[0]["log"]
    assert listed == seen
    assert "/srv/kamp" in api.client.get(f"/v1/jobs/{job['id']}", headers=api.headers(admin)).json()["log"]


def test_the_system_key_cancels_any_clinics_job(api: Api) -> None:
    """An operator stops a job that holds the shared workers; the job's log says who asked."""
    _, admin = api.clinic()
    fake_queue(api)
    pid = project(api, admin, annotated_steps=1)
    job = submit(api, admin, pid, 0).json()
    set_job(api, job["id"], status=JobStatus.running)
    r = api.client.post(f"/v1/jobs/{job['id']}/cancel", headers=api.headers(api.system_key))
    assert r.status_code == 202 and r.json()["cancel_requested"] is True
    assert "cancel requested with the system key" in r.json()["log"]
    assert_problem(api.client.get(f"/v1/jobs/{job['id']}", headers=api.headers(api.system_key)), 403, "forbidden")
    assert_problem(api.client.post(f"/v1/jobs/{uuid.uuid4()}/cancel", headers=api.headers(api.system_key)), 404)


def test_version_history_promote_and_rollback(api: Api) -> None:
    clinic, admin = api.clinic()
    h = api.headers(admin)
    pid = project(api, admin, annotated_steps=0)
    steps = [{"step": 0, "mre": 1.6, "unit": "mm", "sdr": {"2.0": 0.7}}, {"step": 1, "mre": 2.1, "unit": "mm"}]
    v1, v2, v3, v4 = add_versions(
        api,
        pid,
        [
            {"status": VersionStatus.active},
            {"status": VersionStatus.candidate, "step": 1, "parent": 0, "report": {"steps": steps, "gate": "pass"}},
            {"status": VersionStatus.rejected, "step": 1, "parent": 0, "report": {"steps": "garbled"}},
            {"status": VersionStatus.candidate, "step": 1, "parent": 1},
        ],
    )
    annotator = api.key(clinic, admin, "annotator")
    history = api.client.get(f"/v1/projects/{pid}/versions", headers=api.headers(annotator)).json()
    assert history["active_version_id"] == v1
    assert [(v["number"], v["parent_number"], v["status"]) for v in history["versions"]] == [
        (1, None, "active"),
        (2, 1, "candidate"),
        (3, 1, "rejected"),
        (4, 2, "candidate"),
    ]
    assert history["versions"][1]["parent_id"] == v1 and history["versions"][1]["summary"]["steps"] == steps
    assert history["versions"][0]["summary"] == {"steps": []} and history["versions"][2]["summary"] == {"steps": []}

    def promote(vid: str, action: str = "promote", reason: str = "reviewed"):  # type: ignore[no-untyped-def]
        return api.client.post(f"/v1/versions/{vid}/{action}", json={"reason": reason}, headers=h)

    assert_problem(promote(v2, reason=""), 422, "invalid-request", "reason")
    assert_problem(
        api.client.post(f"/v1/versions/{v2}/promote", json={"reason": "x"}, headers=api.headers(annotator)), 403
    )
    r = promote(v2, reason="passes on the March studies")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "active" and active_versions(api, pid) == [2]
    admin_id = key_id(api, clinic, admin, "admin")
    assert [(e["action"], e["actor"], e["reason"]) for e in r.json()["events"]] == [
        ("promoted", admin_id, "passes on the March studies")
    ]
    old = api.client.get(f"/v1/versions/{v1}", headers=h).json()
    assert old["status"] == "archived" and [e["action"] for e in old["events"]] == ["archived"]
    assert old["hyperparameters"] == {"iterations": 250} and old["report"] == {} and old["job_id"] is None
    assert_problem(promote(v2), 409, "already-active")
    # A version the gate rejected can be promoted by a person; the override is on record.
    r = promote(v3, reason="override: gate too strict for step 1")
    assert r.status_code == 200 and active_versions(api, pid) == [3]
    assert r.json()["events"][-1]["reason"] == "override: gate too strict for step 1"
    # Roll back to v1 (archived, earlier): v3 is archived.
    r = promote(v1, "rollback", "v3 misplaces gonion")
    assert r.status_code == 200, r.text
    assert [e["action"] for e in r.json()["events"]] == ["archived", "rolled_back"] and active_versions(api, pid) == [1]
    statuses = {
        v["number"]: v["status"] for v in api.client.get(f"/v1/projects/{pid}/versions", headers=h).json()["versions"]
    }
    assert statuses == {1: "active", 2: "archived", 3: "archived", 4: "candidate"}
    assert_problem(promote(v1, "rollback"), 409, "not-archived")  # the active one
    assert_problem(promote(v4, "rollback"), 409, "not-archived")  # a candidate
    assert_problem(promote(v2, "rollback"), 409, "not-earlier")  # newer than the active v1: promote it instead
    assert active_versions(api, pid) == [1]
    # Each version says which decision the API takes for it, so a client offers no refused one.
    listed = api.client.get(f"/v1/projects/{pid}/versions", headers=h).json()["versions"]
    assert [v["decision"] for v in listed] == [None, "promote", "promote", "promote"]
    assert promote(v2).status_code == 200  # promoted, not rolled back to
    assert api.client.get(f"/v1/versions/{v1}", headers=h).json()["decision"] == "rollback"  # older, archived


def test_checkpoint_download(api: Api) -> None:
    clinic, admin = api.clinic()
    pid = project(api, admin, annotated_steps=0, name="Lateral ceph / PA: 2026")
    v1, v2 = add_versions(api, pid, [{"status": VersionStatus.active}, {"status": VersionStatus.candidate}])
    r = api.client.get(f"/v1/versions/{v1}/checkpoint", headers=api.headers(admin))
    assert r.status_code == 200, r.text
    assert r.content == f"checkpoint v1 of {pid}".encode()
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["content-disposition"] == 'attachment; filename="Lateral-ceph-PA-2026-v1.safetensors"'
    sha = api.client.get(f"/v1/versions/{v1}", headers=api.headers(admin)).json()["checkpoint_sha256"]
    assert r.headers["etag"] == f'"{sha}"'
    cached = api.client.get(
        f"/v1/versions/{v1}/checkpoint", headers={**api.headers(admin), "If-None-Match": f'"{sha}"'}
    )
    assert cached.status_code == 304 and not cached.content
    LocalBlobStore(api.settings.resolved_blob_dir).path(
        api.client.get(f"/v1/versions/{v2}", headers=api.headers(admin)).json()["checkpoint_sha256"]
    ).unlink()
    assert_problem(api.client.get(f"/v1/versions/{v2}/checkpoint", headers=api.headers(admin)), 404, "blob-missing")
    annotator = api.key(clinic, admin, "annotator")
    assert_problem(api.client.get(f"/v1/versions/{v1}/checkpoint", headers=api.headers(annotator)), 403, "forbidden")


def test_roles_and_other_clinics(api: Api) -> None:
    clinic, admin = api.clinic("A")
    _, other_admin = api.clinic("B")
    queue = fake_queue(api)
    pid = project(api, admin, annotated_steps=1)
    job = submit(api, admin, pid, 0).json()
    (vid,) = add_versions(api, pid, [{"status": VersionStatus.candidate}])
    reason = {"reason": "r"}
    predict, annotator = api.key(clinic, admin, "predict"), api.key(clinic, admin, "annotator")
    reads = [
        ("get", f"/v1/jobs/{job['id']}", None),
        ("get", f"/v1/projects/{pid}/jobs", None),
        ("get", f"/v1/projects/{pid}/versions", None),
        ("get", f"/v1/versions/{vid}", None),
    ]
    writes = [
        ("post", f"/v1/projects/{pid}/landmark-sets/0/submit", {}),
        ("post", f"/v1/jobs/{job['id']}/cancel", None),
        ("post", f"/v1/jobs/{job['id']}/retry", None),
        ("post", f"/v1/versions/{vid}/promote", reason),
        ("post", f"/v1/versions/{vid}/rollback", reason),
        ("get", f"/v1/versions/{vid}/checkpoint", None),
    ]
    for method, path, body in reads + writes:
        kwargs: dict[str, Any] = {} if body is None else {"json": body}
        assert_problem(api.client.request(method, path, headers=api.headers(predict), **kwargs), 403, "forbidden")
        assert_problem(api.client.request(method, path, headers=api.headers(other_admin), **kwargs), 404, "not-found")
    for method, path, _ in reads:
        assert api.client.request(method, path, headers=api.headers(annotator)).status_code == 200, path
    for method, path, body in writes:
        kwargs = {} if body is None else {"json": body}
        assert_problem(api.client.request(method, path, headers=api.headers(annotator), **kwargs), 403, "forbidden")
    # Nothing changed: one queued job, one call to the queue, the version still a candidate.
    assert api.client.get(f"/v1/jobs/{job['id']}", headers=api.headers(admin)).json()["status"] == "queued"
    assert len(queue.calls) == 1 and active_versions(api, pid) == []
