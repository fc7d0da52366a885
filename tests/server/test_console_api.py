"""What the web console needs of the API, through HTTP: who a key is, a study's thumbnail, the time an
annotation took; and the console's own page and modules with their security headers."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .api_helpers import assert_problem
from .conftest import Api, make_api
from .test_studies_annotations import _project_with_set, upload


@pytest.fixture
def ceph_jpeg(data_root: Path) -> bytes:
    return (data_root / "isbi2015" / "images" / "001.jpg").read_bytes()


def test_whoami_answers_each_keys_role_and_clinic(api: Api) -> None:
    system = api.client.get("/v1/whoami", headers=api.headers(api.system_key)).json()
    assert system["role"] == "system" and system["clinic_id"] is None
    clinic, admin = api.clinic()
    for role in ("admin", "annotator", "predict"):
        key = admin if role == "admin" else api.key(clinic, admin, role)
        me = api.client.get("/v1/whoami", headers=api.headers(key)).json()
        assert (me["role"], me["clinic_id"]) == (role, clinic)
    assert_problem(api.client.get("/v1/whoami"), 401, "unauthorized")
    assert_problem(api.client.get("/v1/whoami", headers=api.headers("kamp_0_x")), 401, "unauthorized")


def test_a_thumbnail_is_a_small_jpeg_of_the_clinics_own_study(api: Api, ceph_jpeg: bytes) -> None:
    _, admin = api.clinic()
    sid = upload(api, admin, ceph_jpeg).json()["id"]
    r = api.client.get(f"/v1/studies/{sid}/thumbnail?size=120", headers=api.headers(admin))
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(r.content)) as small:
        assert max(small.size) == 120 and small.size == (97, 120)  # 968x1200 kept in proportion
    assert_problem(api.client.get(f"/v1/studies/{sid}/thumbnail?size=5000", headers=api.headers(admin)), 422)
    _, other = api.clinic("Elsewhere")
    assert_problem(api.client.get(f"/v1/studies/{sid}/thumbnail", headers=api.headers(other)), 404)


def test_a_thumbnail_of_a_large_study_averages_it_and_waits_for_a_decoding_slot(
    database_url: str, tmp_path: Path
) -> None:
    api = make_api(database_url, tmp_path, max_concurrent_decodes=1, decode_wait_s=0.2)
    rows, cols = np.mgrid[0:3000, 0:4000]
    stripes = np.where((cols // 2) % 2 == 0, 255, 0)  # 2-px stripes: a thumbnail that skipped pixels would show them
    picture = np.where(rows < 1500, stripes, 128).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(picture).save(buf, format="PNG")
    with api.client:
        _, admin = api.clinic()
        sid = upload(api, admin, buf.getvalue(), name="large.png").json()["id"]
        r = api.client.get(f"/v1/studies/{sid}/thumbnail?size=200", headers=api.headers(admin))
        assert r.status_code == 200
        with Image.open(io.BytesIO(r.content)) as small:
            grey = np.asarray(small, dtype=np.float32)
        assert small.size == (200, 150)
        assert abs(grey[10:65].mean() - 127.5) < 4 and grey[10:65].std() < 6  # the stripes averaged to grey
        assert abs(grey[85:140].mean() - 128) < 3
        with api.client.app.state.decode_slots.held():  # the one slot busy (an upload decoding)
            busy = api.client.get(f"/v1/studies/{sid}/thumbnail?size=200", headers=api.headers(admin))
        assert_problem(busy, 503, "busy")


def test_an_annotation_keeps_the_seconds_it_took(api: Api, ceph_jpeg: bytes) -> None:
    _, admin = api.clinic()
    pid = _project_with_set(api, admin)
    sid = upload(api, admin, ceph_jpeg).json()["id"]
    url = f"/v1/projects/{pid}/landmark-sets/0/annotations"
    points = [{"code": "S", "x": 417.0, "y": 497.5}]
    timed = api.client.post(url, json={"study_id": sid, "points": points, "seconds": 42.5}, headers=api.headers(admin))
    assert timed.status_code == 201 and timed.json()["seconds"] == 42.5
    untimed = api.client.post(url, json={"study_id": sid, "points": points}, headers=api.headers(admin)).json()
    assert untimed["seconds"] is None
    history = api.client.get(f"{url}/{sid}", headers=api.headers(admin)).json()
    assert [a["seconds"] for a in history] == [42.5, None]
    for bad in (-1, 1e9, "12"):
        r = api.client.post(url, json={"study_id": sid, "points": points, "seconds": bad}, headers=api.headers(admin))
        assert_problem(r, 422)
    assert len(api.client.get(f"{url}/{sid}", headers=api.headers(admin)).json()) == 2


def test_the_console_page_and_modules_are_served_with_security_headers(api: Api) -> None:
    page = api.client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/console/js/app.js" in page.text
    for r in (page, api.client.get("/console/js/app.js"), api.client.get("/console/console.css")):
        assert r.status_code == 200
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert r.headers["x-frame-options"] == "DENY" and r.headers["referrer-policy"] == "no-referrer"
    assert api.client.get("/console/js/app.js").headers["content-type"].startswith("text/javascript")
    assert api.client.get("/console/nothing.js").status_code == 404
    paths = api.client.get("/openapi.json").json()["paths"]
    assert "/" not in paths and not any(p.startswith("/console") for p in paths)


def test_every_console_module_is_packaged() -> None:
    """pyproject's package-data globs take every file of the console (a new folder would be left out)."""
    import tomllib

    static = Path(__file__).parents[2] / "server" / "console" / "static"
    globs = tomllib.loads((static.parents[2] / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    packaged = {p for g in globs["server.console"] for p in static.parent.glob(g)}
    assert {p for p in static.rglob("*") if p.is_file()} == packaged
