"""DICOMweb tests' fixtures: the API served by a real uvicorn (server.conftest.serve), reached with the real
client library dicomweb-client, and the real DICOM files of pydicom-data and deid-data."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from ..conftest import Api, serve

dicomweb_client = pytest.importorskip("dicomweb_client", reason="dicomweb-client (the dev extra) is the client")
data_store = pytest.importorskip("data_store", reason="pydicom-data (the dev extra) holds the DICOM test files")
deid_data = pytest.importorskip("deid_data", reason="deid-data (the dev extra) holds the DX test file")

DEID_DATA = Path(deid_data.__file__).parent / "data"


def real_file(name: str) -> Path:
    """A pydicom-data file, or a deid-data one where the name starts with "deid:"."""
    if name.startswith("deid:"):
        return DEID_DATA / name.removeprefix("deid:")
    found = get_testdata_file(name)  # pydicom's own test files, then pydicom-data's
    assert found, name
    return Path(str(found))


def real_dataset(name: str) -> Dataset:
    return pydicom.dcmread(real_file(name))


def to_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def multipart(parts: list[bytes], boundary: str = "kamp-test-boundary") -> tuple[bytes, str]:
    """(a STOW-RS body of these parts, its Content-Type), written by hand for the tests that send broken parts."""
    body = b"".join(
        b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + p + b"\r\n" for p in parts
    )
    return (
        body + b"--" + boundary.encode() + b"--\r\n",
        f'multipart/related; type="application/dicom"; boundary={boundary}',
    )


@dataclass
class Dicomweb:
    """A served API with one clinic: its admin key, and clients for its DICOMweb roots."""

    api: Api
    port: int
    clinic_id: str
    admin: str

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, key: str | None = None, root: str = "/dicomweb") -> dicomweb_client.DICOMwebClient:
        headers = {"Authorization": f"Bearer {key or self.admin}"}
        return dicomweb_client.DICOMwebClient(url=f"{self.base}{root}", headers=headers)


@pytest.fixture
def dw(api: Api) -> Iterator[Dicomweb]:
    clinic_id, admin = api.clinic()
    with serve(api.client.app) as port:
        yield Dicomweb(api, port, clinic_id, admin)
