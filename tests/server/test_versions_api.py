"""Model versions through HTTP, on SQLite and PostgreSQL: history, promote and rollback, checkpoint download,
roles and other clinics. No model is trained: versions are written straight to the database."""

from __future__ import annotations

from typing import Any

from server.db.entities import VersionStatus
from server.storage import LocalBlobStore

from .api_helpers import assert_problem
from .conftest import Api
from .training_helpers import active_versions, add_versions, fake_queue, key_id, project, submit


def test_version_history_promote_and_rollback(api: Api) -> None:
    clinic, admin = api.clinic()
    h = api.headers(admin)
    pid = project(api, admin, annotated_steps=0)
    steps = [{"step": 0, "mre": 1.6, "unit": "mm", "sdr": {"2.0": 0.7}}, {"step": 1, "mre": 2.1, "unit": "mm"}]
    v1, v2, v3, v4 = add_versions(
        api,
        pid,
        [
            {"status": VersionStatus.active},
            {"status": VersionStatus.candidate, "step": 1, "parent": 0, "report": {"steps": steps, "gate": "pass"}},
            {"status": VersionStatus.rejected, "step": 1, "parent": 0, "report": {"steps": "garbled"}},
            {"status": VersionStatus.candidate, "step": 1, "parent": 1},
        ],
    )
    annotator = api.key(clinic, admin, "annotator")
    history = api.client.get(f"/v1/projects/{pid}/versions", headers=api.headers(annotator)).json()
    assert history["active_version_id"] == v1
    assert [(v["number"], v["parent_number"], v["status"]) for v in history["versions"]] == [
        (1, None, "active"),
        (2, 1, "candidate"),
        (3, 1, "rejected"),
        (4, 2, "candidate"),
    ]
    assert history["versions"][1]["parent_id"] == v1 and history["versions"][1]["summary"]["steps"] == steps
    assert history["versions"][0]["summary"] == {"steps": []} and history["versions"][2]["summary"] == {"steps": []}

    def promote(vid: str, action: str = "promote", reason: str = "reviewed"):  # type: ignore[no-untyped-def]
        return api.client.post(f"/v1/versions/{vid}/{action}", json={"reason": reason}, headers=h)

    assert_problem(promote(v2, reason=""), 422, "invalid-request", "reason")
    assert_problem(
        api.client.post(f"/v1/versions/{v2}/promote", json={"reason": "x"}, headers=api.headers(annotator)), 403
    )
    r = promote(v2, reason="passes on the March studies")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "active" and active_versions(api, pid) == [2]
    admin_id = key_id(api, clinic, admin, "admin")
    assert [(e["action"], e["actor"], e["reason"]) for e in r.json()["events"]] == [
        ("promoted", admin_id, "passes on the March studies")
    ]
    old = api.client.get(f"/v1/versions/{v1}", headers=h).json()
    assert old["status"] == "archived" and [e["action"] for e in old["events"]] == ["archived"]
    assert old["hyperparameters"] == {"iterations": 250} and old["report"] == {} and old["job_id"] is None
    assert_problem(promote(v2), 409, "already-active")
    # A version the gate rejected can be promoted by a person; the override is on record.
    r = promote(v3, reason="override: gate too strict for step 1")
    assert r.status_code == 200 and active_versions(api, pid) == [3]
    assert r.json()["events"][-1]["reason"] == "override: gate too strict for step 1"
    # Roll back to v1 (archived, earlier): v3 is archived.
    r = promote(v1, "rollback", "v3 misplaces gonion")
    assert r.status_code == 200, r.text
    assert [e["action"] for e in r.json()["events"]] == ["archived", "rolled_back"] and active_versions(api, pid) == [1]
    statuses = {
        v["number"]: v["status"] for v in api.client.get(f"/v1/projects/{pid}/versions", headers=h).json()["versions"]
    }
    assert statuses == {1: "active", 2: "archived", 3: "archived", 4: "candidate"}
    assert_problem(promote(v1, "rollback"), 409, "not-archived")  # the active one
    assert_problem(promote(v4, "rollback"), 409, "not-archived")  # a candidate
    assert_problem(promote(v2, "rollback"), 409, "not-earlier")  # newer than the active v1: promote it instead
    assert active_versions(api, pid) == [1]
    # Each version says which decision the API takes for it, so a client offers no refused one.
    listed = api.client.get(f"/v1/projects/{pid}/versions", headers=h).json()["versions"]
    assert [v["decision"] for v in listed] == [None, "promote", "promote", "promote"]
    assert promote(v2).status_code == 200  # promoted, not rolled back to
    assert api.client.get(f"/v1/versions/{v1}", headers=h).json()["decision"] == "rollback"  # older, archived


def test_checkpoint_download(api: Api) -> None:
    clinic, admin = api.clinic()
    pid = project(api, admin, annotated_steps=0, name="Lateral ceph / PA: 2026")
    v1, v2 = add_versions(api, pid, [{"status": VersionStatus.active}, {"status": VersionStatus.candidate}])
    r = api.client.get(f"/v1/versions/{v1}/checkpoint", headers=api.headers(admin))
    assert r.status_code == 200, r.text
    assert r.content == f"checkpoint v1 of {pid}".encode()
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["content-disposition"] == 'attachment; filename="Lateral-ceph-PA-2026-v1.safetensors"'
    sha = api.client.get(f"/v1/versions/{v1}", headers=api.headers(admin)).json()["checkpoint_sha256"]
    assert r.headers["etag"] == f'"{sha}"'
    cached = api.client.get(
        f"/v1/versions/{v1}/checkpoint", headers={**api.headers(admin), "If-None-Match": f'"{sha}"'}
    )
    assert cached.status_code == 304 and not cached.content
    LocalBlobStore(api.settings.resolved_blob_dir).path(
        api.client.get(f"/v1/versions/{v2}", headers=api.headers(admin)).json()["checkpoint_sha256"]
    ).unlink()
    assert_problem(api.client.get(f"/v1/versions/{v2}/checkpoint", headers=api.headers(admin)), 404, "blob-missing")
    annotator = api.key(clinic, admin, "annotator")
    assert_problem(api.client.get(f"/v1/versions/{v1}/checkpoint", headers=api.headers(annotator)), 403, "forbidden")


def test_roles_and_other_clinics(api: Api) -> None:
    clinic, admin = api.clinic("A")
    _, other_admin = api.clinic("B")
    queue = fake_queue(api)
    pid = project(api, admin, annotated_steps=1)
    job = submit(api, admin, pid, 0).json()
    (vid,) = add_versions(api, pid, [{"status": VersionStatus.candidate}])
    reason = {"reason": "r"}
    predict, annotator = api.key(clinic, admin, "predict"), api.key(clinic, admin, "annotator")
    reads = [
        ("get", f"/v1/jobs/{job['id']}", None),
        ("get", f"/v1/projects/{pid}/jobs", None),
        ("get", f"/v1/projects/{pid}/versions", None),
        ("get", f"/v1/versions/{vid}", None),
    ]
    writes = [
        ("post", f"/v1/projects/{pid}/landmark-sets/0/submit", {}),
        ("post", f"/v1/jobs/{job['id']}/cancel", None),
        ("post", f"/v1/jobs/{job['id']}/retry", None),
        ("post", f"/v1/versions/{vid}/promote", reason),
        ("post", f"/v1/versions/{vid}/rollback", reason),
        ("get", f"/v1/versions/{vid}/checkpoint", None),
    ]
    for method, path, body in reads + writes:
        kwargs: dict[str, Any] = {} if body is None else {"json": body}
        assert_problem(api.client.request(method, path, headers=api.headers(predict), **kwargs), 403, "forbidden")
        assert_problem(api.client.request(method, path, headers=api.headers(other_admin), **kwargs), 404, "not-found")
    for method, path, _ in reads:
        assert api.client.request(method, path, headers=api.headers(annotator)).status_code == 200, path
    for method, path, body in writes:
        kwargs = {} if body is None else {"json": body}
        assert_problem(api.client.request(method, path, headers=api.headers(annotator), **kwargs), 403, "forbidden")
    # Nothing changed: one queued job, one call to the queue, the version still a candidate.
    assert api.client.get(f"/v1/jobs/{job['id']}", headers=api.headers(admin)).json()["status"] == "queued"
    assert len(queue.calls) == 1 and active_versions(api, pid) == []
