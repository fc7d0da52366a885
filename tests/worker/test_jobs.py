"""The training job function on real cephalograms, without Celery: two steps, lineage, the gate, IKL data
access, idempotency, cancellation, fencing, lost messages, the wall-time limit and fair turns.
(tests/worker/test_celery_worker.py runs it through a real worker.)"""

from __future__ import annotations

import re
import time
import uuid
from collections import deque
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from models.datasets import load_protocol
from server.db.base import utcnow
from server.db.entities import JobStatus, ModelVersion, Project, TrainingJob, VersionEvent, VersionStatus
from server.storage import LocalBlobStore
from worker.jobs import Outcome, reap_stale_jobs, run_training_job
from worker.lease import claim
from worker.requeue import requeue_lost_jobs

from ..server.conftest import Api, make_api
from .tiny import TINY_PROJECT

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    # A half-and-half split so that three studies per step give validation studies; a lenient gate (a
    # 12-iteration tiny model is far from accurate: the gate's logic is tested separately).
    a = make_api(
        f"sqlite:///{tmp_path / 'kamp.db'}",
        tmp_path,
        validation_fraction=0.5,
        gate_max_new_mre=1e4,
        gate_old_tolerance=1e4,
    )
    with a.client:
        yield a


def _project(api: Api) -> tuple[dict, str]:
    """A new clinic's admin headers and a tiny project of it."""
    _, admin = api.clinic()
    h = api.headers(admin)
    return h, api.client.post("/v1/projects", json=TINY_PROJECT, headers=h).json()["id"]


def _setup_step(
    api: Api, h: dict, pid: str, data_root: Path, step: int, n: int, associations: list | None = None
) -> list[str]:
    protocol = load_protocol(data_root, "cld38-5step")
    ds = protocol.load_dataset(data_root)
    codes = protocol.steps[step].landmarks[:4]
    body = {"landmarks": [{"code": c} for c in codes], "associations": associations or []}
    r = api.client.post(f"/v1/projects/{pid}/landmark-sets", headers=h, json=body)
    assert r.status_code == 201, r.text
    study_ids = []
    for image_id in protocol.steps[step].images[:n]:
        r = api.client.post(
            "/v1/studies",
            files={"file": (f"{image_id}.jpg", ds.image_path(image_id).read_bytes())},
            data={"spacing_x_mm": "0.2", "spacing_y_mm": "0.2"},
            headers=h,
        )
        sid = r.json()["id"]
        kp = ds.keypoints([image_id], codes, protocol.annotator)[0]
        a = api.client.post(
            f"/v1/projects/{pid}/landmark-sets/{step}/annotations",
            headers=h,
            json={
                "study_id": sid,
                "points": [{"code": c, "x": float(x), "y": float(y)} for c, (x, y) in zip(codes, kp, strict=True)],
            },
        )
        assert a.status_code == 201, a.text
        study_ids.append(sid)
    return study_ids


def _queue_job(api: Api, pid: str, step: int) -> uuid.UUID:
    with api.client.app.state.session_factory() as session:
        project = session.get(Project, uuid.UUID(pid))
        landmark_set = next(s for s in project.landmark_sets if s.step == step)
        job = TrainingJob(
            project_id=project.id,
            set_id=landmark_set.id,
            step=step,
            status=JobStatus.queued,
            strategy=project.strategy,
            config=project.training,
        )
        session.add(job)
        session.commit()
        return job.id


def test_two_steps_lineage_gate_and_ikl_data_access(api: Api, data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    h, pid = _project(api)
    step0_studies = _setup_step(api, h, pid, data_root, 0, 6)

    job0 = _queue_job(api, pid, 0)
    assert run_training_job(job0, api.settings) == Outcome.succeeded
    # Delivered again: the job is done, nothing trains twice and no second version appears.
    assert run_training_job(job0, api.settings) == Outcome.skipped

    step1_studies = _setup_step(api, h, pid, data_root, 1, 6)
    job1 = _queue_job(api, pid, 1)
    reads: list[str] = []
    original_get = LocalBlobStore.get

    def spy(self: LocalBlobStore, key: str) -> bytes:
        reads.append(key)
        return original_get(self, key)

    monkeypatch.setattr(LocalBlobStore, "get", spy)
    assert run_training_job(job1, api.settings) == Outcome.succeeded

    with api.client.app.state.session_factory() as session:
        versions = list(session.scalars(select(ModelVersion).order_by(ModelVersion.number)))
        assert [(v.number, v.step, v.status) for v in versions] == [
            (1, 0, VersionStatus.archived),
            (2, 1, VersionStatus.active),
        ]
        assert versions[1].parent_id == versions[0].id
        # The gate's promotion records what a manual one does: the replaced version's "archived" event.
        events = session.scalars(select(VersionEvent).where(VersionEvent.version_id == versions[0].id)).all()
        assert [(e.action, e.actor) for e in events] == [("promoted", "gate"), ("archived", "gate")]
        assert events[1].reason.startswith("replaced by v2 (promoted): ")
        report = versions[1].report
        assert [s["step"] for s in report["steps"]] == [0, 1]
        assert all(s["mre"] is not None and s["unit"] == "mm" for s in report["steps"])
        assert report["steps"][0]["parent_mre"] is not None  # old landmarks compared with version 1
        job = session.get(TrainingJob, job1)
        assert job.status == JobStatus.succeeded and job.model_version_id == versions[1].id
        # The project's model has a local stage, which trains last.
        assert job.progress["stage"] == "refine" and job.progress["iteration"] == job.progress["total"]
        # One fraction and ETA for the whole job (validation still to come), a loss curve for each stage it ran;
        # the version keeps each stage's iterations so that the next job prices its stages from the start.
        assert 0.5 < job.progress["overall"] < 1 and job.progress["overall_eta_s"] >= 0
        assert set(job.progress["curve"]) == {"kanet", "train", "refine"}
        assert versions[1].hyperparameters["train_report"]["stage_iterations"]["train"] == job.config["iterations"]
        # The log's training time is the whole step's, KA-Net's and the local stage's named in it, with what it
        # computed on.
        trained = re.search(
            r"trained in (\d+) s \(KA-Net (\d+) s, local stage (\d+) s; cpu, (bf16|fp32), (\d+) torch threads\)",
            job.log,
        )
        assert trained, job.log
        assert int(trained[1]) >= int(trained[2]) + int(trained[3])
        # IKL: step 1 never read step 0's training images (its validation studies may be read to validate).
        from server.db.entities import Split, Study

        train0 = {
            str(s.study_id)
            for s in session.scalars(select(Split).where(Split.role == "train"))
            if str(s.study_id) in step0_studies
        }
        train0_blobs = {session.get(Study, uuid.UUID(s)).pixels_blob for s in train0}
        assert train0_blobs and not (train0_blobs & set(reads))
        assert {session.get(Study, uuid.UUID(s)).pixels_blob for s in step1_studies} & set(reads)


def test_failed_gate_rejects_and_keeps_the_active_version(api: Api, data_root: Path) -> None:
    h, pid = _project(api)
    _setup_step(api, h, pid, data_root, 0, 6)
    assert run_training_job(_queue_job(api, pid, 0), api.settings) == Outcome.succeeded
    _setup_step(api, h, pid, data_root, 1, 6)
    with api.client.app.state.session_factory() as session:
        project = session.get(Project, uuid.UUID(pid))
        project.gate = {"max_new_mre": 0.001}  # no model reaches a micrometre
        session.commit()
    job = _queue_job(api, pid, 1)
    assert run_training_job(job, api.settings) == Outcome.succeeded
    with api.client.app.state.session_factory() as session:
        versions = list(session.scalars(select(ModelVersion).order_by(ModelVersion.number)))
        assert [v.status for v in versions] == [VersionStatus.active, VersionStatus.rejected]
        assert "above the gate" in versions[1].reason


def test_a_sets_associations_are_kanet_s_triplets(api: Api, data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The clinic's associations (old <- two new) reach KA-Net: the trainer gets them as its triplets, and the
    version's report and the job's log say which triplets were used and where they came from."""
    import worker.jobs as jobs

    h, pid = _project(api)
    _setup_step(api, h, pid, data_root, 0, 4)
    assert run_training_job(_queue_job(api, pid, 0), api.settings) == Outcome.succeeded
    associations = [{"old": "N", "new": ["D", "U1A"]}, {"old": "Po", "new": ["L1A", "U6"]}]
    _setup_step(api, h, pid, data_root, 1, 4, associations)
    seen: list[object] = []
    original = jobs.train_step

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(args[3].kanet.triplets)
        return original(*args, **kwargs)

    monkeypatch.setattr(jobs, "train_step", spy)
    job = _queue_job(api, pid, 1)
    assert run_training_job(job, api.settings) == Outcome.succeeded
    expected = [("N", "D", "U1A"), ("Po", "L1A", "U6")]
    assert seen == [expected]
    with api.client.app.state.session_factory() as session:
        version = session.scalars(select(ModelVersion).where(ModelVersion.step == 1)).one()
        report = version.hyperparameters["train_report"]
        assert [tuple(t) for t in report["triplets"]] == expected and report["triplet_source"] == "associations"
        assert "KA-Net triplets (associations): N <- (D, U1A), Po <- (L1A, U6)" in session.get(TrainingJob, job).log


def test_step_without_parent_waits_then_fails_cleanly(api: Api, data_root: Path) -> None:
    h, pid = _project(api)
    _setup_step(api, h, pid, data_root, 0, 2)
    _setup_step(api, h, pid, data_root, 1, 2)
    job0 = _queue_job(api, pid, 0)
    job1 = _queue_job(api, pid, 1)
    assert run_training_job(job1, api.settings) == Outcome.waiting  # step 0 is still queued
    with api.client.app.state.session_factory() as session:
        session.get(TrainingJob, job0).status = JobStatus.cancelled
        session.commit()
    assert run_training_job(job1, api.settings) == Outcome.failed
    with api.client.app.state.session_factory() as session:
        job = session.get(TrainingJob, job1)
        assert job.status == JobStatus.failed and "train that step first" in job.error
        assert session.scalar(select(ModelVersion)) is None


def test_cancel_request_stops_a_running_job(api: Api, data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import worker.jobs as jobs

    monkeypatch.setattr(jobs, "PROGRESS_EVERY_S", 0.0)
    h, pid = _project(api)
    _setup_step(api, h, pid, data_root, 0, 4)
    job_id = _queue_job(api, pid, 0)
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
    h, pid = _project(api)
    _setup_step(api, h, pid, data_root, 0, 4)
    first = _queue_job(api, pid, 0)
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
    h, pid = _project(api)
    _setup_step(api, h, pid, data_root, 0, 4)
    job_id = _queue_job(api, pid, 0)
    factory = api.client.app.state.session_factory
    with factory() as session:
        a = claim(session, TrainingJob, job_id, utcnow() - timedelta(hours=1), 60)
        assert a is not None and a.write(session, progress={"by": "a"})
        b = claim(session, TrainingJob, job_id, utcnow(), 60)  # A's heartbeat is an hour old: stale
        assert b is not None and b.token == a.token + 1
        assert not a.write(session, progress={"by": "a again"}) and b.write(session, progress={"by": "b"})
        assert session.get(TrainingJob, job_id).progress == {"by": "b"}


# ------------------------------------------------- lost queue messages (worker.requeue)


def _age(api: Api, job_id: uuid.UUID, hours: float) -> None:
    with api.client.app.state.session_factory() as session:
        session.get(TrainingJob, job_id).created_at = utcnow() - timedelta(hours=hours)
        session.commit()


def test_a_queued_job_nobody_picked_up_is_published_again(api: Api, data_root: Path) -> None:
    h, pid = _project(api)
    _setup_step(api, h, pid, data_root, 0, 2)
    _setup_step(api, h, pid, data_root, 1, 2)
    lost, fresh, waiting = _queue_job(api, pid, 0), _queue_job(api, pid, 0), _queue_job(api, pid, 1)
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
    h, pid = _project(api)
    _setup_step(api, h, pid, data_root, 0, 2)
    job = _queue_job(api, pid, 0)
    _age(api, job, 1)

    def down(_: uuid.UUID) -> str:
        raise ConnectionError("broker down")

    assert requeue_lost_jobs(api.settings, {TrainingJob: down}) == []
    with api.client.app.state.session_factory() as session:
        assert session.get(TrainingJob, job).status.value == "queued"


def test_a_job_past_its_wall_time_limit_fails_with_the_reason(api: Api, data_root: Path) -> None:
    import worker.jobs as jobs

    h, pid = _project(api)
    _setup_step(api, h, pid, data_root, 0, 4)
    job_id = _queue_job(api, pid, 0)
    settings = api.settings.model_copy(update={"max_job_seconds": 1})
    original = jobs.train_step

    def slow(*args, **kwargs):  # type: ignore[no-untyped-def]
        time.sleep(1.5)  # past the limit before the first progress report
        return original(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(jobs, "PROGRESS_EVERY_S", 0.0)
        mp.setattr(jobs, "train_step", slow)
        assert run_training_job(job_id, settings) == Outcome.failed
    with api.client.app.state.session_factory() as session:
        job = session.get(TrainingJob, job_id)
        assert job.status == JobStatus.failed and "KAMP_MAX_JOB_SECONDS" in (job.error or "")
        assert session.scalar(select(ModelVersion)) is None


# ------------------------------------------------------------ fair turns between clinics (worker.fairness)


def test_two_clinics_jobs_interleave_on_one_worker(api: Api, data_root: Path) -> None:
    """Clinic A queues two steps' worth of jobs, then clinic B one: a single worker taking messages in order runs
    A, then B, then A again (A's second job steps aside once, for B, who was never served)."""
    queued = []
    for clinic, projects in (("A", 2), ("B", 1)):
        _, admin = api.clinic(f"clinic {clinic}")
        h = api.headers(admin)
        for i in range(projects):
            body = {**TINY_PROJECT, "name": f"{clinic}{i}"}
            pid = api.client.post("/v1/projects", json=body, headers=h).json()["id"]
            _setup_step(api, h, pid, data_root, 0, 2)
            queued.append((f"{clinic}{i}", _queue_job(api, pid, 0)))
    messages = deque(queued)
    ran, outcomes = [], []
    while messages:
        name, job_id = messages.popleft()
        outcome = run_training_job(job_id, api.settings)
        outcomes.append((name, outcome))
        if outcome == Outcome.deferred:
            messages.append((name, job_id))  # Celery's retry: delivered again behind the others
        else:
            assert outcome == Outcome.succeeded, outcome
            ran.append(name)
    assert ran == ["A0", "B0", "A1"]
    assert ("A1", Outcome.deferred) in outcomes and ("B0", Outcome.deferred) not in outcomes


def test_the_reaper_spares_a_job_whose_worker_beat_after_it_looked(api: Api) -> None:
    """The reaper reads the stale jobs, then fails each with a conditional UPDATE: a heartbeat written between the
    two (the worker was only slow) keeps the job running."""
    from worker.jobs import fail_if_still_stale

    h, pid = _project(api)
    api.client.post(f"/v1/projects/{pid}/landmark-sets", headers=h, json={"landmarks": [{"code": "S"}]})
    job_id = _queue_job(api, pid, 0)
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
        assert not fail_if_still_stale(session, job_id, long_ago, stale)
        session.commit()
        assert session.get(TrainingJob, job_id).status == JobStatus.running
    with factory() as session:  # silent again: now it is failed, with the reason in its log
        session.get(TrainingJob, job_id).heartbeat_at = long_ago
        session.commit()
    assert reap_stale_jobs(api.settings) == [job_id]
    with factory() as session:
        job = session.get(TrainingJob, job_id)
        assert job.status == JobStatus.failed and "stopped responding" in job.error and job.log.endswith("resume\n")
