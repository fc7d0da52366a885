"""The imaging tests' fixtures: the real DICOM files of pydicom-data and deid-data, read and decoded once per
module."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from server.imaging import DecodedImage, decode_image

from .cases import DEID_DATA, PYDICOM_DATA


@pytest.fixture(scope="module")
def read_bytes() -> Callable[[str], bytes]:
    """Bytes of a pydicom-data file, or of a deid-data file when the name starts with "deid:"; cached."""
    cache: dict[str, bytes] = {}

    def read(name: str) -> bytes:
        if name not in cache:
            path = DEID_DATA / name.removeprefix("deid:") if name.startswith("deid:") else PYDICOM_DATA / name
            cache[name] = path.read_bytes()
        return cache[name]

    return read


@pytest.fixture(scope="module")
def decoded(read_bytes: Callable[[str], bytes]) -> Callable[[str], DecodedImage]:
    """``decode_image`` of a named real file, cached for the module (the CR files are several MB)."""
    cache: dict[str, DecodedImage] = {}

    def decode(name: str) -> DecodedImage:
        if name not in cache:
            cache[name] = decode_image(read_bytes(name), filename=name)
        return cache[name]

    return decode
