"""The predict endpoint through HTTP on real images, with a tiny model trained here, on both databases."""

from __future__ import annotations

import functools
import io
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from models.checkpoint import Checkpoint
from models.config import BackboneConfig, CodecConfig, TrainConfig
from models.datasets import load_protocol
from models.predictor import Predictor, Reduced
from models.trainer import train_step
from server.db.entities import ModelVersion, Project, VersionStatus
from server.storage import LocalBlobStore

from .api_helpers import CEPH, assert_problem
from .conftest import Api
from .test_studies_annotations import dicom_file

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CODES = ["S", "N", "Me", "Go"]


@functools.cache
def tiny_checkpoint(data_root: Path, iterations: int) -> Checkpoint:
    protocol = load_protocol(data_root, "isbi19-5step")
    ds = protocol.load_dataset(data_root)
    data = ds.step_data(protocol.steps[0].images[:6], CODES, "senior")
    config = TrainConfig(iterations=iterations, batch_size=3, warmup=2)
    ckpt, _ = train_step(
        None,
        data,
        "finetune",
        config,
        backbone=BackboneConfig(name="hrnet_w18_tiny"),
        codec=CodecConfig(input_size=(64, 80)),
        names={"S": "Sella"},
    )
    return ckpt


def _add_version(api: Api, pid: str, checkpoint: Checkpoint, status: VersionStatus, report: dict | None = None) -> str:
    key = LocalBlobStore(api.settings.resolved_blob_dir).put(checkpoint.to_bytes())
    with api.client.app.state.session_factory() as session:
        number = len(list(session.scalars(select(ModelVersion).where(ModelVersion.project_id == uuid.UUID(pid))))) + 1
        v = ModelVersion(
            project_id=uuid.UUID(pid),
            number=number,
            step=0,
            checkpoint_blob=key,
            checkpoint_sha256=key,
            strategy="finetune",
            status=status,
            report=report or {},
        )
        session.add(v)
        session.commit()
        return str(v.id)


@pytest.fixture
def project(api: Api) -> tuple[str, str, str]:
    clinic, admin = api.clinic()
    pid = api.client.post("/v1/projects", json=CEPH, headers=api.headers(admin)).json()["id"]
    return pid, admin, api.key(clinic, admin, "predict")


def _image(data_root: Path, image_id: str = "151") -> bytes:
    return (data_root / "isbi2015" / "images" / f"{image_id}.jpg").read_bytes()


def _predict(api: Api, pid: str, key: str, data: bytes, name: str = "x.jpg", **form: object):  # type: ignore[no-untyped-def]
    return api.client.post(
        f"/v1/projects/{pid}/predict",
        files={"file": (name, data)},
        data={k: str(v) for k, v in form.items()},
        headers=api.headers(key),
    )


def test_no_model_yet_is_409(api: Api, project: tuple[str, str, str], data_root: Path) -> None:
    pid, _, predict = project
    assert_problem(_predict(api, pid, predict, _image(data_root)), 409, "no-model", "no active model version")


def test_predict_real_image_units_and_nothing_stored(api: Api, project: tuple[str, str, str], data_root: Path) -> None:
    pid, admin, predict = project
    ckpt = tiny_checkpoint(data_root, 15)
    vid = _add_version(api, pid, ckpt, VersionStatus.active)
    blobs_before = sorted(p.name for p in api.settings.resolved_blob_dir.rglob("*") if p.is_file())
    r = _predict(api, pid, predict, _image(data_root), spacing_x_mm=0.1, spacing_y_mm=0.1)
    assert r.status_code == 200, r.text
    timing = dict(part.split(";", 1) for part in r.headers["server-timing"].split(", "))
    # The route's durations, the size of the forward pass that served it (alone here), then the app's.
    assert list(timing) == ["image", "preprocess", "forward", "decode", "model", "batch", "app"]
    assert timing["batch"] == "desc=1"
    timing = {k: v.removeprefix("dur=") for k, v in timing.items() if k != "batch"}
    assert float(timing["app"]) >= float(timing["model"]) >= float(timing["forward"]) > 0
    body = r.json()
    assert (
        body["model_version_id"] == vid and body["checkpoint_sha256"] and (body["width"], body["height"]) == (968, 1200)
    )
    assert body["spacing"] == {"x_mm": 0.1, "y_mm": 0.1, "source": "user"}
    assert [lm["code"] for lm in body["landmarks"]] == CODES and body["landmarks"][0]["name"] == "Sella"
    for lm in body["landmarks"]:
        assert lm["x_mm"] == pytest.approx(lm["x"] * 0.1) and lm["y_mm"] == pytest.approx(lm["y"] * 0.1)
        assert -0.5 <= lm["x"] <= 967.5 and -0.5 <= lm["y"] <= 1199.5 and 0 <= lm["confidence"] <= 1
    # The same as the library's Predictor on the same pixels: the service adds no offset of its own. The JPEG
    # is decoded reduced 8x for this 64x80 model (968 // 64 = 15 >= 8), the points mapped back to the file.
    from server.imaging import decode_image

    reduced = decode_image(_image(data_root), at_least=(64, 80))
    assert reduced.reduction == 8 and reduced.pixels.shape == (150, 121)
    frame = Reduced(8, (968, 1200))
    direct = Predictor(ckpt).predict([reduced.pixels], reduced=[frame])[0]
    assert [round(lm.x, 3) for lm in direct.landmarks] == [round(lm["x"], 3) for lm in body["landmarks"]]
    assert [round(lm.y, 3) for lm in direct.landmarks] == [round(lm["y"], 3) for lm in body["landmarks"]]
    # And the reduced decoding lands within a small part of one input pixel (968 / 64 = 15 image pixels) of the
    # whole image's prediction; compared in fp32 with a 40-iteration model: the 15-iteration one's flat heatmaps
    # (confidence ~0.4) turn the two resamplings' rounding into up to 14 pixels, depending on the CPU it trained on.
    exact = Predictor(tiny_checkpoint(data_root, 40), precision="fp32")
    whole = exact.predict([decode_image(_image(data_root)).pixels])[0]
    from_reduced = exact.predict([reduced.pixels], reduced=[frame])[0]
    for a, b in zip(whole.landmarks, from_reduced.landmarks, strict=True):
        assert abs(a.x - b.x) < 3 and abs(a.y - b.y) < 3
    # Nothing of the image was stored.
    assert api.client.get("/v1/studies", headers=api.headers(admin)).json() == []
    assert sorted(p.name for p in api.settings.resolved_blob_dir.rglob("*") if p.is_file()) == blobs_before


def test_resized_image_gives_proportional_answers(api: Api, project: tuple[str, str, str], data_root: Path) -> None:
    pid, _, predict = project
    # A model whose heatmaps are not flat (see the reduced-decoding comparison above).
    _add_version(api, pid, tiny_checkpoint(data_root, 40), VersionStatus.active)
    full = _predict(api, pid, predict, _image(data_root)).json()["landmarks"]
    buf = io.BytesIO()
    Image.open(io.BytesIO(_image(data_root))).resize((484, 600), Image.LANCZOS).save(buf, format="PNG")
    half = _predict(api, pid, predict, buf.getvalue(), "half.png").json()["landmarks"]
    for a, b in zip(full, half, strict=True):
        # Both are letterboxed to the same 64x80 input, so they agree up to resampling: within 1% of the width.
        assert (b["x"] + 0.5) * 2 - 0.5 == pytest.approx(a["x"], abs=10) and (b["y"] + 0.5) * 2 - 0.5 == pytest.approx(
            a["y"], abs=12
        )


def test_version_switch_after_promotion_and_explicit_versions(
    api: Api, project: tuple[str, str, str], data_root: Path
) -> None:
    pid, admin, predict = project
    v1 = _add_version(api, pid, tiny_checkpoint(data_root, 15), VersionStatus.active)
    v2 = _add_version(api, pid, tiny_checkpoint(data_root, 25), VersionStatus.candidate)
    assert _predict(api, pid, predict, _image(data_root)).json()["model_version_id"] == v1
    r = api.client.post(f"/v1/versions/{v2}/promote", json={"reason": "better"}, headers=api.headers(admin))
    assert r.status_code == 200, r.text
    after = _predict(api, pid, predict, _image(data_root)).json()
    assert after["model_version_id"] == v2 and after["model_version_number"] == 2
    assert _predict(api, pid, predict, _image(data_root), version_id=v1).json()["model_version_id"] == v1
    assert_problem(_predict(api, pid, predict, _image(data_root), version_id=str(uuid.uuid4())), 404, "not-found")


def test_batch_and_dicom(api: Api, project: tuple[str, str, str], data_root: Path) -> None:
    pid, _, predict = project
    _add_version(api, pid, tiny_checkpoint(data_root, 15), VersionStatus.active)
    files = [
        ("files", ("a.jpg", _image(data_root, "151"))),
        ("files", ("b.dcm", dicom_file("RG1_UNCR.dcm").read_bytes())),
    ]
    r = api.client.post(f"/v1/projects/{pid}/predict/batch", files=files, headers=api.headers(predict))
    assert r.status_code == 200, r.text
    a, b = r.json()
    assert a["filename"] == "a.jpg" and b["filename"] == "b.dcm" and (b["width"], b["height"]) == (1841, 1955)
    assert b["spacing"]["source"] == "none" and all(lm["x_mm"] is None for lm in b["landmarks"])
    too_many = [("files", (f"{i}.jpg", _image(data_root))) for i in range(17)]
    assert_problem(
        api.client.post(f"/v1/projects/{pid}/predict/batch", files=too_many, headers=api.headers(predict)),
        413,
        "batch-too-large",
    )
    bad = [files[0], ("files", ("junk.png", b"not an image"))]
    assert_problem(
        api.client.post(f"/v1/projects/{pid}/predict/batch", files=bad, headers=api.headers(predict)),
        422,
        None,
        "junk.png",
    )


def test_a_batch_holds_a_bounded_amount_of_decoded_images(
    api: Api, project: tuple[str, str, str], data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """All of a batch's images are held until the model answers: together at most a few times one image's limit
    (16 images at the limit would hold 4 GiB)."""
    import server.predict.routes as routes

    pid, _, predict = project
    _add_version(api, pid, tiny_checkpoint(data_root, 15), VersionStatus.active)
    dicom = dicom_file("RG1_UNCR.dcm").read_bytes()  # 1841 x 1955: 7.2 MB of 16-bit pixels
    files = [("files", (f"{i}.dcm", dicom)) for i in range(2)]
    url = f"/v1/projects/{pid}/predict/batch"
    assert api.client.post(url, files=files, headers=api.headers(predict)).status_code == 200
    monkeypatch.setattr(routes, "BATCH_DECODED_FACTOR", 10e6 / api.settings.max_decoded_bytes)  # 10 MB a batch
    too_much = api.client.post(url, files=files, headers=api.headers(predict))
    assert_problem(too_much, 413, "batch-too-large", "first 2 images decode to 14 MiB together")


def test_store_keeps_the_image_as_a_study_when_asked(api: Api, project: tuple[str, str, str], data_root: Path) -> None:
    pid, admin, predict = project
    _add_version(api, pid, tiny_checkpoint(data_root, 15), VersionStatus.active)
    plain = _predict(api, pid, predict, _image(data_root))
    assert plain.json()["study_id"] is None and api.client.get("/v1/studies", headers=api.headers(admin)).json() == []
    kept = _predict(api, pid, predict, _image(data_root), "ceph.jpg", store="true", spacing_x_mm=0.1, spacing_y_mm=0.1)
    assert kept.status_code == 200, kept.text
    study_id = kept.json()["study_id"]
    [study] = api.client.get("/v1/studies", headers=api.headers(admin)).json()
    assert study["id"] == study_id and (study["width"], study["height"]) == (968, 1200)
    assert "filename" not in study and study["spacing"]["x_mm"] == 0.1  # a file name is an identifier
    # The whole image was decoded for the study; the answer is the one of a whole decode (not a reduced one).
    from server.imaging import decode_image

    whole = Predictor(tiny_checkpoint(data_root, 15)).predict([decode_image(_image(data_root)).pixels])[0]
    assert [round(lm.x, 3) for lm in whole.landmarks] == [round(lm["x"], 3) for lm in kept.json()["landmarks"]]
    # The same pixels again: the same study; the batch route keeps each of its images too.
    assert _predict(api, pid, predict, _image(data_root), store="true").json()["study_id"] == study_id
    files = [("files", ("a.jpg", _image(data_root, "151"))), ("files", ("b.jpg", _image(data_root, "001")))]
    r = api.client.post(
        f"/v1/projects/{pid}/predict/batch", files=files, data={"store": "true"}, headers=api.headers(predict)
    )
    assert r.status_code == 200, r.text
    assert r.json()[0]["study_id"] == study_id and r.json()[1]["study_id"] not in (None, study_id)
    assert len(api.client.get("/v1/studies", headers=api.headers(admin)).json()) == 2


@pytest.mark.parametrize(
    ("data", "form", "status", "slug"),
    [
        (b"not an image", {}, 422, "not-an-image"),
        ("image", {"spacing_x_mm": 0, "spacing_y_mm": 0}, 422, "bad-spacing"),
        ("image", {"spacing_x_mm": -0.1, "spacing_y_mm": 0.1}, 422, "bad-spacing"),
        ("image", {"spacing_x_mm": 1e-4, "spacing_y_mm": 1e-4}, 422, "bad-spacing"),  # landmarks miles outside
        ("image", {"spacing_x_mm": 1e-300, "spacing_y_mm": 1e-300}, 422, "bad-spacing"),  # was a 500
        ("tiny", {}, 422, "image-too-small"),
        ("truncated", {}, 422, "truncated-dicom"),
    ],
)
def test_bad_input(
    api: Api, project: tuple[str, str, str], data_root: Path, data: bytes | str, form: dict, status: int, slug: str
) -> None:
    pid, _, predict = project
    _add_version(api, pid, tiny_checkpoint(data_root, 15), VersionStatus.active)
    if data == "image":
        data = _image(data_root)
    elif data == "tiny":
        buf = io.BytesIO()
        Image.fromarray(np.zeros((2, 3000), np.uint8)).save(buf, format="PNG")
        data = buf.getvalue()
    elif data == "truncated":
        full = dicom_file("693_UNCR.dcm").read_bytes()
        data = full[: len(full) // 2]
    assert_problem(
        _predict(api, pid, predict, data, "x.dcm" if slug == "truncated-dicom" else "x.jpg", **form), status, slug
    )


def test_a_clinic_predicts_only_with_its_own_projects(api: Api, project: tuple[str, str, str], data_root: Path) -> None:
    pid, _, _ = project
    _add_version(api, pid, tiny_checkpoint(data_root, 15), VersionStatus.active)
    other_clinic, other_admin = api.clinic("Other")
    other_predict = api.key(other_clinic, other_admin, "predict")
    assert_problem(_predict(api, pid, other_predict, _image(data_root)), 404, "not-found")
    with api.client.app.state.session_factory() as session:
        assert session.get(Project, uuid.UUID(pid)) is not None


def test_a_version_of_another_project_is_not_found(api: Api, project: tuple[str, str, str], data_root: Path) -> None:
    """The version, the project and the caller's clinic are checked together: a version of the clinic's other
    project is 404 (not used on this one), and so is any version of another clinic's project."""
    pid, admin, predict = project
    _add_version(api, pid, tiny_checkpoint(data_root, 15), VersionStatus.active)
    other = api.client.post("/v1/projects", json={**CEPH, "name": "Other"}, headers=api.headers(admin)).json()["id"]
    foreign = _add_version(api, other, tiny_checkpoint(data_root, 15), VersionStatus.active)
    assert_problem(_predict(api, pid, predict, _image(data_root), version_id=foreign), 404, "not-found", "version")
    other_clinic, other_admin = api.clinic("Other clinic")
    assert_problem(
        _predict(api, other, api.key(other_clinic, other_admin, "predict"), _image(data_root), version_id=foreign),
        404,
        "not-found",
        "project",
    )
    assert_problem(_predict(api, pid, api.system_key, _image(data_root)), 403, "forbidden")


def test_render_png(api: Api, project: tuple[str, str, str], data_root: Path) -> None:
    pid, _, predict = project
    vid = _add_version(api, pid, tiny_checkpoint(data_root, 15), VersionStatus.active)
    r = api.client.post(
        f"/v1/projects/{pid}/predict/render", files={"file": ("x.jpg", _image(data_root))}, headers=api.headers(predict)
    )
    assert r.status_code == 200 and r.headers["content-type"] == "image/png" and r.headers["x-model-version"] == vid
    png = Image.open(io.BytesIO(r.content))
    assert png.size == (968, 1200) and png.mode == "RGB"
    # Something was drawn in colour on the grey image.
    rgb = np.asarray(png).astype(int)
    assert (np.abs(rgb[..., 0] - rgb[..., 1]) > 50).sum() > 50


def test_dicom_structured_report_holds_the_predicted_points(
    api: Api, project: tuple[str, str, str], data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import highdicom as hd
    import pydicom

    pid, _, predict = project
    _add_version(api, pid, tiny_checkpoint(data_root, 15), VersionStatus.active)
    source = dicom_file("RG1_UNCR.dcm")
    points = _predict(api, pid, predict, source.read_bytes(), "chest.dcm").json()["landmarks"]
    r = api.client.post(
        f"/v1/projects/{pid}/predict/sr",
        files={"file": ("chest.dcm", source.read_bytes())},
        headers=api.headers(predict),
    )
    assert r.status_code == 200 and r.headers["content-type"] == "application/dicom"
    ds = pydicom.dcmread(io.BytesIO(r.content))
    assert ds.Modality == "SR" and ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    original = pydicom.dcmread(source)
    assert ds.StudyInstanceUID == original.StudyInstanceUID  # filed beside the image it describes
    sr = hd.sr.srread(io.BytesIO(r.content))
    groups = sr.content.get_planar_roi_measurement_groups()
    assert [g.tracking_identifier.split()[0] for g in groups] == CODES
    for g, lm in zip(groups, points, strict=True):
        # DICOM's pixel-centre origin is (0.5, 0.5); ours (0, 0).
        assert g.roi.value[0].tolist() == pytest.approx([lm["x"] + 0.5, lm["y"] + 0.5], abs=1e-3)
        image_ref = g.roi.ContentSequence[0].ReferencedSOPSequence[0]  # the SCOORD's selected-from IMAGE item
        assert image_ref.ReferencedSOPInstanceUID == original.SOPInstanceUID
    # A DICOM without the optional study and patient attributes still gets its report (they are left empty).
    bare = pydicom.dcmread(source)
    for keyword in ("StudyID", "StudyTime", "StudyDate", "AccessionNumber", "PatientBirthDate", "PatientSex"):
        if keyword in bare:
            delattr(bare, keyword)
    stripped = io.BytesIO()
    bare.save_as(stripped)
    r = api.client.post(
        f"/v1/projects/{pid}/predict/sr",
        files={"file": ("bare.dcm", stripped.getvalue())},
        headers=api.headers(predict),
    )
    assert r.status_code == 200, r.text
    assert pydicom.dcmread(io.BytesIO(r.content)).StudyInstanceUID == original.StudyInstanceUID

    import server.predict.routes as routes

    async def no_inference(*args: object) -> None:
        raise AssertionError("a JPEG's structured report is refused before any prediction")

    monkeypatch.setattr(routes, "_infer", no_inference)
    not_dicom = api.client.post(
        f"/v1/projects/{pid}/predict/sr", files={"file": ("x.jpg", _image(data_root))}, headers=api.headers(predict)
    )
    assert_problem(not_dicom, 422, "sr-needs-dicom")
