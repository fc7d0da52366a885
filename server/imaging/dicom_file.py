"""Reading DICOM bytes into a dataset: the probe for bare datasets, the deflate limit, and truncation detection.

A file cut short is refused as ``truncated-dicom`` wherever it ends: in the header, inside an element, or in the
pixel data.
"""

from __future__ import annotations

import io
import logging
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian

from server.imaging.errors import ImagingError

_PIXEL_DATA_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def is_bare_dicom_image(data: bytes) -> bool:
    """Whether bytes without the "DICM" prefix still parse as a DICOM dataset that holds an image."""
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        return any(keyword in ds for keyword in _PIXEL_DATA_KEYWORDS) and "Rows" in ds and "Columns" in ds
    except Exception:  # a probe of arbitrary bytes: any failure just means "not DICOM"
        return False


def read_dicom(data: bytes, max_pixels: int, subject: str, *, force: bool) -> Dataset:
    """Parse the bytes; a file cut short anywhere (header or pixel data) is refused as truncated."""
    _check_deflated_size(data, max_pixels, subject)
    source = _ReadTracker(data)
    with _pydicom_warnings() as warnings:
        try:
            ds = pydicom.dcmread(source, force=force)
        except EOFError as exc:
            raise truncated_dicom(subject) from exc
        except Exception as exc:  # pydicom raises many types on damaged bytes; none may leak
            raise invalid_dicom(subject) from exc
    # pydicom converts an element's value on first access: every one is converted here, where any error it
    # raises (an unknown VR's NotImplementedError, an unreadable sequence...) is the file's, not a later step's.
    try:
        # pydicom stops silently when the data ends inside an element's header; a complete file can end with a
        # partial read too (the search for a delimiter), but then it has its pixel data.
        ended_early = any("End of file reached" in message for message in warnings) or _has_short_element(ds)
        truncated = ended_early or (source.partial_read and not has_pixel_data(ds))
        if not truncated:
            for _ in ds.iterall():
                pass
    except Exception as exc:
        raise invalid_dicom(subject) from exc
    if truncated:
        raise truncated_dicom(subject)
    return ds


def has_pixel_data(ds: Dataset) -> bool:
    return any(keyword in ds and ds[keyword].value for keyword in _PIXEL_DATA_KEYWORDS)


def invalid_dicom(subject: str) -> ImagingError:
    return ImagingError(
        "invalid-dicom",
        f"{subject} starts like a DICOM file but its header cannot be read: the file is damaged. "
        "Export the image again from the PACS or modality.",
    )


def truncated_dicom(subject: str) -> ImagingError:
    return ImagingError(
        "truncated-dicom",
        f"{subject} is an incomplete DICOM file: it ends before its data does (the upload or the export was "
        "cut short). Upload the complete file again.",
    )


class _ThreadWarnings(logging.Handler):
    """Collects the pydicom logger's warnings raised by this thread only (other uploads may decode concurrently)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self._thread = threading.get_ident()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self._thread:
            self.messages.append(record.getMessage())


@contextmanager
def _pydicom_warnings() -> Iterator[list[str]]:
    handler = _ThreadWarnings()
    logger = logging.getLogger("pydicom")
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)


class _ReadTracker(io.BytesIO):
    """Bytes that remember whether a read returned some, but not all, of the bytes asked for."""

    partial_read = False

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        if size is not None and 0 < len(chunk) < size:
            self.partial_read = True
        return chunk


def _has_short_element(ds: Dataset) -> bool:
    """Whether a top-level element holds fewer bytes than its header declares (the file was cut inside it)."""
    return any(
        isinstance(elem, RawDataElement)
        and elem.length != 0xFFFFFFFF
        and isinstance(elem.value, bytes)
        and len(elem.value) < elem.length
        for elem in ds.elements()
    )


def _check_deflated_size(data: bytes, max_pixels: int, subject: str) -> None:
    """Deflated DICOM is inflated whole before any element is read: refuse one that inflates beyond any image.

    A limit of 8 bytes per pixel (64-bit grey or 16-bit RGBA) plus 16 MiB of header covers every real image.
    """
    meta_end = _file_meta_end(data)
    if meta_end is None or DeflatedExplicitVRLittleEndian.encode() not in data[132:meta_end]:
        return
    limit = 8 * max_pixels + 16 * 2**20
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    inflated, chunk = 0, data[meta_end:]
    try:
        while chunk and inflated <= limit:
            inflated += len(inflater.decompress(chunk, 2**20))
            chunk = inflater.unconsumed_tail
    except zlib.error as exc:
        raise truncated_dicom(subject) from exc
    if inflated > limit:
        raise ImagingError(
            "image-too-large",
            f"{subject} is a deflated DICOM file that expands beyond {limit:,} bytes, more than any image within "
            f"the limit of {max_pixels:,} pixels. Export it uncompressed or with image compression.",
        )


def _file_meta_end(data: bytes) -> int | None:
    """Offset of the dataset after a Part-10 file meta group, from (0002,0000) Group Length; None if absent."""
    if data[128:132] != b"DICM" or data[132:138] != b"\x02\x00\x00\x00UL":
        return None
    return 144 + int.from_bytes(data[140:144], "little")
