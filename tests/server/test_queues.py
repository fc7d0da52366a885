"""Each kind of job is published to its own queue, and workers serve the queues they are given."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from server import cli
from server.settings import Settings
from server.training import queue
from worker.celery_app import make_celery


class FakeCelery:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def send_task(self, name: str, **kwargs: Any) -> Any:
        self.sent.append((name, kwargs))
        return type("Result", (), {"id": f"task-{len(self.sent)}"})()


def test_training_and_prediction_jobs_go_to_their_own_queues(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeCelery()
    monkeypatch.setattr(queue, "celery_client", lambda broker, backend: fake)
    settings = Settings()
    job = uuid.uuid4()
    assert queue.celery_enqueue(settings)(job) == "task-1"
    assert queue.celery_enqueue(settings, queue.TASK_PREDICT_JOB)(job) == "task-2"
    assert [(name, kw["queue"], kw["args"]) for name, kw in fake.sent] == [
        ("kamp.train_job", "training", [str(job)]),
        ("kamp.predict_job", "prediction", [str(job)]),
    ]


def test_the_worker_app_routes_tasks_like_the_api(tmp_path: Any) -> None:
    app = make_celery(Settings(data_dir=tmp_path))
    routes = {"kamp.train_job": {"queue": "training"}, "kamp.predict_job": {"queue": "prediction"}}
    assert app.conf.task_routes == routes
    assert app.conf.task_default_queue == "training"  # the periodic reaper runs beside training


def test_worker_command_serves_the_given_queues() -> None:
    def served(cmd: list[str]) -> tuple[str, str]:
        return cmd[cmd.index("--queues") + 1], cmd[cmd.index("--hostname") + 1]

    # Both by default; the training worker also drains the default queue of tasks sent before queues existed.
    assert served(cli.worker_command(beat=False)) == ("training,prediction,celery", "training+prediction@%h")
    assert served(cli.worker_command(beat=False, queues=["prediction"])) == ("prediction", "prediction@%h")
    with pytest.raises(SystemExit, match="unknown queue gpu: choose from training, prediction"):
        cli.worker_command(beat=False, queues=["gpu"])
    with pytest.raises(SystemExit, match=r"unknown queue \(none\)"):
        cli.worker_command(beat=False, queues=[])


def test_serve_and_worker_make_idle_openmp_threads_sleep_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):  # recorded by monkeypatch, so restored afterwards
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    cli.sleeping_openmp_threads()
    assert cli.os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    cli.sleeping_openmp_threads()
    assert cli.os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
    monkeypatch.delenv("OMP_WAIT_POLICY")
    monkeypatch.setenv("GOMP_SPINCOUNT", "300000")
    cli.sleeping_openmp_threads()
    assert "OMP_WAIT_POLICY" not in cli.os.environ
