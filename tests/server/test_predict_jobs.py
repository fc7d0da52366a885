"""Asynchronous prediction jobs through HTTP, on both databases, with a tiny model trained here. Celery is replaced
by a fake that records the jobs it is handed; the test runs the worker's job function on them in-process."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from server.db.base import utcnow
from server.db.entities import JobStatus, PredictionJob, VersionStatus
from worker.jobs import Outcome
from worker.predict_jobs import reap_stale_prediction_jobs, run_prediction_job

from .api_helpers import CEPH, assert_problem
from .conftest import Api
from .test_predict import _add_version, _image, tiny_checkpoint
from .test_studies_annotations import dicom_file

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class FakeQueue:
    """Stands in for Celery: checks that the job it is handed is committed, and runs it when asked."""

    def __init__(self, api: Api, fail: bool = False) -> None:
        self.api, self.fail, self.calls = api, fail, []  # type: list[uuid.UUID]
        api.client.app.state.enqueue_prediction = self

    def __call__(self, job_id: uuid.UUID) -> str:
        self.calls.append(job_id)
        assert self.job(job_id).status == JobStatus.queued, "enqueued before the job was committed"
        if self.fail:
            raise ConnectionError("broker at redis://:s3cret@nowhere:6379 refused the connection")
        return f"task-{len(self.calls)}"

    def job(self, job_id: uuid.UUID | str) -> PredictionJob:
        with self.api.client.app.state.session_factory() as session:
            job = session.get(PredictionJob, uuid.UUID(str(job_id)))
            assert job is not None
            return job

    def run(self) -> list[Outcome]:
        """What a worker would do with every task published so far."""
        return [run_prediction_job(j, self.api.settings) for j in self.calls]


@pytest.fixture
def setup(api: Api) -> tuple[str, str, str]:
    """(project id, admin key, predict key)."""
    clinic, admin = api.clinic()
    pid = api.client.post("/v1/projects", json=CEPH, headers=api.headers(admin)).json()["id"]
    return pid, admin, api.key(clinic, admin, "predict")


def _blobs(api: Api) -> set[str]:
    return {p.name for p in api.settings.resolved_blob_dir.rglob("*") if p.is_file()}


def _submit(api: Api, pid: str, key: str, files: list[tuple[str, bytes]], **form: object):  # type: ignore[no-untyped-def]
    return api.client.post(
        f"/v1/projects/{pid}/predict/jobs",
        files=[("files", f) for f in files],
        data={k: str(v) for k, v in form.items()},
        headers=api.headers(key),
    )


def _close(a: object, b: object) -> bool:
    """`a` == `b` with every float compared within 0.01 (JSON trees of dicts, lists, strings and numbers)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, int | float) and isinstance(b, int | float) and abs(a - b) <= 0.01
    return a == b


def test_job_runs_with_its_version_and_keeps_no_image(api: Api, setup: tuple[str, str, str], data_root: Path) -> None:
    pid, admin, predict = setup
    queue = FakeQueue(api)
    v1 = _add_version(api, pid, tiny_checkpoint(data_root, 15), VersionStatus.active)
    v2 = _add_version(api, pid, tiny_checkpoint(data_root, 25), VersionStatus.candidate)
    files = [
        ("a.jpg", _image(data_root)),
        ("b.dcm", dicom_file("RG1_UNCR.dcm").read_bytes()),
        ("c.jpg", _image(data_root)),
    ]
    before = _blobs(api)
    r = _submit(api, pid, predict, files)
    assert r.status_code == 202, r.text
    job = r.json()
    assert (job["status"], job["total"], job["done"], job["model_version_id"]) == ("queued", 3, 0, v1)
    assert job["links"]["self"] == f"/v1/projects/{pid}/predict/jobs/{job['id']}"
    assert queue.calls == [uuid.UUID(job["id"])] and queue.job(job["id"]).celery_task_id == "task-1"
    inputs = [e["blob"] for e in queue.job(job["id"]).inputs]
    assert set(inputs) <= _blobs(api) - before and len(set(inputs)) == 2  # the same image twice is stored once
    assert_problem(api.client.get(job["links"]["results"], headers=api.headers(predict)), 409, "job-not-finished")

    # A promotion after submission does not change the job's model.
    assert api.client.post(f"/v1/versions/{v2}/promote", json={"reason": "x"}, headers=api.headers(admin)).is_success
    assert queue.run() == [Outcome.succeeded]
    status = api.client.get(job["links"]["self"], headers=api.headers(admin)).json()
    assert (status["status"], status["done"], status["error"]) == ("succeeded", 3, None) and status["finished_at"]
    results = api.client.get(job["links"]["results"], headers=api.headers(predict))
    assert results.status_code == 200, results.text
    batch = api.client.post(
        f"/v1/projects/{pid}/predict/batch",
        files=[("files", f) for f in files],
        data={"version_id": v1},
        headers=api.headers(predict),
    )
    # The job keeps no uploaded name (an identifier): its results name the images by position.
    assert [p["filename"] for p in results.json()] == ["image-1", "image-2", "image-3"]
    # The same answers up to float rounding: the job's forward passes group the images otherwise than the batch
    # route's, and oneDNN's fp32 kernels round differently by batch size: up to 1.1e-3 px on an AVX2 CPU, where
    # the model's flat heatmaps (confidence ~0.4) amplify it.
    assert _close([{**p, "filename": None} for p in results.json()], [{**p, "filename": None} for p in batch.json()])
    # Of the images nothing is kept: only the results blob is new.
    assert len(_blobs(api) - before) == 1 and not set(inputs) & _blobs(api)
    listed = api.client.get(f"/v1/projects/{pid}/predict/jobs", headers=api.headers(predict)).json()
    assert [j["id"] for j in listed] == [job["id"]]

    # The task delivered again finds the job done.
    assert run_prediction_job(uuid.UUID(job["id"]), api.settings) == Outcome.skipped
    assert api.client.get(job["links"]["results"], headers=api.headers(predict)).json() == results.json()


def test_refusals_store_nothing(api: Api, setup: tuple[str, str, str], data_root: Path) -> None:
    pid, admin, predict = setup
    queue = FakeQueue(api)
    image = ("a.jpg", _image(data_root))
    assert_problem(_submit(api, pid, predict, [image]), 409, "no-model")
    _add_version(api, pid, tiny_checkpoint(data_root, 15), VersionStatus.active)
    before = _blobs(api)
    no_files = api.client.post(f"/v1/projects/{pid}/predict/jobs", data={"x": "1"}, headers=api.headers(predict))
    assert_problem(no_files, 422, "invalid-request", "files")
    assert_problem(_submit(api, pid, predict, [image, ("junk.png", b"not an image")]), 422, "not-an-image", "junk.png")
    assert_problem(_submit(api, pid, predict, [image], spacing_x_mm=0, spacing_y_mm=0.1), 422, "bad-spacing")
    assert_problem(_submit(api, pid, predict, [image], version_id=uuid.uuid4()), 404, "not-found")
    other_clinic, other_admin = api.clinic("Other")
    assert_problem(_submit(api, pid, api.key(other_clinic, other_admin, "predict"), [image]), 404, "not-found")
    assert_problem(_submit(api, pid, api.system_key, [image]), 403, "forbidden")
    api.client.app.state.settings = api.settings.model_copy(update={"max_prediction_job_images": 2})
    assert_problem(_submit(api, pid, predict, [image] * 3), 413, "job-too-large")
    assert _blobs(api) == before and queue.calls == []

    # The queue is down: the job is failed, its images deleted, and the answer says so.
    queue.fail = True
    down = assert_problem(_submit(api, pid, predict, [image]), 503, "queue-unavailable")
    assert "s3cret" not in down["detail"] and queue.job(down["job_id"]).status == JobStatus.failed
    assert "nowhere" not in down["detail"]  # no internal host names
    assert _blobs(api) == before
    # Another clinic sees none of the project's jobs.
    other = api.key(other_clinic, other_admin, "predict")
    url = f"/v1/projects/{pid}/predict/jobs/{down['job_id']}"
    assert_problem(api.client.get(url, headers=api.headers(other)), 404, "not-found")
    failed = assert_problem(api.client.get(f"{url}/results", headers=api.headers(admin)), 409, "job-failed")
    assert "could not reach the job queue" in failed["detail"]


def test_failed_and_stale_jobs_delete_their_images(api: Api, setup: tuple[str, str, str], data_root: Path) -> None:
    pid, _, predict = setup
    queue = FakeQueue(api)
    _add_version(api, pid, tiny_checkpoint(data_root, 15), VersionStatus.active)
    before = _blobs(api)
    broken, stale = (_submit(api, pid, predict, [(f"{n}.jpg", _image(data_root))]).json()["id"] for n in "ab")
    with api.client.app.state.session_factory() as session:
        rows = {str(j.id): j for j in session.scalars(select(PredictionJob))}
        # A JPEG is decoded reduced for the model, so the worker checks its size (a whole decode: its digest).
        rows[broken].inputs = [{**rows[broken].inputs[0], "width": 967}]
        rows[stale].status, rows[stale].heartbeat_at = JobStatus.running, utcnow() - timedelta(hours=1)
        session.commit()
    assert run_prediction_job(uuid.UUID(broken), api.settings) == Outcome.failed
    assert reap_stale_prediction_jobs(api.settings) == [uuid.UUID(stale)]
    url = f"/v1/projects/{pid}/predict/jobs"
    for job_id, error in ((broken, "other pixels"), (stale, "stopped responding")):
        body = assert_problem(
            api.client.get(f"{url}/{job_id}/results", headers=api.headers(predict)), 409, "job-failed"
        )
        assert error in body["detail"]
    assert _blobs(api) == before and len(queue.calls) == 2


def test_cancel_queued_and_running_jobs(api: Api, setup: tuple[str, str, str], data_root: Path) -> None:
    pid, admin, predict = setup
    queue = FakeQueue(api)
    _add_version(api, pid, tiny_checkpoint(data_root, 15), VersionStatus.active)
    before = _blobs(api)
    queued, running = (_submit(api, pid, predict, [(f"{n}.jpg", _image(data_root))]).json() for n in "ab")
    assert _blobs(api) != before
    with api.client.app.state.session_factory() as session:
        job = session.get(PredictionJob, uuid.UUID(running["id"]))
        job.status, job.started_at, job.heartbeat_at = JobStatus.running, utcnow(), utcnow()
        session.commit()
    for job in (queued, running):
        r = api.client.post(f"{job['links']['self']}/cancel", headers=api.headers(predict))
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "cancelled" and r.json()["finished_at"]
        assert_problem(api.client.get(job["links"]["results"], headers=api.headers(admin)), 409, "job-cancelled")
        again = api.client.post(f"{job['links']['self']}/cancel", headers=api.headers(predict))
        assert_problem(again, 409, "job-ended", "already ended (cancelled)")
    assert _blobs(api) == before  # the images are gone at once
    # The tasks still in the queue find the jobs ended and do nothing; a finished job cannot be cancelled either.
    assert queue.run() == [Outcome.skipped, Outcome.skipped]
    assert {queue.job(j["id"]).status for j in (queued, running)} == {JobStatus.cancelled}
    done = _submit(api, pid, predict, [("c.jpg", _image(data_root))]).json()
    assert queue.run()[-1] == Outcome.succeeded
    assert_problem(api.client.post(f"{done['links']['self']}/cancel", headers=api.headers(predict)), 409, "job-ended")
    # Another clinic's key sees no such job.
    _, other_admin = api.clinic("other")
    r = api.client.post(f"{done['links']['self']}/cancel", headers=api.headers(other_admin))
    assert_problem(r, 404)
