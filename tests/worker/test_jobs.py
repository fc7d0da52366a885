"""The training job function on real cephalograms, without Celery: two steps, lineage, the gate, IKL data
access, the clinic's associations, waiting for the previous step, the wall-time limit and fair turns.
(Cancellation, fencing, the reaper and lost messages: tests/worker/test_job_fencing.py; tests/worker/
test_celery_worker.py runs it through a real worker.)"""

from __future__ import annotations

import re
import time
import uuid
from collections import deque
from pathlib import Path

import pytest
from sqlalchemy import select

from models.checkpoint import Checkpoint
from server.db.entities import JobStatus, ModelVersion, Project, TrainingJob, VersionEvent, VersionStatus
from server.storage import LocalBlobStore, blob_store
from worker.jobs import Outcome, run_training_job

from ..server.conftest import Api
from .job_setup import queue_job, setup_step, tiny_project
from .tiny import TINY_PROJECT

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_two_steps_lineage_gate_and_ikl_data_access(api: Api, data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    h, pid = tiny_project(api, backbone_last_relu=False, head_channels=8)
    step0_studies = setup_step(api, h, pid, data_root, 0, 6)

    job0 = queue_job(api, pid, 0)
    assert run_training_job(job0, api.settings) == Outcome.succeeded
    # Delivered again: the job is done, nothing trains twice and no second version appears.
    assert run_training_job(job0, api.settings) == Outcome.skipped

    step1_studies = setup_step(api, h, pid, data_root, 1, 6)
    job1 = queue_job(api, pid, 1)
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
        # Both stages read the features before the backbone's last ReLU, as the project asked.
        checkpoint = Checkpoint.from_bytes(blob_store(api.settings).get(versions[1].checkpoint_blob))
        assert checkpoint.backbone.last_relu is False
        assert checkpoint.refine is not None and checkpoint.refine.last_relu is False
        # Its first stage's head reads a hidden layer, grown through step 1 like the rest.
        assert checkpoint.backbone.head_channels == 8 and versions[1].hyperparameters["head_channels"] == 8
        assert checkpoint.build_model().head.step_sizes == [4, 4]
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
    h, pid = tiny_project(api)
    setup_step(api, h, pid, data_root, 0, 6)
    assert run_training_job(queue_job(api, pid, 0), api.settings) == Outcome.succeeded
    setup_step(api, h, pid, data_root, 1, 6)
    with api.client.app.state.session_factory() as session:
        project = session.get(Project, uuid.UUID(pid))
        project.gate = {"max_new_mre": 0.001}  # no model reaches a micrometre
        session.commit()
    job = queue_job(api, pid, 1)
    assert run_training_job(job, api.settings) == Outcome.succeeded
    with api.client.app.state.session_factory() as session:
        versions = list(session.scalars(select(ModelVersion).order_by(ModelVersion.number)))
        assert [v.status for v in versions] == [VersionStatus.active, VersionStatus.rejected]
        assert "above the gate" in versions[1].reason


def test_a_rollback_while_a_step_trains_stands(api: Api, data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An admin rolls back while a step trains from the version they roll back from: the new version, though it
    passes the gate, stays a candidate and the rolled-back-to version stays active."""
    import worker.jobs as jobs

    h, pid = tiny_project(api)
    setup_step(api, h, pid, data_root, 0, 4)
    assert run_training_job(queue_job(api, pid, 0), api.settings) == Outcome.succeeded
    with api.client.app.state.session_factory() as session:  # a second step-0 version, active: v1's model again
        v1 = session.scalars(select(ModelVersion)).one()
        v1.status = VersionStatus.archived
        copy = {c: getattr(v1, c) for c in ("project_id", "step", "checkpoint_blob", "checkpoint_sha256", "strategy")}
        session.add(ModelVersion(**copy, number=2, hyperparameters=v1.hyperparameters, status=VersionStatus.active))
        session.commit()
        v1_id = v1.id
    setup_step(api, h, pid, data_root, 1, 4)
    original = jobs.train_step

    def rollback_meanwhile(*args, **kwargs):  # type: ignore[no-untyped-def]
        r = api.client.post(f"/v1/versions/{v1_id}/rollback", json={"reason": "v2 misplaces Me"}, headers=h)
        assert r.status_code == 200, r.text
        return original(*args, **kwargs)

    monkeypatch.setattr(jobs, "train_step", rollback_meanwhile)
    job = queue_job(api, pid, 1)
    assert run_training_job(job, api.settings) == Outcome.succeeded
    with api.client.app.state.session_factory() as session:
        versions = list(session.scalars(select(ModelVersion).order_by(ModelVersion.number)))
        statuses = [(v.number, v.status) for v in versions]
        assert statuses == [(1, VersionStatus.active), (2, VersionStatus.archived), (3, VersionStatus.candidate)]
        assert versions[2].parent_id == versions[1].id  # it grew from v2, as it began
        assert "not promoted: the active version changed from v2 to v1 while this step trained" in versions[2].reason
        assert "version 3 kept as a candidate" in session.get(TrainingJob, job).log
    promoted = api.client.post(f"/v1/versions/{versions[2].id}/promote", json={"reason": "checked"}, headers=h)
    assert promoted.status_code == 200, promoted.text  # the admin may still take it


def test_a_sets_associations_are_kanet_s_triplets(api: Api, data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The clinic's associations (old <- two new) reach KA-Net: the trainer gets them as its triplets, and the
    version's report and the job's log say which triplets were used and where they came from."""
    import worker.jobs as jobs

    h, pid = tiny_project(api)
    setup_step(api, h, pid, data_root, 0, 4)
    assert run_training_job(queue_job(api, pid, 0), api.settings) == Outcome.succeeded
    associations = [{"old": "N", "new": ["D", "U1A"]}, {"old": "Po", "new": ["L1A", "U6"]}]
    setup_step(api, h, pid, data_root, 1, 4, associations)
    seen: list[object] = []
    original = jobs.train_step

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(args[3].kanet.triplets)
        return original(*args, **kwargs)

    monkeypatch.setattr(jobs, "train_step", spy)
    job = queue_job(api, pid, 1)
    assert run_training_job(job, api.settings) == Outcome.succeeded
    expected = [("N", "D", "U1A"), ("Po", "L1A", "U6")]
    assert seen == [expected]
    with api.client.app.state.session_factory() as session:
        version = session.scalars(select(ModelVersion).where(ModelVersion.step == 1)).one()
        report = version.hyperparameters["train_report"]
        assert [tuple(t) for t in report["triplets"]] == expected and report["triplet_source"] == "associations"
        assert "KA-Net triplets (associations): N <- (D, U1A), Po <- (L1A, U6)" in session.get(TrainingJob, job).log


def test_step_without_parent_waits_then_fails_cleanly(api: Api, data_root: Path) -> None:
    h, pid = tiny_project(api)
    setup_step(api, h, pid, data_root, 0, 2)
    setup_step(api, h, pid, data_root, 1, 2)
    job0 = queue_job(api, pid, 0)
    job1 = queue_job(api, pid, 1)
    assert run_training_job(job1, api.settings) == Outcome.waiting  # step 0 is still queued
    with api.client.app.state.session_factory() as session:
        session.get(TrainingJob, job0).status = JobStatus.cancelled
        session.commit()
    assert run_training_job(job1, api.settings) == Outcome.failed
    with api.client.app.state.session_factory() as session:
        job = session.get(TrainingJob, job1)
        assert job.status == JobStatus.failed and "train that step first" in job.error
        assert session.scalar(select(ModelVersion)) is None


def test_a_job_past_its_wall_time_limit_fails_with_the_reason(api: Api, data_root: Path) -> None:
    import worker.jobs as jobs

    h, pid = tiny_project(api)
    setup_step(api, h, pid, data_root, 0, 4)
    job_id = queue_job(api, pid, 0)
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
            setup_step(api, h, pid, data_root, 0, 2)
            queued.append((f"{clinic}{i}", queue_job(api, pid, 0)))
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
