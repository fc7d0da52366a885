"""worker.fairness on job rows: a clinic steps aside only for one that could start a job now."""

from __future__ import annotations

import uuid
from datetime import timedelta

from server.db.base import utcnow
from server.db.entities import JobStatus, Project, TrainingJob
from worker.fairness import should_step_aside

from ..server.conftest import Api
from .tiny import TINY_PROJECT


def _projects(api: Api, clinic: str) -> list[uuid.UUID]:
    _, admin = api.clinic(f"clinic {clinic}")
    h = api.headers(admin)
    ids = []
    for i in range(2):
        pid = api.client.post("/v1/projects", json={**TINY_PROJECT, "name": f"{clinic}{i}"}, headers=h).json()["id"]
        r = api.client.post(f"/v1/projects/{pid}/landmark-sets", headers=h, json={"landmarks": [{"code": "S"}]})
        assert r.status_code == 201, r.text
        ids.append(uuid.UUID(pid))
    return ids


def test_no_clinic_waits_for_one_that_is_at_its_limit(api: Api) -> None:
    """B runs its one allowed job (started first), A was served since, and both have a step 0 queued: B's steps
    aside (its limit), and A's must not step aside for B, or a free worker starts neither until B's run ends."""
    a, b = _projects(api, "A"), _projects(api, "B")
    now = utcnow()
    with api.client.app.state.session_factory() as session:

        def job(pid: uuid.UUID, status: JobStatus, started_h: float | None, created_min: float) -> TrainingJob:
            project = session.get(Project, pid)
            assert project is not None
            started = now - timedelta(hours=started_h) if started_h is not None else None
            row = TrainingJob(
                project_id=pid,
                set_id=project.landmark_sets[0].id,
                step=0,
                status=status,
                strategy="kamp",
                config={},
                started_at=started,
                heartbeat_at=started,
                created_at=now - timedelta(minutes=created_min),
            )
            session.add(row)
            return row

        job(b[0], JobStatus.running, 2, 130)
        job(a[0], JobStatus.succeeded, 1, 70)
        b1, a1 = job(b[1], JobStatus.queued, None, 10), job(a[1], JobStatus.queued, None, 5)
        session.commit()
        assert should_step_aside(session, b1, max_running=1)  # B is at its limit
        assert not should_step_aside(session, a1, max_running=1)  # so A goes, though B was served less recently
        assert should_step_aside(session, a1, max_running=2)  # B could start one: its turn comes first
