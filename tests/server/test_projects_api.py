"""Projects and their landmark sets through HTTP, on SQLite and PostgreSQL: what a project stores, what it
refuses, and its landmark sets step by step."""

from __future__ import annotations

import json

import pytest

from models.config import RefineConfig, to_dict
from server.projects.schemas import ProjectIn

from .api_helpers import CEPH, STEP0, STEP1, assert_problem
from .conftest import Api


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
