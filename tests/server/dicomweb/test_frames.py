"""WADO-RS raw frames through the real dicomweb-client against a served API: the stored file's own pixel bytes
(uncompressed) or compressed frames (JPEG, JPEG 2000) as stored, the Accept rules, and the refusals."""

from __future__ import annotations

import io

import numpy as np
import pytest
import requests
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import get_frame
from requests import HTTPError

from ..api_helpers import CEPH
from .conftest import Dicomweb, real_dataset

EXPLICIT_LE = "1.2.840.10008.1.2.1"
OHIF_ACCEPT = "multipart/related; type=application/octet-stream; transfer-syntax=*"


def _store(dw: Dicomweb, name: str, root: str = "/dicomweb") -> tuple[tuple[str, str, str], Dataset]:
    """Store a real file; ((study, series, sop) of the stored instance, the stored file as WADO-RS answers it)."""
    client = dw.client(root=root)
    [item] = client.store_instances([real_dataset(name)]).ReferencedSOPSequence
    sop = item.ReferencedSOPInstanceUID
    [row] = client.search_for_instances(search_filters={"SOPInstanceUID": sop})
    uids = (row["0020000D"]["Value"][0], row["0020000E"]["Value"][0], sop)
    return uids, client.retrieve_instance(*uids)


def _get(dw: Dicomweb, uids: tuple[str, str, str], frames: str, accept: str | None = None) -> requests.Response:
    headers = {"Authorization": f"Bearer {dw.admin}", **({"Accept": accept} if accept else {})}
    study, series, sop = uids
    url = f"{dw.base}/dicomweb/studies/{study}/series/{series}/instances/{sop}/frames/{frames}"
    return requests.get(url, headers=headers)


def _part_types(r: requests.Response) -> list[str]:
    """Each part's Content-Type, read from the body as written (the client library keeps only the contents)."""
    return [
        line.split(b":", 1)[1].strip().decode()
        for line in r.content.split(b"\r\n")
        if line.startswith(b"Content-Type:")
    ]


def _problem(r: requests.Response, status: int) -> str:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    return str(r.json()["detail"])


def test_an_uncompressed_frame_is_the_stored_pixel_data(dw: Dicomweb) -> None:
    api, headers = dw.api, dw.api.headers(dw.admin)
    pid = api.client.post("/v1/projects", json=CEPH, headers=headers).json()["id"]
    root = f"/dicomweb/projects/{pid}"
    uids, stored = _store(dw, "CT_small.dcm", root)
    assert stored.file_meta.TransferSyntaxUID == EXPLICIT_LE
    for client in (dw.client(), dw.client(root=root)):  # both roots serve the clinic's instances
        [frame] = client.retrieve_instance_frames(*uids, frame_numbers=[1])
        assert frame == stored.PixelData and len(frame) == stored.Rows * stored.Columns * 2
    pixels = np.frombuffer(frame, "<i2" if stored.PixelRepresentation else "<u2").reshape(stored.Rows, stored.Columns)
    assert np.array_equal(pixels, stored.pixel_array)

    r = _get(dw, uids, "1", OHIF_ACCEPT)
    assert r.status_code == 200 and r.headers["content-type"].startswith('multipart/related; type="application/octet')
    assert _part_types(r) == [f"application/octet-stream; transfer-syntax={EXPLICIT_LE}"]
    assert stored.PixelData in r.content
    strict = 'multipart/related; type="application/octet-stream"'  # no transfer syntax: Explicit VR Little Endian
    assert _get(dw, uids, "1", strict).status_code == 200
    _problem(_get(dw, uids, "1", 'multipart/related; type="image/jpeg"'), 406)  # no transcoding


def test_a_big_endian_instance_answers_little_endian_frames(dw: Dicomweb) -> None:
    uids, stored = _store(dw, "MR_small_bigendian.dcm")
    assert stored.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.2"  # kept as sent: Explicit VR Big Endian
    [frame] = dw.client().retrieve_instance_frames(*uids, frame_numbers=[1])
    expected = stored.pixel_array.astype(stored.pixel_array.dtype.newbyteorder("<")).tobytes()
    assert frame == expected and frame != stored.PixelData[: len(frame)]  # swapped, not the stored big-endian bytes


def test_a_jpeg_frame_is_the_stored_fragments(dw: Dicomweb) -> None:
    uids, stored = _store(dw, "SC_rgb_jpeg_dcmtk.dcm")
    syntax = str(stored.file_meta.TransferSyntaxUID)
    assert syntax == "1.2.840.10008.1.2.4.50"
    expected = get_frame(stored.PixelData, 0, number_of_frames=1)
    [frame] = dw.client().retrieve_instance_frames(*uids, frame_numbers=[1])
    [same] = dw.client().retrieve_instance_frames(*uids, frame_numbers=[1], media_types=("image/jpeg",))
    assert frame == same == expected and frame[:2] == b"\xff\xd8"
    with Image.open(io.BytesIO(frame)) as image:
        assert image.format == "JPEG" and image.size == (stored.Columns, stored.Rows)

    r = _get(dw, uids, "1", 'multipart/related; type="image/jpeg"')
    assert r.status_code == 200 and _part_types(r) == [f"image/jpeg; transfer-syntax={syntax}"]
    r = _get(dw, uids, "1", OHIF_ACCEPT)  # as stored, typed as octets as asked
    assert r.status_code == 200 and _part_types(r) == [f"application/octet-stream; transfer-syntax={syntax}"]
    assert expected in r.content
    detail = _problem(_get(dw, uids, "1", 'multipart/related; type="application/octet-stream"'), 406)
    assert syntax in detail and "not transcoded" in detail
    _problem(_get(dw, uids, "1", 'multipart/related; type="image/jpeg"; transfer-syntax=1.2.840.10008.1.2.4.70'), 406)
    _problem(_get(dw, uids, "1", 'multipart/related; type="image/jls"'), 406)


def test_a_jpeg_2000_frame_is_typed_image_jp2(dw: Dicomweb) -> None:
    uids, stored = _store(dw, "JPEG2000.dcm")
    syntax = str(stored.file_meta.TransferSyntaxUID)
    r = _get(dw, uids, "1")
    assert r.status_code == 200 and r.headers["content-type"].startswith('multipart/related; type="image/jp2"')
    assert _part_types(r) == [f"image/jp2; transfer-syntax={syntax}"]
    [frame] = dw.client().retrieve_instance_frames(*uids, frame_numbers=[1], media_types=("image/jp2",))
    assert frame == get_frame(stored.PixelData, 0, number_of_frames=1)
    assert frame[:4] == b"\xff\x4f\xff\x51"  # a JPEG 2000 codestream: SOC then SIZ


def test_frames_that_do_not_exist_and_malformed_lists(dw: Dicomweb) -> None:
    uids, _ = _store(dw, "CT_small.dcm")
    with pytest.raises(HTTPError) as info:
        dw.client().retrieve_instance_frames(*uids, frame_numbers=[2])
    assert info.value.response.status_code == 404
    assert "frame 2 does not exist" in _problem(_get(dw, uids, "1,2"), 404)
    assert "holds one frame" in _problem(_get(dw, uids, "0"), 404)
    for malformed in ("abc", "1,", "1;2", "-1", "1.5", "1,1", "%C2%B2"):
        assert _problem(_get(dw, uids, malformed), 400), malformed
    _, other_admin = dw.api.clinic("Lakeside")
    with pytest.raises(HTTPError) as info:
        dw.client(other_admin).retrieve_instance_frames(*uids, frame_numbers=[1])
    assert info.value.response.status_code == 404
    assert info.value.response.json()["detail"] == "the instance does not exist"
