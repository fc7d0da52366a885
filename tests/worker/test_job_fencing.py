"""A training job's life beside its worker, without Celery: cancellation, fencing of a worker that lost its claim
(server.jobs.repository's lease), the reaper's conditional fail and lost queue messages (worker.requeue)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from server.db.base import utcnow
from server.db.entities import JobStatus, ModelVersion, TrainingJob
from server.jobs.repository import claim
from worker.jobs import Outcome, reap_stale_jobs, run_training_job
from worker.requeue import requeue_lost_jobs

from ..server.conftest import Api
from .job_setup import queue_job, setup_step, tiny_project

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_cancel_request_stops_a_running_job(api: Api, data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import worker.jobs as jobs

    monkeypatch.setattr(jobs, "PROGRESS_EVERY_S", 0.0)
    h, pid = tiny_project(api)
    setup_step(api, h, pid, data_root, 0, 4)
    job_id = queue_job(api, pid, 0)
    original = jobs.train_step

    def cancel_then_train(*args, **kwargs):  # type: ignore[no-untyped-def]
        with api.client.app.state.session_factory() as session:
            session.get(TrainingJob, job_id).cancel_requested = True
            session.commit()
        return original(*args, **kwargs)

    monkeypatch.setattr(jobs, "train_step", cancel_then_train)
    assert run_training_job(job_id, api.settings) == Outcome.cancelled
    with api.client.app.state.session_factory() as session:
        assert session.get(TrainingJob, job_id).status == JobStatus.cancelled
        assert session.scalar(select(ModelVersion)) is None


def test_a_paused_worker_that_lost_its_job_writes_nothing(
    api: Api, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding 4 of the attack: worker A pauses mid-training, the reaper fails its job, an admin retries it and
    worker B trains the step; when A resumes it must stop at its next write, without a second version, and its
    job must stay failed."""
    import worker.jobs as jobs

    monkeypatch.setattr(jobs, "PROGRESS_EVERY_S", 0.0)
    api.client.app.state.enqueue = lambda job_id: f"task-{job_id}"
    h, pid = tiny_project(api)
    setup_step(api, h, pid, data_root, 0, 4)
    first = queue_job(api, pid, 0)
    original = jobs.train_step
    retried: list[uuid.UUID] = []

    def pause_then_train(*args, **kwargs):  # type: ignore[no-untyped-def]
        if retried:  # worker B
            return original(*args, **kwargs)
        with api.client.app.state.session_factory() as session:  # A stops beating for longer than the limit
            session.get(TrainingJob, first).heartbeat_at = utcnow() - timedelta(hours=1)
            session.commit()
        assert reap_stale_jobs(api.settings) == [first]
        r = api.client.post(f"/v1/jobs/{first}/retry", headers=h)
        assert r.status_code == 202, r.text
        retried.append(uuid.UUID(r.json()["id"]))
        assert run_training_job(retried[0], api.settings) == Outcome.succeeded  # B, while A is paused
        return original(*args, **kwargs)  # A resumes: its first progress write must stop it

    monkeypatch.setattr(jobs, "train_step", pause_then_train)
    assert run_training_job(first, api.settings) == Outcome.skipped
    with api.client.app.state.session_factory() as session:
        versions = list(session.scalars(select(ModelVersion)))
        old, new = session.get(TrainingJob, first), session.get(TrainingJob, retried[0])
        assert len(versions) == 1 and new.model_version_id == versions[0].id
        assert (old.status, new.status) == (JobStatus.failed, JobStatus.succeeded)
        assert old.model_version_id is None and "stopped responding" in (old.error or "")
        assert "trained in" not in old.log  # A wrote nothing after it lost the job


def test_a_second_claim_of_a_stale_job_takes_it_from_the_first(api: Api, data_root: Path) -> None:
    """Two deliveries of one stale running job: the later claim holds the lease, the earlier one's writes fail."""
    h, pid = tiny_project(api)
    setup_step(api, h, pid, data_root, 0, 4)
    job_id = queue_job(api, pid, 0)
    factory = api.client.app.state.session_factory
    with factory() as session:
        a = claim(session, TrainingJob, job_id, utcnow() - timedelta(hours=1), 60)
        assert a is not None and a.write(session, progress={"by": "a"})
        b = claim(session, TrainingJob, job_id, utcnow(), 60)  # A's heartbeat is an hour old: stale
        assert b is not None and b.token == a.token + 1
        assert not a.write(session, progress={"by": "a again"}) and b.write(session, progress={"by": "b"})
        assert session.get(TrainingJob, job_id).progress == {"by": "b"}


# ------------------------------------------------------------ the reaper (server.jobs.repository.reap)


def test_the_reaper_spares_a_job_whose_worker_beat_after_it_looked(api: Api) -> None:
    """The reaper reads the stale jobs, then fails each with a conditional UPDATE: a heartbeat written between the
    two (the worker was only slow) keeps the job running."""
    from server.jobs.repository import fail_if_still_stale

    h, pid = tiny_project(api)
    api.client.post(f"/v1/projects/{pid}/landmark-sets", headers=h, json={"landmarks": [{"code": "S"}]})
    job_id = queue_job(api, pid, 0)
    factory = api.client.app.state.session_factory
    long_ago = utcnow() - timedelta(hours=1)
    with factory() as session:
        job = session.get(TrainingJob, job_id)
        job.status, job.heartbeat_at = JobStatus.running, long_ago
        session.commit()
    stale = utcnow() - timedelta(seconds=api.settings.job_stale_after_s)
    with factory() as session:  # the worker beats after the reaper read the stale list
        session.get(TrainingJob, job_id).heartbeat_at = utcnow()
        session.commit()
    with factory() as session:
        assert not fail_if_still_stale(session, TrainingJob, job_id, long_ago, stale, "retry to resume")
        session.commit()
        assert session.get(TrainingJob, job_id).status == JobStatus.running
    with factory() as session:  # silent again: now it is failed, with the reason in its log
        session.get(TrainingJob, job_id).heartbeat_at = long_ago
        session.commit()
    assert reap_stale_jobs(api.settings) == [job_id]
    with factory() as session:
        job = session.get(TrainingJob, job_id)
        assert job.status == JobStatus.failed and "stopped responding" in job.error and job.log.endswith("resume\n")


def test_a_job_whose_cancel_was_asked_ends_cancelled_when_its_worker_died(api: Api) -> None:
    """No claim resumes a job an admin asked to cancel, so the reaper ends it as asked, not as failed."""
    h, pid = tiny_project(api)
    api.client.post(f"/v1/projects/{pid}/landmark-sets", headers=h, json={"landmarks": [{"code": "S"}]})
    job_id = queue_job(api, pid, 0)
    with api.client.app.state.session_factory() as session:
        job = session.get(TrainingJob, job_id)
        job.status, job.heartbeat_at, job.cancel_requested = JobStatus.running, utcnow() - timedelta(hours=1), True
        session.commit()
    assert reap_stale_jobs(api.settings) == [job_id]
    with api.client.app.state.session_factory() as session:
        job = session.get(TrainingJob, job_id)
        assert job.status == JobStatus.cancelled and job.finished_at is not None
        assert "cancelled at the request of an admin" in job.error and "stopped responding" in job.log


# ------------------------------------------------- lost queue messages (worker.requeue)


def _age(api: Api, job_id: uuid.UUID, hours: float) -> None:
    with api.client.app.state.session_factory() as session:
        session.get(TrainingJob, job_id).created_at = utcnow() - timedelta(hours=hours)
        session.commit()


def test_a_queued_job_nobody_picked_up_is_published_again(api: Api, data_root: Path) -> None:
    h, pid = tiny_project(api)
    setup_step(api, h, pid, data_root, 0, 2)
    setup_step(api, h, pid, data_root, 1, 2)
    lost, fresh, waiting = queue_job(api, pid, 0), queue_job(api, pid, 0), queue_job(api, pid, 1)
    _age(api, lost, 1)
    _age(api, waiting, 1)
    assert run_training_job(waiting, api.settings) == Outcome.waiting  # its message was handled just now
    published: list[uuid.UUID] = []
    publishers = {TrainingJob: lambda job_id: published.append(job_id) or "task"}
    assert requeue_lost_jobs(api.settings, publishers) == [lost] and published == [lost]
    assert requeue_lost_jobs(api.settings, publishers) == []  # touched: not again within the period
    with api.client.app.state.session_factory() as session:
        assert "published again" in session.get(TrainingJob, lost).log
        assert "published again" not in (session.get(TrainingJob, fresh).log or "")


def test_a_broker_still_down_leaves_the_job_for_the_next_round(api: Api, data_root: Path) -> None:
    h, pid = tiny_project(api)
    setup_step(api, h, pid, data_root, 0, 2)
    job = queue_job(api, pid, 0)
    _age(api, job, 1)

    def down(_: uuid.UUID) -> str:
        raise ConnectionError("broker down")

    assert requeue_lost_jobs(api.settings, {TrainingJob: down}) == []
    with api.client.app.state.session_factory() as session:
        assert session.get(TrainingJob, job).status.value == "queued"
