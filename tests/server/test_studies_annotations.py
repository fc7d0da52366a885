"""Study upload and annotations through HTTP on real images, on SQLite and PostgreSQL."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from server.imaging.deid import METHOD

from .api_helpers import CEPH, assert_problem
from .conftest import Api, make_api
from .imaging.cases import nifti_gz, tiff_with_a_page_without_size, with_unknown_vr

ISBI_ID = "001"


def dicom_file(name: str) -> Path:
    import data_store

    return Path(data_store.__file__).parent / "data" / name


@pytest.fixture
def ceph_jpeg(data_root: Path) -> bytes:
    return (data_root / "isbi2015" / "images" / f"{ISBI_ID}.jpg").read_bytes()


def upload(api: Api, key: str, data: bytes, name: str = "image.jpg", **form: float):  # type: ignore[no-untyped-def]
    return api.client.post(
        "/v1/studies", files={"file": (name, data)}, data={k: str(v) for k, v in form.items()}, headers=api.headers(key)
    )


def blob_files(api: Api) -> list[Path]:
    root = api.settings.resolved_blob_dir
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_upload_jpeg_with_spacing_and_dedup(api: Api, ceph_jpeg: bytes) -> None:
    _, admin = api.clinic()
    r = upload(api, admin, ceph_jpeg, "001.jpg", spacing_x_mm=0.1, spacing_y_mm=0.1)
    assert r.status_code == 201, r.text
    study = r.json()
    assert (study["width"], study["height"], study["format"]) == (968, 1200, "jpeg")
    assert study["spacing"] == {"x_mm": 0.1, "y_mm": 0.1, "source": "user"} and study["created"]
    assert r.headers["location"] == f"/v1/studies/{study['id']}"
    again = upload(api, admin, ceph_jpeg, "copy.jpg")
    assert again.status_code == 200 and again.json()["id"] == study["id"] and not again.json()["created"]
    assert [s["id"] for s in api.client.get("/v1/studies", headers=api.headers(admin)).json()] == [study["id"]]
    png = api.client.get(f"/v1/studies/{study['id']}/image", headers=api.headers(admin))
    assert png.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(png.content)).size == (968, 1200)


def test_dicom_is_deidentified_and_spacing_unknown_when_zero(api: Api) -> None:
    _, admin = api.clinic()
    path = dicom_file("RG1_UNCR.dcm")  # a real CR chest, MONOCHROME1, PixelSpacing 0\0
    original = pydicom.dcmread(path)
    r = upload(api, admin, path.read_bytes(), "chest.dcm")
    assert r.status_code == 201, r.text
    study = r.json()
    assert study["format"] == "dicom" and study["modality"] == "CR" and study["deid_method"] == METHOD
    assert study["spacing"] == {"x_mm": None, "y_mm": None, "source": "none"}
    stored = [p for p in blob_files(api) if p.read_bytes()[128:132] == b"DICM"]
    assert len(stored) == 1
    ds = pydicom.dcmread(stored[0])
    assert str(ds.PatientName) != str(original.PatientName) or not str(original.PatientName)
    assert ds.get("PatientID") != original.get("PatientID") or not original.get("PatientID")
    for value in (str(original.PatientName), str(original.get("PatientID", ""))):
        if value:
            assert value not in r.text


def _tiny_png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((40, 50), 128, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("data", "form", "status", "slug"),
    [
        (b"this is not an image at all", {}, 422, "not-an-image"),
        (b"", {}, 422, None),
        ("truncated-dicom", {}, 422, "truncated-dicom"),
        ("dicom-of-unknown-vr", {}, 422, "invalid-dicom"),
        ("tiff-with-a-page-without-size", {}, 422, "truncated-image"),
        ("png", {"spacing_x_mm": 0.0, "spacing_y_mm": 0.1}, 422, "bad-spacing"),
        ("png", {"spacing_x_mm": -1.0, "spacing_y_mm": -1.0}, 422, "bad-spacing"),
        ("png", {"spacing_x_mm": 0.1}, 422, "bad-spacing"),
    ],
)
def test_bad_uploads_are_refused_and_store_nothing(
    api: Api, data: bytes | str, form: dict, status: int, slug: str | None
) -> None:
    _, admin = api.clinic()
    if data == "truncated-dicom":
        full = dicom_file("693_UNCR.dcm").read_bytes()
        data = full[: len(full) // 2]
    elif data == "png":
        data = _tiny_png()
    elif data == "dicom-of-unknown-vr":
        data = with_unknown_vr(dicom_file("SC_rgb.dcm").read_bytes(), "SamplesPerPixel")
    elif data == "tiff-with-a-page-without-size":
        data = tiff_with_a_page_without_size()
    assert_problem(upload(api, admin, data, "x.dcm" if slug == "truncated-dicom" else "x.png", **form), status, slug)
    assert api.client.get("/v1/studies", headers=api.headers(admin)).json() == []
    assert blob_files(api) == []


def test_size_limits(database_url: str, tmp_path: Path, ceph_jpeg: bytes) -> None:
    api = make_api(database_url, tmp_path, max_upload_bytes=50_000, max_image_pixels=10_000)
    with api.client:
        _, admin = api.clinic()
        assert_problem(upload(api, admin, ceph_jpeg), 413, "upload-too-large")
        assert_problem(upload(api, admin, _png(200, 100)), 413, "image-too-large")
        assert upload(api, admin, _png(50, 40)).status_code == 201


def test_a_nifti_gz_is_stored_up_to_its_pixels_and_refused_past_the_limit(database_url: str, tmp_path: Path) -> None:
    api = make_api(database_url, tmp_path, max_decoded_bytes=1_000_000)
    with api.client:
        _, admin = api.clinic()
        refused = upload(api, admin, nifti_gz(gap=17 * 2**20)[0], "x.nii.gz")  # 17 MiB of extensions first
        assert_problem(refused, 413, "image-too-large")
        data, nifti = nifti_gz(trail=32 * 2**20)
        assert upload(api, admin, data, "x.nii.gz").status_code == 201
        [stored] = [p.read_bytes() for p in blob_files(api) if p.read_bytes().startswith(b"\x1f\x8b")]
        assert len(gzip.decompress(stored)) == len(nifti)  # without the 32 MiB after the pixels


def _png(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(w).integers(0, 255, (h, w), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _project_with_set(api: Api, admin: str) -> str:
    h = api.headers(admin)
    pid = api.client.post("/v1/projects", json=CEPH, headers=h).json()["id"]
    r = api.client.post(
        f"/v1/projects/{pid}/landmark-sets", json={"landmarks": [{"code": "S"}, {"code": "N"}]}, headers=h
    )
    assert r.status_code == 201, r.text
    return pid


def test_annotations_are_versioned_with_a_frozen_split(api: Api, ceph_jpeg: bytes) -> None:
    clinic, admin = api.clinic()
    annotator = api.key(clinic, admin, "annotator")
    pid = _project_with_set(api, admin)
    sid = upload(api, annotator, ceph_jpeg).json()["id"]
    url = f"/v1/projects/{pid}/landmark-sets/0/annotations"
    h = api.headers(annotator)
    first = api.client.post(
        url,
        json={
            "study_id": sid,
            "points": [{"code": "N", "x": 736.25, "y": 514.25}, {"code": "S", "x": 417.25, "y": 497.75}],
        },
        headers=h,
    )
    assert first.status_code == 201, first.text
    a1 = first.json()
    assert a1["version"] == 1 and a1["split"] in ("train", "val") and a1["step"] == 0
    assert [p["code"] for p in a1["points"]] == ["S", "N"]  # set order
    second = api.client.post(
        url, json={"study_id": sid, "annotator": "Dr B", "points": [{"code": "S", "x": 418.0, "y": 498.0}]}, headers=h
    ).json()
    assert second["version"] == 2 and second["split"] == a1["split"] and second["annotator"] == "Dr B"
    current = api.client.get(url, headers=h).json()
    assert [(a["study_id"], a["version"]) for a in current] == [(sid, 2)]
    history = api.client.get(f"{url}/{sid}", headers=h).json()
    assert [a["version"] for a in history] == [1, 2] and history[0]["points"] == a1["points"]


def test_a_study_joins_one_step_of_a_project(api: Api, ceph_jpeg: bytes) -> None:
    """Each step's landmarks are annotated on new studies: a study of step 0 (maybe one of its validation
    images) is refused in step 1, and nothing of the refusal is kept; another project may use it."""
    _, admin = api.clinic()
    pid = _project_with_set(api, admin)
    h = api.headers(admin)
    step1 = api.client.post(f"/v1/projects/{pid}/landmark-sets", json={"landmarks": [{"code": "Po"}]}, headers=h)
    assert step1.status_code == 201, step1.text
    sid = upload(api, admin, ceph_jpeg).json()["id"]
    base = f"/v1/projects/{pid}/landmark-sets"
    body = {"study_id": sid, "points": [{"code": "S", "x": 417.25, "y": 497.75}]}
    assert api.client.post(f"{base}/0/annotations", json=body, headers=h).status_code == 201
    again = {"study_id": sid, "points": [{"code": "Po", "x": 300.0, "y": 600.0}]}
    assert_problem(api.client.post(f"{base}/1/annotations", json=again, headers=h), 409, "study-in-another-step")
    assert api.client.get(f"{base}/1/annotations", headers=h).json() == []
    other = api.client.post("/v1/projects", json={**CEPH, "name": "another line"}, headers=h).json()["id"]
    assert api.client.post(f"/v1/projects/{other}/landmark-sets", json={"landmarks": [{"code": "S"}]}, headers=h)
    r = api.client.post(f"/v1/projects/{other}/landmark-sets/0/annotations", json=body, headers=h)
    assert r.status_code == 201, r.text  # another project may use the study


def test_concurrent_annotations_of_one_study_answer_201_or_409_never_500(api: Api, ceph_jpeg: bytes) -> None:
    """8 annotations of one study at once: each is saved as the next version or refused with 409 (a concurrent
    writer took the version); the versions kept are 1..n without a gap."""
    from concurrent.futures import ThreadPoolExecutor

    _, admin = api.clinic()
    pid = _project_with_set(api, admin)
    sid = upload(api, admin, ceph_jpeg).json()["id"]
    url = f"/v1/projects/{pid}/landmark-sets/0/annotations"
    body = {"study_id": sid, "points": [{"code": "S", "x": 417.25, "y": 497.75}]}

    def post(_: int) -> int:
        return api.client.post(url, json=body, headers=api.headers(admin)).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(post, range(8)))
    assert set(statuses) <= {201, 409} and 201 in statuses, statuses
    history = api.client.get(f"{url}/{sid}", headers=api.headers(admin)).json()
    versions = sorted(a["version"] for a in (history if isinstance(history, list) else history["versions"]))
    assert versions == list(range(1, statuses.count(201) + 1))


@pytest.mark.parametrize(
    ("points", "slug", "contains"),
    [
        ([{"code": "Go", "x": 1, "y": 1}], "unknown-landmark", "Go"),
        ([{"code": "S", "x": 1, "y": 1}, {"code": "S", "x": 2, "y": 2}], "duplicate-landmark", "S"),
        ([{"code": "S", "x": 968.0, "y": 10}], "point-outside-image", "S"),
        ([{"code": "S", "x": -0.6, "y": 10}], "point-outside-image", "S"),
        ([], "invalid-request", "points"),
        ([{"code": "S", "x": True, "y": 1}], "invalid-request", "x"),
        ([{"code": "S", "x": 1, "y": "12"}], "invalid-request", "y"),
        ([{"code": "S", "x": 1, "y": 1, "z": 0}], "invalid-request", "z"),
    ],
)
def test_bad_annotations_are_refused_and_change_nothing(
    api: Api, ceph_jpeg: bytes, points: list, slug: str, contains: str
) -> None:
    _, admin = api.clinic()
    pid = _project_with_set(api, admin)
    sid = upload(api, admin, ceph_jpeg).json()["id"]
    url = f"/v1/projects/{pid}/landmark-sets/0/annotations"
    r = api.client.post(url, json={"study_id": sid, "points": points}, headers=api.headers(admin))
    assert_problem(r, 422, slug, contains)
    assert api.client.get(url, headers=api.headers(admin)).json() == []


def test_nan_and_foreign_studies(api: Api, ceph_jpeg: bytes) -> None:
    _, admin = api.clinic("A")
    _, other_admin = api.clinic("B")
    pid = _project_with_set(api, admin)
    url = f"/v1/projects/{pid}/landmark-sets/0/annotations"
    sid = upload(api, admin, ceph_jpeg).json()["id"]
    body = json.dumps({"study_id": sid, "points": [{"code": "S", "x": float("nan"), "y": 1.0}]})
    r = api.client.post(url, content=body, headers={**api.headers(admin), "content-type": "application/json"})
    assert_problem(r, 422, "invalid-request")
    foreign = upload(api, other_admin, _png(60, 60)).json()["id"]
    assert_problem(
        api.client.post(
            url, json={"study_id": foreign, "points": [{"code": "S", "x": 1, "y": 1}]}, headers=api.headers(admin)
        ),
        404,
        "not-found",
        "study",
    )
    assert_problem(api.client.get(f"/v1/studies/{sid}", headers=api.headers(other_admin)), 404)
    assert_problem(
        api.client.post(
            url, json={"study_id": sid, "points": [{"code": "S", "x": 1, "y": 1}]}, headers=api.headers(other_admin)
        ),
        404,
        "not-found",
        "project",
    )
    assert_problem(
        api.client.post(
            f"/v1/projects/{pid}/landmark-sets/7/annotations",
            json={"study_id": sid, "points": [{"code": "S", "x": 1, "y": 1}]},
            headers=api.headers(admin),
        ),
        404,
    )


def test_predict_role_cannot_upload_or_annotate(api: Api, ceph_jpeg: bytes) -> None:
    clinic, admin = api.clinic()
    predict = api.key(clinic, admin, "predict")
    assert_problem(upload(api, predict, ceph_jpeg), 403, "forbidden")


def test_split_quota_gives_small_sets_their_validation_studies() -> None:
    from server.annotations.service import next_role

    def roles(n: int, fraction: float) -> list[str]:
        out: list[str] = []
        for _ in range(n):
            out.append(next_role(len(out), out.count("val"), fraction))
        return out

    assert roles(6, 0.2).count("val") == 1 and roles(10, 0.2).count("val") == 2
    assert roles(100, 0.2).count("val") == 20
    assert roles(6, 0.5).count("val") == 3
    assert roles(2, 0.2) == ["train", "train"]  # too small a set for a validation study at 20%
    assert roles(50, 0.0).count("val") == 0


def test_whole_flow_two_steps_on_real_cephalograms(api: Api, data_root: Path) -> None:
    """A clinic's project grows by two landmark sets; new studies are annotated with each set's landmarks only."""
    from models.datasets import load_protocol

    protocol = load_protocol(data_root, "cld38-5step")
    ds = protocol.load_dataset(data_root)
    clinic, admin = api.clinic()
    annotator = api.key(clinic, admin, "annotator")
    h_admin, h = api.headers(admin), api.headers(annotator)
    pid = api.client.post("/v1/projects", json=CEPH, headers=h_admin).json()["id"]
    splits = []
    for step in (0, 1):
        codes = protocol.steps[step].landmarks
        r = api.client.post(
            f"/v1/projects/{pid}/landmark-sets",
            headers=h_admin,
            json={"name": f"step {step}", "landmarks": [{"code": c} for c in codes]},
        )
        assert r.status_code == 201 and r.json()["step"] == step, r.text
        for image_id in protocol.steps[step].images[:3]:
            data = ds.image_path(image_id).read_bytes()
            study = upload(api, annotator, data, f"{image_id}.jpg", spacing_x_mm=0.2, spacing_y_mm=0.2).json()
            kp = ds.keypoints([image_id], codes, protocol.annotator)[0]
            points = [{"code": c, "x": float(x), "y": float(y)} for c, (x, y) in zip(codes, kp, strict=True)]
            a = api.client.post(
                f"/v1/projects/{pid}/landmark-sets/{step}/annotations",
                headers=h,
                json={"study_id": study["id"], "points": points},
            )
            assert a.status_code == 201, a.text
            splits.append(a.json()["split"])
    sets = api.client.get(f"/v1/projects/{pid}/landmark-sets", headers=h).json()
    assert [len(s["landmarks"]) for s in sets] == [19, 5]
    for step in (0, 1):
        current = api.client.get(f"/v1/projects/{pid}/landmark-sets/{step}/annotations", headers=h).json()
        assert len(current) == 3 and all(len(a["points"]) == len(sets[step]["landmarks"]) for a in current)
    assert len(api.client.get("/v1/studies", headers=h).json()) == 6
    assert set(splits) <= {"train", "val"}
