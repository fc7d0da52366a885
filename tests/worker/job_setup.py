"""Projects, landmark sets with annotated real cephalograms, and queued training jobs, for the worker's job
tests (tests/worker/test_jobs.py, tests/worker/test_job_fencing.py)."""

from __future__ import annotations

import uuid
from pathlib import Path

from models.datasets import load_protocol
from server.db.entities import JobStatus, Project, TrainingJob

from ..server.conftest import Api
from .tiny import TINY_PROJECT


def tiny_project(api: Api, **overrides: object) -> tuple[dict, str]:
    """A new clinic's admin headers and a tiny project of it (`overrides`: other project fields)."""
    _, admin = api.clinic()
    h = api.headers(admin)
    return h, api.client.post("/v1/projects", json={**TINY_PROJECT, **overrides}, headers=h).json()["id"]


def setup_step(
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


def queue_job(api: Api, pid: str, step: int) -> uuid.UUID:
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
