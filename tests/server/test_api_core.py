"""Clinics, keys, roles, projects and landmark sets through HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from models.config import RefineConfig, to_dict
from server.projects.schemas import ProjectIn

from .conftest import Api, make_api

PROBLEM = "application/problem+json"


def assert_problem(r, status: int, slug: str | None = None, contains: str | None = None) -> dict:  # type: ignore[no-untyped-def]
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    body = r.json()
    assert body["status"] == status and body["detail"] and body["title"]
    if slug:
        assert body["type"] == f"/problems/{slug}", body
    if contains:
        assert contains in body["detail"], body
    return body


CEPH = {"name": "Lateral ceph", "modality": "cephalometric", "backbone": "hrnet_w18_small", "strategy": "kamp"}
STEP0 = {
    "name": "skeletal",
    "landmarks": [
        {"code": c, "name": n} for c, n in [("S", "Sella"), ("N", "Nasion"), ("B", "B point"), ("Me", "Menton")]
    ],
}
STEP1 = {
    "name": "dental",
    "landmarks": [{"code": "D"}, {"code": "L1A", "name": "Lower incisor apex"}],
    "associations": [{"old": "B", "new": ["D", "L1A"]}],
}


def test_health_and_readiness(api: Api) -> None:
    r = api.client.get("/healthz")
    assert r.json() == {"status": "ok"}
    assert re.fullmatch(r"app;dur=\d+\.\d", r.headers["server-timing"])  # every response, see server/timing.py
    assert api.client.get("/readyz").json() == {"status": "ready"}
    assert api.client.get("/openapi.json").json()["info"]["title"] == "KAMP landmarks"


def test_missing_wrong_and_revoked_keys_are_401(api: Api) -> None:
    assert_problem(api.client.get("/v1/projects"), 401, "unauthorized", "API key is required")
    assert_problem(api.client.get("/v1/projects", headers=api.headers("kamp_0000_nope")), 401, "unauthorized")
    clinic, admin = api.clinic()
    annotator = api.key(clinic, admin, "annotator")
    assert api.client.get("/v1/projects", headers=api.headers(annotator)).status_code == 200
    # A key whose prefix exists but whose secret differs is refused too.
    forged = annotator[:-4] + ("AAAA" if not annotator.endswith("AAAA") else "BBBB")
    assert_problem(api.client.get("/v1/projects", headers=api.headers(forged)), 401)
    key_id = next(
        k["id"]
        for k in api.client.get(f"/v1/clinics/{clinic}/api-keys", headers=api.headers(admin)).json()
        if k["role"] == "annotator"
    )
    assert api.client.delete(f"/v1/api-keys/{key_id}", headers=api.headers(admin)).json()["revoked_at"]
    assert_problem(api.client.get("/v1/projects", headers=api.headers(annotator)), 401, contains="revoked")
    # X-API-Key works as well as the bearer header.
    assert api.client.get("/v1/projects", headers={"X-API-Key": admin}).status_code == 200


def test_keys_are_stored_hashed_and_listed_without_secrets(api: Api) -> None:
    clinic, admin = api.clinic()
    r = api.client.post(
        f"/v1/clinics/{clinic}/api-keys", json={"role": "predict", "name": "PACS"}, headers=api.headers(admin)
    )
    key = r.json()["key"]
    listed = api.client.get(f"/v1/clinics/{clinic}/api-keys", headers=api.headers(admin)).text
    assert key not in listed and 'key"' not in listed
    from sqlalchemy import create_engine, text

    engine = create_engine(api.settings.resolved_database_url)
    with engine.connect() as conn:
        stored = [tuple(row) for row in conn.execute(text("SELECT prefix, secret_sha256 FROM api_keys"))]
    engine.dispose()
    assert all(key not in "".join(map(str, row)) for row in stored)


def test_roles_are_enforced(api: Api) -> None:
    clinic, admin = api.clinic()
    annotator, predict = api.key(clinic, admin, "annotator"), api.key(clinic, admin, "predict")
    assert_problem(
        api.client.post("/v1/projects", json=CEPH, headers=api.headers(annotator)), 403, "forbidden", "role admin"
    )
    assert_problem(api.client.get("/v1/projects", headers=api.headers(predict)), 403, "forbidden")
    assert_problem(api.client.post("/v1/projects", json=CEPH, headers=api.headers(api.system_key)), 403)
    assert_problem(api.client.post("/v1/clinics", json={"name": "x"}, headers=api.headers(admin)), 403)
    assert_problem(
        api.client.post(f"/v1/clinics/{clinic}/api-keys", json={"role": "admin"}, headers=api.headers(annotator)), 403
    )
    assert_problem(
        api.client.post(f"/v1/clinics/{clinic}/api-keys", json={"role": "system"}, headers=api.headers(admin)), 422
    )


def test_clinic_names_are_unique(api: Api) -> None:
    api.clinic("A")
    assert_problem(api.client.post("/v1/clinics", json={"name": "A"}, headers=api.headers(api.system_key)), 409)
    assert len(api.client.get("/v1/clinics", headers=api.headers(api.system_key)).json()) == 1


def test_project_and_landmark_sets_flow(api: Api) -> None:
    _, admin = api.clinic()
    h = api.headers(admin)
    project = api.client.post("/v1/projects", json=CEPH, headers=h)
    assert project.status_code == 201, project.text
    pid = project.json()["id"]
    assert project.json()["input_width"] == 256 and project.json()["steps"] == 0
    s0 = api.client.post(f"/v1/projects/{pid}/landmark-sets", json=STEP0, headers=h)
    assert s0.status_code == 201, s0.text
    assert s0.json()["step"] == 0 and [lm["code"] for lm in s0.json()["landmarks"]] == ["S", "N", "B", "Me"]
    s1 = api.client.post(f"/v1/projects/{pid}/landmark-sets", json=STEP1, headers=h)
    assert s1.status_code == 201, s1.text
    assert s1.json()["step"] == 1 and s1.json()["associations"] == [{"old": "B", "new": ["D", "L1A"]}]
    listed = api.client.get(f"/v1/projects/{pid}/landmark-sets", headers=h).json()
    assert [s["step"] for s in listed] == [0, 1]
    assert api.client.get(f"/v1/projects/{pid}/landmark-sets/1", headers=h).json()["landmarks"][1]["name"] == (
        "Lower incisor apex"
    )
    assert api.client.get(f"/v1/projects/{pid}", headers=h).json()["steps"] == 2
    assert_problem(api.client.get(f"/v1/projects/{pid}/landmark-sets/2", headers=h), 404, "not-found")
    # Append-only: there is no way to change or delete a set.
    assert api.client.put(f"/v1/projects/{pid}/landmark-sets/0", json=STEP0, headers=h).status_code == 405
    assert api.client.delete(f"/v1/projects/{pid}/landmark-sets/0", headers=h).status_code == 405


@pytest.mark.parametrize(
    ("body", "status", "slug", "contains"),
    [
        ({"landmarks": [{"code": "S"}]}, 409, "code-reused", "S"),  # reuses a code of step 0
        ({"landmarks": [{"code": "X"}, {"code": "X"}]}, 422, "invalid-request", "repeat"),
        ({"landmarks": []}, 422, "invalid-request", "landmarks"),
        ({"landmarks": [{"code": "bad code!"}]}, 422, "invalid-request", "code"),
        (
            {"landmarks": [{"code": "X"}, {"code": "Y"}], "associations": [{"old": "Q", "new": ["X", "Y"]}]},
            422,
            "invalid-request",
            "earlier step",
        ),
        (
            {"landmarks": [{"code": "X"}, {"code": "Y"}], "associations": [{"old": "S", "new": ["X", "Z"]}]},
            422,
            "invalid-request",
            "not in this set",
        ),
        (
            {"landmarks": [{"code": "X"}], "associations": [{"old": "S", "new": ["X", "X"]}]},
            422,
            "invalid-request",
            "differ",
        ),
    ],
)
def test_bad_landmark_sets_are_refused_and_change_nothing(
    api: Api, body: dict, status: int, slug: str, contains: str
) -> None:
    _, admin = api.clinic()
    h = api.headers(admin)
    pid = api.client.post("/v1/projects", json=CEPH, headers=h).json()["id"]
    api.client.post(f"/v1/projects/{pid}/landmark-sets", json=STEP0, headers=h)
    assert_problem(api.client.post(f"/v1/projects/{pid}/landmark-sets", json=body, headers=h), status, slug, contains)
    assert [s["step"] for s in api.client.get(f"/v1/projects/{pid}/landmark-sets", headers=h).json()] == [0]


@pytest.mark.parametrize(
    ("override", "contains"),
    [
        ({"strategy": "magic"}, "unknown strategy"),
        ({"strategy": "joint"}, "old landmarks on new images"),
        ({"backbone": "resnet"}, "unknown backbone"),
        ({"training": {"iterations": 5, "nope": 1}}, "nope"),
        ({"training": {"amp": True}}, "unknown TrainConfig fields: ['amp']"),  # only old checkpoints carry it
        ({"input_width": 250}, "multiple"),
        ({"modality": "mri"}, "modality"),
        ({"name": ""}, "name"),
        ({"local_stage": {"crop_size": 30}}, "multiple of 4"),
        ({"local_stage": {"crop_size": 8}}, "crop_size"),
        ({"local_stage": {"mm_per_pixel": 0}}, "mm_per_pixel"),
        ({"local_stage": {"backbone": "resnet"}}, "unknown local_stage backbone"),
        ({"local_stage": {"zoom": 2}}, "zoom"),
        ({"local_stage": {"last_relu": "false"}}, "last_relu must be true or false"),
        ({"local_stage": {"last_relu": json.loads("[" * 400 + "]" * 400)}}, "last_relu must be true or false"),
        ({"local_stage": {"passes": True}}, "passes must be an integer"),
        ({"local_stage": {"prior": True}}, "prior must be"),
        ({"local_stage": "yes"}, "local_stage"),
        ({"traning": {"iterations": 5}}, "traning"),
        ({"training": {"iterations": 10**9}}, "iterations"),
        # Wrong types are refused as a submission's would be, never stored to fail every submission later.
        ({"training": {"iterations": "many"}}, "iterations"),
        ({"training": {"lr": "x"}}, "lr"),
        ({"training": {"kanet": 5}}, "kanet"),
        ({"training": {"gt_scale": "x"}}, "gt_scale"),
        ({"training": {"seed": 1.5}}, "seed"),
        ({"gate": {"max_new_mre": 0}}, "max_new_mre"),
        ({"gate": {"max_new_mre": 2, "slack": 1}}, "slack"),
    ],
)
def test_bad_projects_are_refused(api: Api, override: dict, contains: str) -> None:
    _, admin = api.clinic()
    r = api.client.post("/v1/projects", json={**CEPH, **override}, headers=api.headers(admin))
    assert_problem(r, 422, "invalid-request", contains)
    assert api.client.get("/v1/projects", headers=api.headers(admin)).json() == []


#: The project's default for BackboneConfig.last_relu, which its local stage follows unless told otherwise.
LAST_RELU = bool(ProjectIn.model_fields["backbone_last_relu"].default)
RESOLVED = {**to_dict(RefineConfig()), "last_relu": LAST_RELU}


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ({}, RESOLVED),
        ({"local_stage": {}}, RESOLVED),
        ({"local_stage": {"crop_size": 96}}, {**RESOLVED, "crop_size": 96}),
        ({"local_stage": None}, None),
        ({"backbone_last_relu": False}, {**RESOLVED, "last_relu": False}),
        ({"backbone_last_relu": True}, {**RESOLVED, "last_relu": True}),
        ({"backbone_last_relu": False, "local_stage": {"last_relu": True}}, {**RESOLVED, "last_relu": True}),
    ],
)
def test_a_project_stores_its_local_stage_resolved(api: Api, given: dict, stored: dict | None) -> None:
    """New projects train two-stage models unless they ask for none (null); the local stage's settings are stored
    with every field resolved, so a later change of the library's defaults leaves an existing project's models as
    they were."""
    _, admin = api.clinic()
    r = api.client.post("/v1/projects", json={**CEPH, **given}, headers=api.headers(admin))
    assert r.status_code == 201, r.text
    assert r.json()["local_stage"] == stored
    again = api.client.get(f"/v1/projects/{r.json()['id']}", headers=api.headers(admin)).json()
    assert again["local_stage"] == stored
    assert again["backbone_last_relu"] is given.get("backbone_last_relu", LAST_RELU)


def test_a_project_keeps_its_head_channels_and_refuses_bad_ones(api: Api) -> None:
    _, admin = api.clinic()
    h = api.headers(admin)
    plain = api.client.post("/v1/projects", json=CEPH, headers=h).json()
    assert plain["head_channels"] == ProjectIn.model_fields["head_channels"].default
    r = api.client.post("/v1/projects", json={**CEPH, "name": "wide", "head_channels": 128}, headers=h)
    assert r.status_code == 201, r.text
    assert api.client.get(f"/v1/projects/{r.json()['id']}", headers=h).json()["head_channels"] == 128
    for bad in (-1, 2048, "many", 1.5):
        r = api.client.post("/v1/projects", json={**CEPH, "name": f"bad {bad}", "head_channels": bad}, headers=h)
        assert_problem(r, 422, "invalid-request", "head_channels")


@pytest.mark.parametrize(
    ("given", "strategy", "training"),
    [
        ({}, "kamp_ksd_only", {"alpha": 10.0, "refine": {"alpha": 300.0}}),
        ({"strategy": "kamp"}, "kamp", {"alpha": 10.0, "refine": {"alpha": 300.0}}),
        (
            {"training": {"alpha": 3, "temperature": 0.2}},
            "kamp_ksd_only",
            {"alpha": 3, "temperature": 0.2, "refine": {"alpha": 300.0}},
        ),
        # A local-stage setting of the request's own merges with the validated local weight, not over it.
        (
            {"training": {"refine": {"iterations": 50}}},
            "kamp_ksd_only",
            {"alpha": 10.0, "refine": {"alpha": 300.0, "iterations": 50}},
        ),
        ({"training": {"refine": {"alpha": 30}}}, "kamp_ksd_only", {"alpha": 10.0, "refine": {"alpha": 30}}),
        ({"strategy": "finetune"}, "finetune", {}),
        # A chest project stores what chest6-2step chose, another modality the cephalometric choice.
        ({"modality": "chest"}, "kamp_ksd_only", {}),
        (
            {"modality": "chest", "strategy": "lwf"},
            "lwf",
            {"alpha": 10.0, "temperature": 0.05, "refine": {"alpha": 300.0}},
        ),
        ({"modality": "other"}, "kamp_ksd_only", {"alpha": 10.0, "refine": {"alpha": 300.0}}),
    ],
)
def test_a_project_stores_its_strategys_validated_settings(
    api: Api, given: dict, strategy: str, training: dict
) -> None:
    """Without a strategy a project trains the registry's default; its training settings are stored with the
    strategy's ones validated for its modality (bench/selection_plan.py) under those the request sets itself."""
    _, admin = api.clinic()
    body = {k: v for k, v in CEPH.items() if k != "strategy"} | given
    r = api.client.post("/v1/projects", json=body, headers=api.headers(admin))
    assert r.status_code == 201, r.text
    again = api.client.get(f"/v1/projects/{r.json()['id']}", headers=api.headers(admin)).json()
    assert (again["strategy"], again["training"]) == (strategy, training)


def test_a_projects_gate_is_set_and_read_through_the_api(api: Api) -> None:
    _, admin = api.clinic()
    h = api.headers(admin)
    r = api.client.post("/v1/projects", json={**CEPH, "gate": {"max_new_mre": 2.5}}, headers=h)
    assert r.status_code == 201, r.text
    assert r.json()["gate"] == {"max_new_mre": 2.5}  # old_tolerance: the service's setting
    assert api.client.get(f"/v1/projects/{r.json()['id']}", headers=h).json()["gate"] == {"max_new_mre": 2.5}
    plain = api.client.post("/v1/projects", json={**CEPH, "name": "plain"}, headers=h).json()
    assert plain["gate"] == {}


def test_unknown_fields_of_nested_bodies_are_refused(api: Api) -> None:
    """A misspelt field, at any depth, answers 422 naming it instead of being dropped."""
    _, admin = api.clinic()
    h = api.headers(admin)
    pid = api.client.post("/v1/projects", json=CEPH, headers=h).json()["id"]
    url = f"/v1/projects/{pid}/landmark-sets"
    for body, name in [({**STEP0, "colour": "red"}, "colour"), ({"landmarks": [{"code": "S", "nmae": "S"}]}, "nmae")]:
        assert_problem(api.client.post(url, json=body, headers=h), 422, "invalid-request", name)
    assert api.client.get(url, headers=h).json() == []


def test_timestamps_are_answered_in_utc_with_their_offset(api: Api) -> None:
    from datetime import datetime, timedelta

    _, admin = api.clinic()
    created = api.client.post("/v1/projects", json=CEPH, headers=api.headers(admin)).json()["created_at"]
    parsed = datetime.fromisoformat(created)
    assert parsed.utcoffset() == timedelta(0), created
    assert abs(datetime.now(parsed.tzinfo) - parsed) < timedelta(minutes=5)


def test_readyz_says_when_the_broker_does_not_answer(database_url: str, tmp_path: Path) -> None:
    down = make_api(database_url, tmp_path, broker_url="redis://127.0.0.1:1/0")
    with down.client:
        body = assert_problem(down.client.get("/readyz"), 503, "not-ready", "the job queue does not answer")
        assert "127.0.0.1" not in body["detail"]


def test_a_huge_landmark_set_index_is_422_not_500(api: Api) -> None:
    _, admin = api.clinic()
    h = api.headers(admin)
    pid = api.client.post("/v1/projects", json=CEPH, headers=h).json()["id"]
    for path in (f"/v1/projects/{pid}/landmark-sets/{2**63}", f"/v1/projects/{pid}/landmark-sets/{2**63}/annotations"):
        assert_problem(api.client.get(path, headers=h), 422, "invalid-request")


def test_duplicate_project_name_is_409(api: Api) -> None:
    _, admin = api.clinic()
    assert api.client.post("/v1/projects", json=CEPH, headers=api.headers(admin)).status_code == 201
    assert_problem(api.client.post("/v1/projects", json=CEPH, headers=api.headers(admin)), 409, "conflict")


def test_another_clinics_objects_answer_404(api: Api) -> None:
    a_id, a_admin = api.clinic("A")
    _, b_admin = api.clinic("B")
    pid = api.client.post("/v1/projects", json=CEPH, headers=api.headers(a_admin)).json()["id"]
    hb = api.headers(b_admin)
    assert_problem(api.client.get(f"/v1/projects/{pid}", headers=hb), 404, "not-found")
    assert_problem(api.client.get(f"/v1/projects/{pid}/landmark-sets", headers=hb), 404)
    assert_problem(api.client.post(f"/v1/projects/{pid}/landmark-sets", json=STEP0, headers=hb), 404)
    assert_problem(api.client.get(f"/v1/clinics/{a_id}/api-keys", headers=hb), 404)
    assert api.client.get("/v1/projects", headers=hb).json() == []
    unknown = "00000000-0000-0000-0000-000000000000"
    assert_problem(api.client.get(f"/v1/projects/{unknown}", headers=hb), 404)
    assert_problem(api.client.get("/v1/projects/not-a-uuid", headers=hb), 422, "invalid-request")


def test_rate_limit_per_key(database_url: str, tmp_path: Path) -> None:
    api = make_api(database_url, tmp_path, rate_limit_per_minute=3)
    with api.client:
        _, admin = api.clinic()
        for _ in range(2):  # the clinic creation used the system key, not this one
            assert api.client.get("/v1/projects", headers=api.headers(admin)).status_code == 200
        api.client.get("/v1/projects", headers=api.headers(admin))
        body = assert_problem(api.client.get("/v1/projects", headers=api.headers(admin)), 429, "rate-limited")
        assert "3 requests" in body["detail"]


def test_nul_characters_are_a_clear_422_on_every_database(api: Api) -> None:
    _, admin = api.clinic()
    r = api.client.post("/v1/projects", json={**CEPH, "name": "bad\x00name"}, headers=api.headers(admin))
    if api.settings.resolved_database_url.startswith("postgresql"):
        assert_problem(r, 422, "unstorable-value", "NUL")
        assert api.client.get("/v1/projects", headers=api.headers(admin)).json() == []
    else:  # SQLite stores it faithfully
        assert r.status_code == 201


def test_405_lists_the_paths_real_methods(api: Api) -> None:
    r = api.client.put("/v1/studies")
    assert r.status_code == 405 and r.headers["allow"] == "GET, POST"
    assert r.headers["content-type"].startswith("application/problem+json")
    pid = "00000000-0000-0000-0000-000000000000"
    r = api.client.delete(f"/v1/projects/{pid}/landmark-sets/0/annotations/import")  # not .../{study_id}
    assert r.status_code == 405 and r.headers["allow"] == "POST"


def test_metrics_in_prometheus_format_for_the_system_key(api: Api) -> None:
    _, admin = api.clinic()
    assert api.client.get("/healthz").status_code == 200
    assert api.client.get("/metrics").status_code == 401
    assert api.client.get("/metrics", headers=api.headers(admin)).status_code == 403
    api.client.post("/v1/projects", json={"name": "p"})  # 401: counted under its route
    r = api.client.get("/metrics", headers=api.headers(api.system_key))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert 'kamp_http_request_seconds_count{method="GET",route="/healthz",status="200"} 1.0' in text
    assert 'kamp_http_request_seconds_count{method="POST",route="/v1/projects",status="401"} 1.0' in text
    assert 'kamp_jobs{kind="training",status="queued"} 0.0' in text
    assert 'kamp_queue_oldest_seconds{kind="prediction"} 0.0' in text
    assert "kamp_http_requests_in_flight 1.0" in text  # this very request
