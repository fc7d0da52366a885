"""Training jobs through HTTP, on SQLite and PostgreSQL: submitting, queueing, cancelling, retrying and their
logs. Celery is replaced by a fake that records the job ids it is given; no model is trained."""

from __future__ import annotations

import uuid
from pathlib import Path

from models.registry import strategy, with_validated
from server.db.entities import JobStatus

from .api_helpers import assert_problem
from .conftest import Api, make_api
from .training_helpers import annotate_train_study, fake_queue, key_id, project, set_job, submit


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
    lwf = dict(strategy("lwf").validated_for("cephalometric"))
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


def test_a_step_of_another_strategy_trains_that_strategys_validated_settings(api: Api) -> None:
    """The project stored KSD's validated settings; a step submitted as LwF trains LwF's for the project's
    modality instead, and keeps what the project and the request set themselves."""
    _, admin = api.clinic()
    fake_queue(api)
    own = {"iterations": 5, "refine": {"iterations": 7}}
    for modality in ("cephalometric", "chest"):
        pid = project(api, admin, name=modality, modality=modality, strategy="kamp_ksd_only", training=own)
        r = submit(api, admin, pid, 0, {"strategy": "lwf", "training": {"batch_size": 4}})
        assert r.status_code == 202, r.text
        lwf = with_validated("lwf", own, modality)
        assert r.json()["strategy"] == "lwf" and r.json()["config"] == {**lwf, "batch_size": 4}, modality
        # A value the project set itself stays, even where KSD's validated settings have one.
        pid = project(
            api, admin, name=f"{modality} 2", modality=modality, strategy="kamp_ksd_only", training={"alpha": 3.0}
        )
        config = submit(api, admin, pid, 0, {"strategy": "lwf"}).json()["config"]
        assert config == with_validated("lwf", {"alpha": 3.0}, modality), modality


def test_an_incremental_step_of_few_studies_is_warned_in_its_log(database_url: str, tmp_path: Path) -> None:
    """Fewer annotated training studies than the service's `few_train_studies` (here 2): the job is queued and
    its log says so, and says KA-Net learns from those alone where the strategy has one; step 0 (nothing to
    forget) and a step with enough studies are not warned."""
    api = make_api(database_url, tmp_path, few_train_studies=2)
    with api.client:
        _, admin = api.clinic()
        fake_queue(api)
        pid = project(api, admin)
        assert "warning" not in submit(api, admin, pid, 0).json()["log"]
        r = submit(api, admin, pid, 1, {"reason": "new set"})
        assert r.status_code == 202, r.text
        assert r.json()["log"].startswith("submitted: new set\nwarning: landmark set 1 has 1 annotated training study")
        assert "(fewer than 2)" in r.json()["log"]
        assert "warning: kamp fits KA-Net's association" in r.json()["log"]  # the project's strategy has KA-Net
        other = project(api, admin, name="ksd")
        submit(api, admin, other, 0)
        log = submit(api, admin, other, 1, {"strategy": "kamp_ksd_only"}).json()["log"]
        assert "(fewer than 2)" in log and "KA-Net" not in log  # KSD alone has none to fit
        enough = project(api, admin, name="enough")
        annotate_train_study(api, admin, enough, 1, "D")
        assert submit(api, admin, enough, 0).status_code == 202
        assert "warning" not in submit(api, admin, enough, 1).json()["log"]


def test_bad_submissions_are_422_and_queue_nothing(api: Api) -> None:
    _, admin = api.clinic()
    queue = fake_queue(api)
    pid = project(api, admin, annotated_steps=1)
    for body, contains in [
        ({"training": {"nope": 1}}, "nope"),
        ({"training": {"amp": True}}, "unknown TrainConfig fields: ['amp']"),  # only old checkpoints carry it
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
