"""Results back into DICOM: with the project's `sr_on_store` on, an instance stored through STOW-RS at the
project's root gets a DICOM SR of the active version's landmarks in its study (a tiny model trained here)."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import pydicom
import pytest
from requests import HTTPError

from server.db.entities import VersionStatus
from server.storage import LocalBlobStore
from worker.sweep import sweep_orphan_blobs

from ..api_helpers import CEPH
from ..test_predict import _add_version, tiny_checkpoint
from .conftest import Dicomweb, real_dataset, to_bytes

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _points(sr: pydicom.Dataset) -> dict[str, tuple[float, float]]:
    """{tracking identifier: (x, y)} of every landmark group of a TID 1500 report."""
    found: dict[str, tuple[float, float]] = {}

    def walk(items: pydicom.Sequence, group: str | None) -> None:
        for item in items:
            name = item.ConceptNameCodeSequence[0].CodeMeaning if "ConceptNameCodeSequence" in item else ""
            if name == "Tracking Identifier":
                group = item.TextValue
            if item.get("ValueType") == "SCOORD" and group is not None:
                found[group] = (float(item.GraphicData[0]), float(item.GraphicData[1]))
            if "ContentSequence" in item:
                walk(item.ContentSequence, group)

    walk(sr.ContentSequence, None)
    return found


def test_a_stored_instance_gets_its_sr_in_the_study(dw: Dicomweb, data_root: Path) -> None:
    api, headers = dw.api, dw.api.headers(dw.admin)
    pid = api.client.post("/v1/projects", json=CEPH, headers=headers).json()["id"]
    r = api.client.put(f"/v1/projects/{pid}/dicomweb", json={"sr_on_store": True}, headers=headers)
    assert r.status_code == 200 and r.json()["dicomweb"] == {"sr_on_store": True}
    client = dw.client(root=f"/dicomweb/projects/{pid}")
    client.store_instances([real_dataset("MR_small.dcm")])  # no active version yet: stored, no SR
    assert [s["00080061"]["Value"] for s in client.search_for_studies()] == [["MR"]]

    _add_version(api, pid, tiny_checkpoint(data_root, 15), VersionStatus.active)
    [sop] = [
        i.ReferencedSOPInstanceUID for i in client.store_instances([real_dataset("CT_small.dcm")]).ReferencedSOPSequence
    ]
    [study] = client.search_for_studies(search_filters={"ModalitiesInStudy": "CT"})
    assert study["00080061"]["Value"] == ["CT", "SR"] and study["00201208"]["Value"] == [2]
    study_uid = study["0020000D"]["Value"][0]
    [sr_row] = client.search_for_instances(study_uid, search_filters={"Modality": "SR"})
    sr = client.retrieve_instance(study_uid, sr_row["0020000E"]["Value"][0], sr_row["00080018"]["Value"][0])
    assert sr.StudyInstanceUID == study_uid and sr.Modality == "SR" and sr.PatientName == ""
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert evidence.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == sop

    # The same points as the JSON predict of the stored image (DICOM's pixel centres are ours + 0.5).
    [image_row] = client.search_for_instances(study_uid, search_filters={"SOPInstanceUID": sop})
    stored = client.retrieve_instance(study_uid, image_row["0020000E"]["Value"][0], sop)
    r = api.client.post(f"/v1/projects/{pid}/predict", files={"file": ("x.dcm", to_bytes(stored))}, headers=headers)
    assert r.status_code == 200, r.text
    expected = {f"{lm['code']} {lm['name']}".strip(): (lm["x"] + 0.5, lm["y"] + 0.5) for lm in r.json()["landmarks"]}
    points = _points(pydicom.dcmread(io.BytesIO(to_bytes(sr))))
    assert points.keys() == expected.keys() and len(points) == 4
    for code, (x, y) in expected.items():
        assert points[code] == pytest.approx((x, y), abs=1e-3)

    client.store_instances([real_dataset("CT_small.dcm")])  # the same image again: no second SR
    assert len(client.search_for_instances(study_uid)) == 2
    with pytest.raises(HTTPError) as info:  # an SR has no rendered image
        client.retrieve_instance_rendered(study_uid, sr_row["0020000E"]["Value"][0], sr_row["00080018"]["Value"][0])
    assert info.value.response.status_code == 406
    with pytest.raises(HTTPError) as info:  # nor any frame: it has no pixel data
        client.retrieve_instance_frames(study_uid, sr_row["0020000E"]["Value"][0], sr_row["00080018"]["Value"][0], [1])
    assert info.value.response.status_code == 404 and "no pixel data" in info.value.response.json()["detail"]
    _, other = api.clinic("Lakeside")
    assert api.client.get(f"/dicomweb/projects/{pid}/studies", headers=api.headers(other)).status_code == 404

    # The reaper's sweep keeps the report, whose blob only its instance row refers to, however old it is.
    store = LocalBlobStore(api.settings.resolved_blob_dir)
    then = time.time() - 2 * api.settings.orphan_blob_after_s
    for path in store.files():
        os.utime(path, (then, then))
    assert sweep_orphan_blobs(api.settings) == []
    assert client.retrieve_instance(study_uid, sr_row["0020000E"]["Value"][0], sr_row["00080018"]["Value"][0])
