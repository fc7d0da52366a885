"""A clinic that keeps DICOM descriptions: stored verbatim with the method saying so; every other clinic's are
removed; only the clinic's admin or the system key changes the setting."""

from __future__ import annotations

import io
import uuid

import pydicom
import pytest
from pydicom.data import get_testdata_file

from server.db.entities import Study
from server.imaging import decode_image
from server.imaging.deid import METHOD, METHOD_DESCRIPTORS_KEPT
from server.imaging.descriptors import DESCRIPTORS, with_descriptors
from server.storage import LocalBlobStore

from .conftest import Api

DESCRIBED = {"StudyDescription": "LATERAL CEPH", "SeriesDescription": "ceph lat 1", "ImageComments": "pre-op"}


def _described_dicom() -> bytes:
    ds = pydicom.dcmread(get_testdata_file("RG1_UNCR.dcm"))
    for keyword, text in DESCRIBED.items():
        setattr(ds, keyword, text)
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


def _stored(api: Api, study_id: str) -> pydicom.Dataset:
    with api.client.app.state.session_factory() as session:
        study = session.get(Study, uuid.UUID(study_id))
        assert study is not None
        data = LocalBlobStore(api.settings.resolved_blob_dir).get(study.source_blob)
    return pydicom.dcmread(io.BytesIO(data))


def test_descriptors_are_written_back_with_the_method_that_says_so() -> None:
    image = decode_image(_described_dicom())
    assert image.descriptors == {**DESCRIBED, "SpecificCharacterSet": "ISO_IR 100"} and image.deid_method == METHOD
    removed = pydicom.dcmread(io.BytesIO(image.source_bytes_deidentified))
    assert not any(keyword in removed for keyword in DESCRIPTORS)
    kept = with_descriptors(image)
    stored = pydicom.dcmread(io.BytesIO(kept.source_bytes_deidentified))
    assert {keyword: stored[keyword].value for keyword in DESCRIBED} == DESCRIBED
    assert stored.DeidentificationMethod == METHOD_DESCRIPTORS_KEPT == kept.deid_method
    assert [c.CodeValue for c in stored.DeidentificationMethodCodeSequence] == ["113100"]  # no Clean Descriptors
    assert stored.PatientName == "" and stored.SOPInstanceUID == image.dicom.SOPInstanceUID  # type: ignore[union-attr]
    assert image.dicom is not None and "StudyDescription" not in image.dicom  # the decode's dataset unchanged


def test_padding_goes_and_significant_leading_spaces_stay() -> None:
    ds = pydicom.dcmread(get_testdata_file("RG1_UNCR.dcm"))
    ds.StudyDescription = "  LATERAL CEPH "  # LO: leading and trailing spaces are padding
    ds.ImageComments = "   1. pre-op\n   2. retake  "  # LT: leading spaces are text (PS3.5 6.2), trailing padding
    ds.SeriesDescription = "   "  # only blanks: nothing to keep
    buffer = io.BytesIO()
    ds.save_as(buffer)
    image = decode_image(buffer.getvalue())
    assert image.descriptors == {
        "StudyDescription": "LATERAL CEPH",
        "ImageComments": "   1. pre-op\n   2. retake",
        "SpecificCharacterSet": "ISO_IR 100",
    }
    stored = pydicom.dcmread(io.BytesIO(with_descriptors(image).source_bytes_deidentified))
    assert stored.ImageComments == "   1. pre-op\n   2. retake" and "SeriesDescription" not in stored


@pytest.mark.parametrize(
    ("charset", "text"),
    [
        ("ISO_IR 192", "頭部X線規格写真 側面"),  # UTF-8
        (["", "ISO 2022 IR 87"], "頭部X線規格写真"),  # JIS X 0208 by code extension
        ("ISO_IR 100", "Fernröntgen seitlich"),  # Latin-1
        ("ISO_IR 100", ["Ceph", "lateral"]),  # two values: stored as two, not as the text of a list
    ],
    ids=["utf-8", "iso-2022-jis", "latin-1", "multi-valued"],
)
def test_descriptors_are_stored_as_their_source_encoded_them(charset: str | list[str], text: str | list[str]) -> None:
    ds = pydicom.dcmread(get_testdata_file("RG1_UNCR.dcm"))
    ds.SpecificCharacterSet = charset
    ds.StudyDescription = text
    buffer = io.BytesIO()
    ds.save_as(buffer)
    kept = with_descriptors(decode_image(buffer.getvalue())).source_bytes_deidentified
    stored = pydicom.dcmread(io.BytesIO(kept))
    assert stored.StudyDescription == text and stored.SpecificCharacterSet == charset
    raw = [pydicom.dcmread(io.BytesIO(data)).get_item("StudyDescription").value for data in (kept, buffer.getvalue())]
    assert raw[0] == raw[1]  # byte for byte


def test_a_charset_pydicom_does_not_know_is_not_stored() -> None:
    ds = pydicom.dcmread(get_testdata_file("RG1_UNCR.dcm"))
    ds.SpecificCharacterSet = "DOE^JOHN"
    buffer = io.BytesIO()
    ds.save_as(buffer)
    image = decode_image(buffer.getvalue())
    assert "SpecificCharacterSet" not in image.descriptors
    assert b"DOE^JOHN" not in with_descriptors(image).source_bytes_deidentified


def test_only_a_clinic_that_keeps_them_stores_them(api: Api) -> None:
    system = api.headers(api.system_key)
    made = api.client.post("/v1/clinics", json={"name": "Keeps", "keep_descriptors": True}, headers=system)
    assert made.status_code == 201 and made.json()["clinic"]["keep_descriptors"] is True
    keeper = made.json()["admin_key"]["key"]
    _, other = api.clinic()
    data = _described_dicom()
    for key, expected in ((keeper, DESCRIBED["StudyDescription"]), (other, None)):
        r = api.client.post("/v1/studies", files={"file": ("x.dcm", data)}, headers=api.headers(key))
        assert r.status_code == 201, r.text
        assert r.json()["deid_method"] == (METHOD_DESCRIPTORS_KEPT if expected else METHOD)
        assert _stored(api, r.json()["id"]).get("StudyDescription") == expected


@pytest.mark.parametrize("keep", [True, False])
def test_a_clinic_admin_or_the_system_key_changes_the_setting(api: Api, keep: bool) -> None:
    clinic, admin = api.clinic()
    annotator = api.key(clinic, admin, "annotator")
    _, stranger = api.clinic("Elsewhere")
    url, body = f"/v1/clinics/{clinic}", {"keep_descriptors": keep}
    assert api.client.patch(url, json=body, headers=api.headers(annotator)).status_code == 403
    assert api.client.patch(url, json=body, headers=api.headers(stranger)).status_code == 404
    bad = api.client.patch(url, json={"keep_descriptor": keep}, headers=api.headers(admin))
    assert bad.status_code == 422 and "keep_descriptor" in bad.text
    for key in (admin, api.system_key):
        r = api.client.patch(url, json=body, headers=api.headers(key))
        assert r.status_code == 200 and r.json()["keep_descriptors"] is keep
    data = _described_dicom()
    study = api.client.post("/v1/studies", files={"file": ("x.dcm", data)}, headers=api.headers(admin)).json()
    assert _stored(api, study["id"]).get("StudyDescription") == (DESCRIBED["StudyDescription"] if keep else None)
