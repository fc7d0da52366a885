"""Bulk annotation imports through HTTP (COCO keypoints JSON, ISBI/CL-Detection text), matched to uploaded
studies by the digest of their file names; all or nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from httpx import Response

from .api_helpers import assert_problem
from .conftest import Api, make_api
from .test_studies_annotations import _png, _project_with_set, upload


def _isbi_points(data_root: Path, image_id: str, codes: list[str]) -> dict[str, tuple[float, float]]:
    from models.datasets import load_dataset

    ds = load_dataset(data_root / "isbi2015")
    kp = ds.keypoints([image_id], codes, "senior")[0]
    return {c: (float(x), float(y)) for c, (x, y) in zip(codes, kp, strict=True)}


def test_import_coco_and_isbi_text(api: Api, data_root: Path) -> None:
    _, admin = api.clinic()
    h = api.headers(admin)
    pid = _project_with_set(api, admin)
    ids = ["001", "002"]
    studies = {}
    for i in ids:
        r = upload(api, admin, (data_root / "isbi2015" / "images" / f"{i}.jpg").read_bytes(), f"{i}.jpg")
        studies[i] = r.json()["id"]
    truth = {i: _isbi_points(data_root, i, ["S", "N"]) for i in ids}
    coco = {
        "images": [{"id": n, "file_name": f"{i}.jpg", "width": 968, "height": 1200} for n, i in enumerate(ids)],
        "categories": [{"id": 1, "name": "ceph", "keypoints": ["S", "N"]}],
        "annotations": [
            {
                "id": n,
                "image_id": n,
                "category_id": 1,
                # COCO's origin is the image corner: pixel centres sit at +0.5.
                "keypoints": [truth[i]["S"][0] + 0.5, truth[i]["S"][1] + 0.5, 2, 0, 0, 0],
            }
            for n, i in enumerate(ids)
        ],
    }
    url = f"/v1/projects/{pid}/landmark-sets/0/annotations"
    r = api.client.post(f"{url}/import?format=coco", files={"files": ("a.json", json.dumps(coco).encode())}, headers=h)
    assert r.status_code == 201, r.text
    assert r.json()["imported"] == 2
    first = next(a for a in r.json()["annotations"] if a["study_id"] == studies["001"])
    assert first["source"] == "import:coco" and [p["code"] for p in first["points"]] == ["S"]  # N had v = 0
    assert (first["points"][0]["x"], first["points"][0]["y"]) == pytest.approx(truth["001"]["S"])
    text = {f"{i}.txt": ("\n".join(f"{x},{y}" for x, y in truth[i].values()) + "\nextra line\n").encode() for i in ids}
    r = api.client.post(f"{url}/import?format=isbi", files=[("files", (n, d)) for n, d in text.items()], headers=h)
    assert r.status_code == 201, r.text
    current = {a["study_id"]: a for a in api.client.get(url, headers=h).json()}
    assert {current[studies[i]]["version"] for i in ids} == {2}
    n_point = next(p for p in current[studies["002"]]["points"] if p["code"] == "N")
    assert (n_point["x"], n_point["y"]) == pytest.approx(truth["002"]["N"])


def _coco_with(annotations: object) -> bytes:
    """A COCO document of one image and a one-keypoint ("S") category with these annotations."""
    doc = {"images": [{"id": 1, "file_name": "001.jpg"}], "categories": [{"id": 1, "keypoints": ["S"]}]}
    return json.dumps({**doc, "annotations": annotations}).encode()


def _coco_doc(file_name: object = "001.jpg", keypoints: object = ("S",)) -> bytes:
    """A COCO document with one annotation of landmark S on one image, with its image name and category's
    keypoint names as given."""
    keypoints = list(keypoints) if isinstance(keypoints, tuple) else keypoints
    doc = {
        "images": [{"id": 1, "file_name": file_name}],
        "categories": [{"id": 1, "keypoints": keypoints}],
        "annotations": [{"image_id": 1, "category_id": 1, "keypoints": [1, 1, 2]}],
    }
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("fmt", "files", "contains"),
    [
        ("coco", [("a.json", b"{not json")], "COCO"),
        (
            "coco",
            [
                (
                    "a.json",
                    json.dumps(
                        {
                            "images": [{"id": 1, "file_name": "nope.jpg"}],
                            "categories": [{"id": 1, "keypoints": ["S"]}],
                            "annotations": [{"image_id": 1, "category_id": 1, "keypoints": [1, 1, 2]}],
                        }
                    ).encode(),
                )
            ],
            "nope.jpg",
        ),
        (
            "coco",
            [
                (
                    "a.json",
                    json.dumps(
                        {
                            "images": [{"id": 1, "file_name": "001.jpg"}],
                            "categories": [{"id": 1, "keypoints": ["Q"]}],
                            "annotations": [],
                        }
                    ).encode(),
                )
            ],
            "no annotation",
        ),
        ("coco", [("a.json", _coco_with(5))], "must be a list"),
        ("coco", [("a.json", _coco_with(None))], "must be a list"),
        ("coco", [("a.json", b"[" * 100_000 + b"]" * 100_000)], "nested too deeply"),
        ("coco", [("a.json", _coco_with([{"image_id": 1, "category_id": 1, "keypoints": [1, 2, 0]}]))], "labels no"),
        ("coco", [("a.json", _coco_with([{"image_id": 1, "category_id": 1, "keypoints": [10**400, 1, 2]}]))], "finite"),
        ("coco", [("a.json", _coco_doc(file_name=7))], "file_name must be a non-empty string"),
        ("coco", [("a.json", _coco_doc(file_name=None))], "file_name must be a non-empty string"),
        ("coco", [("a.json", _coco_doc(file_name=["001.jpg"]))], "file_name must be a non-empty string"),
        ("coco", [("a.json", _coco_doc(keypoints=[["S"]]))], "keypoints must be a list of landmark codes"),
        ("coco", [("a.json", _coco_doc(keypoints="S"))], "keypoints must be a list of landmark codes"),
        ("isbi", [("001.txt", b"1,2\n")], "lines"),
        ("isbi", [("001.txt", b"1,2\nfoo,bar\n")], "x,y"),
        ("isbi", [("001.txt", b"1,2\n5000,1\n")], "outside"),
    ],
)
def test_bad_imports_store_nothing(api: Api, data_root: Path, fmt: str, files: list, contains: str) -> None:
    _, admin = api.clinic()
    pid = _project_with_set(api, admin)
    upload(api, admin, (data_root / "isbi2015" / "images" / "001.jpg").read_bytes(), "001.jpg")
    url = f"/v1/projects/{pid}/landmark-sets/0/annotations"
    r = api.client.post(f"{url}/import?format={fmt}", files=[("files", f) for f in files], headers=api.headers(admin))
    assert_problem(r, 422, None, contains)
    assert api.client.get(url, headers=api.headers(admin)).json() == []


def test_an_import_over_its_limit_or_with_two_files_of_one_name_is_refused(
    database_url: str, tmp_path: Path, data_root: Path
) -> None:
    api = make_api(database_url, tmp_path, max_import_bytes=20)
    with api.client:
        _, admin = api.clinic()
        pid = _project_with_set(api, admin)
        upload(api, admin, (data_root / "isbi2015" / "images" / "001.jpg").read_bytes(), "001.jpg")
        url = f"/v1/projects/{pid}/landmark-sets/0/annotations"

        def send(files: list[tuple[str, bytes]]) -> Response:
            parts = [("files", f) for f in files]
            return api.client.post(f"{url}/import?format=isbi", files=parts, headers=api.headers(admin))

        assert_problem(send([("001.txt", b"1,2\n" * 3), ("002.txt", b"3,4\n" * 3)]), 413, "upload-too-large", "20")
        assert_problem(send([("001.txt", b"1,2\n"), ("001.txt", b"3,4\n")]), 422, "bad-import", "two files")
        assert api.client.get(url, headers=api.headers(admin)).json() == []
        r = send([("001.txt", b"1,2\n3,4\n")])
        assert r.status_code == 201, r.text  # within the limit


def test_an_import_naming_forty_thousand_images_is_matched_in_chunks(api: Api) -> None:
    # Two digests a reference: one query for all of them would bind 80,000 parameters (PostgreSQL allows 65,535).
    _, admin = api.clinic()
    pid = _project_with_set(api, admin)
    assert upload(api, admin, _png(50, 40), "001.png").status_code == 201
    names = ["001.png", *(f"{i}.png" for i in range(40_000))]
    coco = {
        "images": [{"id": i, "file_name": name} for i, name in enumerate(names)],
        "categories": [{"id": 1, "keypoints": ["S"]}],
        "annotations": [{"image_id": i, "category_id": 1, "keypoints": [5, 5, 2]} for i in range(len(names))],
    }
    url = f"/v1/projects/{pid}/landmark-sets/0/annotations"
    files = {"files": ("a.json", json.dumps(coco).encode())}
    r = api.client.post(f"{url}/import?format=coco", files=files, headers=api.headers(admin))
    assert_problem(r, 422, "bad-import", "no uploaded study is named 0.png, 1.png, 10.png")  # 001.png was found


def test_a_name_two_studies_were_uploaded_under_is_refused(api: Api) -> None:
    _, admin = api.clinic()
    h = api.headers(admin)
    pid = _project_with_set(api, admin)
    first, second = (upload(api, admin, _png(w, 40), "001.png").json()["id"] for w in (50, 60))
    assert first != second  # two images, one file name
    url = f"/v1/projects/{pid}/landmark-sets/0/annotations"
    r = api.client.post(f"{url}/import?format=isbi", files=[("files", ("001.txt", b"10,10\n20,20\n"))], headers=h)
    assert_problem(r, 409, "ambiguous-reference", "more than one uploaded study is named 001")
    assert api.client.get(url, headers=h).json() == []
