"""Clinics, keys, roles, health, limits and the API's general rules through HTTP, on SQLite and PostgreSQL
(projects and landmark sets: test_projects_api.py)."""

from __future__ import annotations

import re
from pathlib import Path

from .api_helpers import CEPH, STEP0, assert_problem
from .conftest import Api, make_api


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
