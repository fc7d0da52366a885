"""STOW-RS, QIDO-RS and WADO-RS through the real dicomweb-client against a served API, on real DICOM files of
pydicom-data and deid-data, on both databases."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
import requests
from PIL import Image
from pydicom.dataset import Dataset
from requests import HTTPError

from .conftest import Dicomweb, multipart, real_dataset, to_bytes

#: One file of each kind the service stores: CT, MR, NM in JPEG 2000, a DX of deid-data, an ultrasound.
SINGLES = ["CT_small.dcm", "JPEG2000.dcm", "deid:animals/cat.dcm", "deid:ultrasounds/GREYSCALE_IMAGE.dcm"]
OHIF_QUERY = "limit=25&offset=0&fuzzymatching=true&includefield=00081030,00080060"


def _second_slice(ds: Dataset) -> Dataset:
    """Another instance of `ds`'s study and series: other pixels and SOP Instance UID, the same study."""
    other = pydicom.dcmread(io.BytesIO(to_bytes(ds)))
    if other.file_meta.TransferSyntaxUID.is_compressed:
        other.decompress()
    pixels = other.pixel_array.copy()
    pixels[: pixels.shape[0] // 2] = pixels.min()  # half the image blacked out
    other.PixelData = pixels.tobytes()
    other.SOPInstanceUID = pydicom.uid.generate_uid()
    return other


def _stored_uids(answer: Dataset) -> list[str]:
    return [item.ReferencedSOPInstanceUID for item in answer.ReferencedSOPSequence]


def _values(result: dict, tag: str) -> list:
    return result.get(tag, {}).get("Value", [])


def test_store_real_files_then_find_them_with_the_ohif_query(dw: Dicomweb) -> None:
    client = dw.client()
    originals = {}
    for name in SINGLES:
        ds = real_dataset(name)
        answer = client.store_instances([ds])
        [uid] = _stored_uids(answer)
        assert uid != ds.SOPInstanceUID and uid.startswith("2.25.")  # de-identified: new UIDs answered
        originals[uid] = ds
    ct = real_dataset("deid:humans/ctbrain1.dcm")
    multi = client.store_instances([ct, _second_slice(ct), real_dataset("MR_small.dcm")])
    assert len(_stored_uids(multi)) == 3 and "FailedSOPSequence" not in multi

    r = requests.get(f"{dw.base}/dicomweb/studies?{OHIF_QUERY}", headers={"Authorization": f"Bearer {dw.admin}"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/dicom+json"
    studies = r.json()
    # Four single studies, the two-slice CT study and the MR study of the multi-instance request.
    assert len(studies) == 6
    for study in studies:
        assert "00081030" in study and "00080060" in study  # included, though de-identification emptied one
        assert _values(study, "00100010") == []  # PatientName: gone
        assert _values(study, "0020000D")[0].startswith("2.25.")
    by_count = sorted(_values(s, "00201208")[0] for s in studies)
    assert by_count == [1, 1, 1, 1, 1, 2]  # both CT slices met again in one study, keyed UIDs
    assert sorted(m for s in studies for m in _values(s, "00080061")) == ["CT", "CT", "DX", "MR", "NM", "US"]
    uids = [_values(s, "0020000D")[0] for s in studies]
    assert [_values(s, "0020000D")[0] for s in client.search_for_studies(limit=2, offset=4)] == uids[4:]
    [mr] = client.search_for_studies(search_filters={"ModalitiesInStudy": "MR"})
    assert [_values(mr, "0020000D")] == [_values(s, "0020000D") for s in studies if _values(s, "00080061") == ["MR"]]

    [two] = [uid for s, uid in zip(studies, uids, strict=True) if _values(s, "00201208") == [2]]
    slices = client.retrieve_study(two)  # a streamed answer of two parts
    assert len(slices) == 2 and {i.SOPInstanceUID for i in slices} <= set(_stored_uids(multi))
    assert {i.StudyInstanceUID for i in slices} == {two} and slices[0].SOPInstanceUID != slices[1].SOPInstanceUID


def test_retrieve_instance_metadata_and_rendered_image(dw: Dicomweb) -> None:
    client = dw.client()
    original = real_dataset("CT_small.dcm")
    [sop] = _stored_uids(client.store_instances([original]))
    [row] = client.search_for_instances(search_filters={"SOPInstanceUID": sop})
    study, series = _values(row, "0020000D")[0], _values(row, "0020000E")[0]

    stored = client.retrieve_instance(study, series, sop)
    assert stored.SOPInstanceUID == sop and stored.StudyInstanceUID == study
    assert stored.PatientName == "" and stored.PatientID not in ("", original.PatientID)
    assert "InstitutionName" not in stored and stored.PatientIdentityRemoved == "YES"
    assert np.array_equal(stored.pixel_array, original.pixel_array)

    meta = client.retrieve_instance_metadata(study, series, sop)
    assert "7FE00010" not in meta and _values(meta, "00080018") == [sop]
    assert _values(meta, "00100010") == [] and str(original.PatientName) not in str(meta)

    auth = {"Authorization": f"Bearer {dw.admin}"}
    url = f"{dw.base}/dicomweb/studies/{study}/series/{series}/instances/{sop}"
    for accept, fmt in (("image/png", "PNG"), ("image/jpeg", "JPEG"), ("*/*", "JPEG")):
        r = requests.get(f"{url}/frames/1/rendered", headers={**auth, "Accept": accept})
        assert r.status_code == 200 and r.headers["content-type"] == ("image/png" if fmt == "PNG" else "image/jpeg")
        with Image.open(io.BytesIO(r.content)) as image:
            assert image.format == fmt and image.size == (original.Columns, original.Rows)
    assert requests.get(f"{url}/rendered", headers={**auth, "Accept": "image/gif"}).status_code == 406
    assert requests.get(f"{url}/frames/2/rendered", headers=auth).status_code == 404
    r = requests.get(
        url, headers={**auth, "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=1.2.3'}
    )
    assert r.status_code == 406 and r.headers["content-type"] == "application/problem+json"


def test_another_clinics_key_finds_nothing(dw: Dicomweb) -> None:
    [sop] = _stored_uids(dw.client().store_instances([real_dataset("MR_small.dcm")]))
    [row] = dw.client().search_for_instances()
    study, series = _values(row, "0020000D")[0], _values(row, "0020000E")[0]
    _, other_admin = dw.api.clinic("Lakeside")
    other = dw.client(other_admin)
    assert other.search_for_studies() == [] and other.search_for_instances() == []
    assert other.search_for_series(study) == []
    with pytest.raises(HTTPError) as info:
        other.retrieve_instance(study, series, sop)
    assert info.value.response.status_code == 404
    with pytest.raises(HTTPError) as info:
        other.retrieve_instance_metadata(study, series, sop)
    assert info.value.response.status_code == 404


def test_a_broken_instance_fails_alone_with_its_reason(dw: Dicomweb) -> None:
    good = to_bytes(real_dataset("CT_small.dcm"))
    truncated = to_bytes(real_dataset("MR_small.dcm"))[:-2000]
    body, content_type = multipart([good, truncated, b"not a DICOM file at all"])
    r = requests.post(
        f"{dw.base}/dicomweb/studies",
        data=body,
        headers={"Authorization": f"Bearer {dw.admin}", "Content-Type": content_type},
    )
    assert r.status_code == 202, r.text
    answer = Dataset.from_json(r.json())
    assert len(answer.ReferencedSOPSequence) == 1
    failed = answer.FailedSOPSequence
    assert [item.FailureReason for item in failed] == [0xC000, 0xC000]
    assert failed[0].ReferencedSOPInstanceUID == real_dataset("MR_small.dcm").SOPInstanceUID  # as it was sent
    assert "incomplete DICOM file" in failed[0].TextValue and "not a DICOM" in failed[1].TextValue
    studies = dw.client().search_for_studies()
    assert len(studies) == 1  # the broken ones left nothing behind
    listed = dw.api.client.get("/v1/studies", headers=dw.api.headers(dw.admin)).json()
    assert len(listed) == 1

    body, content_type = multipart([truncated])
    r = requests.post(
        f"{dw.base}/dicomweb/studies",
        data=body,
        headers={"Authorization": f"Bearer {dw.admin}", "Content-Type": content_type},
    )
    assert r.status_code == 409 and Dataset.from_json(r.json()).FailedSOPSequence[0].FailureReason == 0xC000


def test_the_study_in_the_path_must_be_the_instances(dw: Dicomweb) -> None:
    client = dw.client()
    ct = real_dataset("CT_small.dcm")
    with pytest.raises(HTTPError) as info:
        client.store_instances([ct], study_instance_uid="1.2.3.4")
    assert info.value.response.status_code == 409
    [item] = Dataset.from_json(info.value.response.json()).FailedSOPSequence
    assert item.FailureReason == 0xC409 and "1.2.3.4" in item.TextValue
    answer = client.store_instances([ct], study_instance_uid=ct.StudyInstanceUID)
    assert len(answer.ReferencedSOPSequence) == 1 and "WarningReason" not in answer.ReferencedSOPSequence[0]
    again = client.store_instances([ct])  # the same pixels: the stored instance, with a warning
    assert _stored_uids(again) == _stored_uids(answer) and again.ReferencedSOPSequence[0].WarningReason == 0xB000


def test_refusals_are_problems(dw: Dicomweb) -> None:
    url = f"{dw.base}/dicomweb/studies"
    body, content_type = multipart([to_bytes(real_dataset("CT_small.dcm"))])
    auth = {"Authorization": f"Bearer {dw.admin}"}
    r = requests.post(url, data=body, headers={**auth, "Content-Type": "multipart/related; boundary=x"})
    assert r.status_code == 415 and r.json()["type"] == "/problems/unsupported-media-type"
    r = requests.post(url, data=b"--x\r\nbroken", headers={**auth, "Content-Type": content_type})
    assert r.status_code == 400 and r.json()["type"] == "/problems/bad-multipart"
    predict = dw.api.key(dw.clinic_id, dw.admin, "predict")
    r = requests.post(url, data=body, headers={"Authorization": f"Bearer {predict}", "Content-Type": content_type})
    assert r.status_code == 403 and r.headers["content-type"] == "application/problem+json"
    assert requests.post(url, data=body, headers={"Content-Type": content_type}).status_code == 401
    assert requests.get(f"{url}?StudyDate=2020", headers=auth).json()["type"] == "/problems/bad-query"
    many, many_type = multipart([b""] * (dw.api.settings.max_stow_instances + 1))  # tiny body, many answer items
    r = requests.post(url, data=many, headers={**auth, "Content-Type": many_type})
    assert r.status_code == 413 and r.json()["type"] == "/problems/too-many-instances", r.text
    assert dw.client().search_for_studies() == []  # nothing of the refused requests was stored


def test_qido_matching_keys_and_levels(dw: Dicomweb) -> None:
    client = dw.client()
    ct, mr = real_dataset("CT_small.dcm"), real_dataset("MR_small.dcm")
    client.store_instances([ct, _second_slice(ct), mr])
    [ct_study] = client.search_for_studies(search_filters={"ModalitiesInStudy": "CT"})
    study_uid, pseudonym = _values(ct_study, "0020000D")[0], _values(ct_study, "00100020")[0]
    assert client.search_for_studies(search_filters={"PatientID": pseudonym}) == [ct_study]
    assert client.search_for_studies(search_filters={"PatientID": pseudonym[:6] + "*"}) == [ct_study]
    assert client.search_for_studies(search_filters={"PatientID": ct.PatientID}) == []  # the original is not kept
    assert client.search_for_studies(search_filters={"StudyInstanceUID": ct.StudyInstanceUID}) == []
    # De-identification removes every date, so a date query matches no stored instance (documented).
    assert client.search_for_studies(search_filters={"StudyDate": "19000101-"}) == []
    [series] = client.search_for_series(study_uid)
    assert _values(series, "00201209") == [2] and _values(series, "00080060") == ["CT"]
    instances = client.search_for_instances(study_uid, _values(series, "0020000E")[0], fields=["all"])
    assert len(instances) == 2 and all(_values(i, "00280010") == [ct.Rows] for i in instances)
    page = client.search_for_instances(study_uid, limit=1, offset=1)
    assert [_values(i, "00080018") for i in page] == [_values(instances[1], "00080018")]
    r = requests.get(
        f"{dw.base}/dicomweb/studies?PatientName=Smith&limit=5000", headers={"Authorization": f"Bearer {dw.admin}"}
    )
    assert r.status_code == 200 and "PatientName" in r.headers["warning"] and "limit 5000" in r.headers["warning"]
