"""What the API tests share: the problem-JSON check and a project with its first two landmark sets."""

from __future__ import annotations

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
