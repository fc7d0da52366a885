"""Cephalometric analyses through HTTP: the catalogue, a project's mapping and coverage, and the measurements of a
prediction by a real model (the committed step-0 model of the cld38 benchmark: the 19 ISBI landmarks)."""

from __future__ import annotations

import functools
import io
import json
import uuid
from pathlib import Path

import pytest

from models.checkpoint import Checkpoint
from server.db.entities import VersionStatus

from .api_helpers import CEPH, assert_problem
from .conftest import Api
from .test_predict import _add_version

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: The benchmark's step-0 model of cld38-5step (two stages, 1.8 mm on its test images), kept in git.
MODEL = Path(__file__).parents[2] / "bench/results/cld38-5step-cpu-local/checkpoints/seed0/shared/step0.safetensors"
ISBI8 = ["ANB", "SNB", "SNA", "ODI", "APDI", "FHI", "FMA", "MW"]


@functools.cache
def model() -> Checkpoint:
    return Checkpoint.load(MODEL)


def _setup(api: Api, data_root: Path, *, report: dict | None = None) -> tuple[str, str, str]:
    """A project whose step 0 holds the model's 19 landmarks and whose active version is the model."""
    clinic, admin = api.clinic()
    pid = api.client.post("/v1/projects", json=CEPH, headers=api.headers(admin)).json()["id"]
    dataset = json.loads((data_root / "isbi2015/dataset.json").read_text())
    names = {lm["code"]: lm["name"] for lm in dataset["landmarks"]}
    step0 = {"name": "ISBI", "landmarks": [{"code": c, "name": names[c]} for c in model().codes]}
    r = api.client.post(f"/v1/projects/{pid}/landmark-sets", json=step0, headers=api.headers(admin))
    assert r.status_code == 201, r.text
    _add_version(api, pid, model(), VersionStatus.active, report)
    return pid, admin, api.key(clinic, admin, "predict")


def _predict(api: Api, pid: str, key: str, data_root: Path, **form: object):  # type: ignore[no-untyped-def]
    image = (data_root / "isbi2015/images/151.jpg").read_bytes()
    return api.client.post(
        f"/v1/projects/{pid}/predict",
        files={"file": ("151.jpg", image)},
        data={k: str(v) for k, v in form.items()},
        headers=api.headers(key),
    )


def test_the_catalogue_for_any_key(api: Api) -> None:
    r = api.client.get("/v1/analyses", headers=api.headers(api.system_key))
    assert r.status_code == 200, r.text
    body = r.json()
    codes = {a["code"]: a for a in body["analyses"]}
    assert {"steiner", "tweed", "downs", "mcnamara", "wits", "isbi2015"} <= set(codes)
    assert [m["code"] for m in codes["isbi2015"]["measurements"]] == ISBI8  # the parts of ODI/APDI are not listed
    anb = next(m for m in codes["steiner"]["measurements"] if m["code"] == "ANB")
    assert anb["landmarks"] == ["S", "N", "A", "B"] and anb["norm"] == {"mean": 2, "sd": 2} and anb["unit"] == "deg"
    assert [c["code"] for c in anb["classes"]] == ["I", "II", "III"] and "Steiner" in codes["steiner"]["source"]
    assert body["landmarks"]["S"] == "Sella"
    assert_problem(api.client.get("/v1/analyses"), 401)


def test_a_projects_mapping_is_checked(api: Api) -> None:
    clinic, admin = api.clinic()
    pid = api.client.post("/v1/projects", json=CEPH, headers=api.headers(admin)).json()["id"]
    url = f"/v1/projects/{pid}/analysis-landmarks"
    bad = api.client.put(url, json={"analysis_landmarks": {"Sx": "sella"}}, headers=api.headers(admin))
    assert_problem(bad, 422, "invalid-request", "Sx")
    twice = api.client.put(url, json={"analysis_landmarks": {"S": "N"}}, headers=api.headers(admin))
    assert_problem(twice, 422, "invalid-request", "two catalogue landmarks")
    newline = api.client.put(url, json={"analysis_landmarks": {"S": "sella\n"}}, headers=api.headers(admin))
    assert_problem(newline, 422, "invalid-request", "invalid landmark codes")  # no landmark could be "sella\n"
    annotator = api.key(clinic, admin, "annotator")
    assert_problem(api.client.put(url, json={"analysis_landmarks": {}}, headers=api.headers(annotator)), 403)
    _, other_admin = api.clinic("Elsewhere")
    assert_problem(api.client.put(url, json={"analysis_landmarks": {}}, headers=api.headers(other_admin)), 404)
    ok = api.client.put(url, json={"analysis_landmarks": {"S": "sella"}}, headers=api.headers(admin))
    assert ok.status_code == 200 and ok.json()["analysis_landmarks"] == {"S": "sella"}
    project = api.client.get(f"/v1/projects/{pid}", headers=api.headers(admin)).json()
    assert project["analysis_landmarks"] == {"S": "sella"}
    wrong = dict(CEPH, name="other", analysis_landmarks={"Xx": "y"})
    assert_problem(api.client.post("/v1/projects", json=wrong, headers=api.headers(admin)), 422, None, "Xx")


def test_coverage_names_the_step_a_clinic_must_add(api: Api, data_root: Path) -> None:
    pid, admin, _ = _setup(api, data_root)
    r = api.client.get(f"/v1/projects/{pid}/analyses", headers=api.headers(admin))
    assert r.status_code == 200, r.text
    by = {a["analysis"]: a for a in r.json()["analyses"]}
    assert r.json()["model_version_number"] == 1
    assert by["isbi2015"]["computable"] == ISBI8 and by["isbi2015"]["missing"] == {}
    wits = by["wits"]["missing"]["AO-BO"]
    assert [(m["code"], m["step"]) for m in wits] == [("U6", None), ("L6", None)]
    step1 = {"name": "molars", "landmarks": [{"code": "U6"}, {"code": "L6"}]}
    r = api.client.post(f"/v1/projects/{pid}/landmark-sets", json=step1, headers=api.headers(admin))
    assert r.status_code == 201, r.text
    after = api.client.get(f"/v1/projects/{pid}/analyses", headers=api.headers(admin)).json()
    wits = {a["analysis"]: a for a in after["analyses"]}["wits"]["missing"]["AO-BO"]
    assert [(m["code"], m["step"]) for m in wits] == [("U6", 1), ("L6", 1)]  # defined, awaiting training
    missing = api.client.get(f"/v1/projects/{pid}/analyses?version_id={uuid.uuid4()}", headers=api.headers(admin))
    assert_problem(missing, 404, "not-found", "version")


def test_predict_answers_the_measurements_with_ranges(api: Api, data_root: Path) -> None:
    errors = {c: {"mre": 1.8} for c in model().codes}
    pid, _, predict = _setup(api, data_root, report={"steps": [{"step": 0, "unit": "mm", "landmarks": errors}]})
    r = _predict(api, pid, predict, data_root, spacing_x_mm=0.2, spacing_y_mm=0.2)
    assert r.status_code == 200, r.text
    body = r.json()
    by = {(m["analysis"], m["code"]): m for m in body["measurements"]}
    assert [c for (a, c) in by if a == "isbi2015"] == ISBI8
    sna, snb, anb = by[("steiner", "SNA")], by[("steiner", "SNB")], by[("steiner", "ANB")]
    # Within what the norms make plausible for a real cephalogram (norm +- 5 SD).
    assert 72 <= sna["value"] <= 92 and 70 <= snb["value"] <= 90 and -8 <= anb["value"] <= 12
    assert anb["value"] == pytest.approx(sna["value"] - snb["value"])
    assert anb["low"] < anb["value"] < anb["high"] and anb["class_code"] in ("I", "II", "III")
    assert anb["deviation_sd"] == pytest.approx((anb["value"] - 2) / 2) and anb["landmarks"] == ["S", "N", "A", "B"]
    omitted = {(o["analysis"], o["code"]): o for o in body["measurements_omitted"]}
    assert omitted[("wits", "AO-BO")]["missing"] == ["U6", "L6"]
    # Without a spacing lengths are omitted with the reason; angles stay.
    plain = _predict(api, pid, predict, data_root).json()
    assert ("isbi2015", "MW") in {(o["analysis"], o["code"]) for o in plain["measurements_omitted"]}
    sna = next(m for m in plain["measurements"] if m["code"] == "SNA")
    assert sna["low"] is None  # the errors were validated in mm: they give no range on pixels


def test_the_projects_mapping_decides_which_landmark_is_which(api: Api, data_root: Path) -> None:
    pid, admin, predict = _setup(api, data_root)
    url = f"/v1/projects/{pid}/analysis-landmarks"
    r = api.client.put(url, json={"analysis_landmarks": {"S": "sella"}}, headers=api.headers(admin))
    assert r.status_code == 200, r.text
    body = _predict(api, pid, predict, data_root, spacing_x_mm=0.2, spacing_y_mm=0.2).json()
    omitted = {(o["analysis"], o["code"]): o for o in body["measurements_omitted"]}
    assert omitted[("steiner", "SNA")]["missing"] == ["sella"]  # the model has no landmark "sella"
    assert body["measurements"]  # those without sella (the facial angle, MW...) are still taken
    assert all("sella" not in m["landmarks"] for m in body["measurements"])


def _ceph_dicom(data_root: Path) -> bytes:
    """ISBI image 151 as a 16-bit DICOM CR at 0.2 mm/px (a real DICOM's header around a real cephalogram)."""
    import numpy as np
    import pydicom
    from PIL import Image
    from pydicom.uid import ExplicitVRLittleEndian

    from .test_studies_annotations import dicom_file

    ds = pydicom.dcmread(dicom_file("RG1_UNCR.dcm"))
    pixels = np.asarray(Image.open(data_root / "isbi2015/images/151.jpg").convert("L"), dtype=np.uint16) * 257
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelSpacing = ds.ImagerPixelSpacing = [0.2, 0.2]
    for keyword in ("WindowCenter", "WindowWidth", "RescaleIntercept", "RescaleSlope", "VOILUTSequence"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.PixelData = pixels.tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_the_sr_carries_the_measurements_as_in_the_json(api: Api, data_root: Path) -> None:
    import pydicom

    pid, _, predict = _setup(api, data_root)
    dicom = _ceph_dicom(data_root)
    body = api.client.post(
        f"/v1/projects/{pid}/predict", files={"file": ("c.dcm", dicom)}, headers=api.headers(predict)
    ).json()
    assert body["spacing"]["x_mm"] == pytest.approx(0.2)
    url = f"/v1/projects/{pid}/predict/sr"
    r = api.client.post(url, files={"file": ("c.dcm", dicom)}, headers=api.headers(predict))
    assert r.status_code == 200, r.text
    sr = pydicom.dcmread(io.BytesIO(r.content))
    read: dict[str, tuple[float, str]] = {}
    classes: dict[str, str] = {}
    for item in _walk(sr.ContentSequence):
        name = item.ConceptNameCodeSequence[0]
        if name.CodingSchemeDesignator != "99KAMP":
            continue
        if item.ValueType == "NUM":
            value = item.MeasuredValueSequence[0]
            read[_code(name)] = (float(value.NumericValue), value.MeasurementUnitsCodeSequence[0].CodeValue)
        if item.ValueType == "CODE":
            classes[_code(name).removesuffix(".class")] = _code(item.ConceptCodeSequence[0])
    expected = {f"{m['analysis']}.{m['code']}": m for m in body["measurements"]}
    assert set(read) == set(expected) and len(read) >= 25  # every measurement 19 landmarks allow
    units = {"deg": "deg", "mm": "mm", "%": "%", "ratio": "1"}
    for code, m in expected.items():
        assert read[code][0] == pytest.approx(m["value"], rel=1e-6, abs=1e-6) and read[code][1] == units[m["unit"]]
        if m["class_code"]:
            assert classes[code] == f"{code}.{m['class_code']}"  # one code, one meaning in our scheme


def _code(item) -> str:  # type: ignore[no-untyped-def]
    """A code item's value: CodeValue, or LongCodeValue past 16 characters."""
    return str(item.get("CodeValue") or item.get("LongCodeValue"))


def _walk(items):  # type: ignore[no-untyped-def]
    for item in items:
        yield item
        if "ContentSequence" in item:
            yield from _walk(item.ContentSequence)


def test_render_draws_a_chosen_analysis(api: Api, data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np
    from PIL import Image

    pid, _, predict = _setup(api, data_root)
    image = (data_root / "isbi2015/images/151.jpg").read_bytes()

    def render(**form: str):  # type: ignore[no-untyped-def]
        return api.client.post(
            f"/v1/projects/{pid}/predict/render",
            files={"file": ("151.jpg", image)},
            data={"spacing_x_mm": "0.2", "spacing_y_mm": "0.2", **form},
            headers=api.headers(predict),
        )

    plain, traced = render(), render(analysis="steiner")
    assert plain.status_code == traced.status_code == 200 and traced.headers["content-type"] == "image/png"
    a = np.asarray(Image.open(io.BytesIO(plain.content)).convert("RGB"), dtype=np.int16)
    b = np.asarray(Image.open(io.BytesIO(traced.content)).convert("RGB"), dtype=np.int16)
    assert a.shape == b.shape == (1200, 968, 3)
    changed = np.abs(a - b).sum(axis=-1) > 0
    assert changed[:150, :300].mean() > 0.3  # the legend's box, top left
    assert changed[150:].mean() > 0.002  # the lines below it
    import server.predict.routes as routes

    async def no_inference(*args: object) -> None:
        raise AssertionError("an unknown analysis is refused before any prediction")

    monkeypatch.setattr(routes, "_infer", no_inference)
    assert_problem(render(analysis="nope"), 422, "invalid-request", "steiner")  # the known ones are named


def test_a_swapped_mapping_swaps_the_landmarks_measured(api: Api, data_root: Path) -> None:
    from models.analyses import measure

    pid, admin, predict = _setup(api, data_root)
    plain = _predict(api, pid, predict, data_root, spacing_x_mm=0.2, spacing_y_mm=0.2).json()
    swap = {"analysis_landmarks": {"S": "N", "N": "S"}}  # the project calls nasion "S" and sella "N"
    assert api.client.put(f"/v1/projects/{pid}/analysis-landmarks", json=swap, headers=api.headers(admin)).is_success
    body = _predict(api, pid, predict, data_root, spacing_x_mm=0.2, spacing_y_mm=0.2).json()
    points = {lm["code"]: (lm["x"], lm["y"]) for lm in plain["landmarks"]}
    expected = measure(points | {"S": points["N"], "N": points["S"]}, (0.2, 0.2), analyses=["steiner"])
    sna = next(m for m in body["measurements"] if (m["analysis"], m["code"]) == ("steiner", "SNA"))
    assert sna["value"] == pytest.approx(next(v.value for v in expected.values if v.code == "SNA"))
    assert sna["landmarks"] == ["N", "S", "A"]  # the project's codes of catalogue S, N, A
    before = next(m for m in plain["measurements"] if (m["analysis"], m["code"]) == ("steiner", "SNA"))
    assert abs(sna["value"] - before["value"]) > 1


def test_another_modality_is_not_measured(api: Api, data_root: Path) -> None:
    clinic, admin = api.clinic()
    chest = dict(CEPH, name="chest", modality="chest")
    pid = api.client.post("/v1/projects", json=chest, headers=api.headers(admin)).json()["id"]
    _add_version(api, pid, model(), VersionStatus.active)  # codes that look like the catalogue's
    body = _predict(api, pid, api.key(clinic, admin, "predict"), data_root, spacing_x_mm=0.2, spacing_y_mm=0.2)
    assert body.status_code == 200 and len(body.json()["landmarks"]) == 19
    assert body.json()["measurements"] == [] and body.json()["measurements_omitted"] == []
