"""WADO-RS frames (PS3.18 8.3.5.1, 8.7.3), web-free: a frame list's numbers, the media type an Accept header allows
for the stored transfer syntax, and each frame's bytes cut from the stored, de-identified file.

Nothing is transcoded: a native (uncompressed) frame is its Pixel Data bytes, little endian; an encapsulated one is
its compressed bytes (the fragments of the frame joined), typed by its transfer syntax."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import get_frame
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian

from ..db.entities import DicomInstance
from ..problems import Problem
from ..storage import BlobStore
from .multipart import media_type
from .service import transfer_syntax

OCTET = "application/octet-stream"
#: PS3.18 8.7.3's table of pixel data media types: a compressed frame's by its transfer syntax; others are octet-stream.
COMPRESSED_TYPES = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
}
#: Names clients also send for the same media (dicomweb-client's x- forms; j2c for a bare JPEG 2000 codestream).
_ALIASES = {"image/x-jls": "image/jls", "image/x-dicom-rle": "image/dicom-rle", "image/j2c": "image/jp2"}
_FRAME_NUMBER = re.compile(r"[0-9]{1,10}")
#: The most numbers one request may list (the service holds single-frame instances; this bounds the work).
MAX_FRAMES = 1000


@dataclass(frozen=True)
class Served:
    """How the frames are answered: each part's media type and the transfer syntax its bytes are in."""

    kind: str
    syntax: str

    @property
    def content_type(self) -> str:
        return f"{self.kind}; transfer-syntax={self.syntax}"


def frame_numbers(text: str) -> list[int]:
    """The 1-based numbers of a `{frames}` path segment ("1" or "1,3,2"), in order; 400 where it is no such list,
    lists more than MAX_FRAMES, or names a frame twice (each answered part is a copy of the frame)."""
    items = text.split(",")  # the request line bounds its length (uvicorn refuses long ones)
    if not all(_FRAME_NUMBER.fullmatch(i.strip()) for i in items):
        raise Problem(400, f"{text[:40]!r} is not a comma-separated list of frame numbers", slug="bad-frames")
    numbers = [int(i) for i in items]
    if len(numbers) > MAX_FRAMES or len(set(numbers)) != len(numbers):
        raise Problem(400, f"the frame list must name each frame once, at most {MAX_FRAMES}", slug="bad-frames")
    return numbers


def as_stored(syntax: str) -> Served:
    """A native syntax's frames are raw little-endian bytes (big endian is swapped: PS3.18 answers uncompressed
    bulk data as Explicit VR Little Endian); an encapsulated one's are its compressed bytes."""
    if not UID(syntax).is_encapsulated:
        return Served(OCTET, ExplicitVRLittleEndian)
    return Served(COMPRESSED_TYPES.get(syntax, OCTET), syntax)


def served(accept: str, syntax: str) -> Served:
    """The first Accept item the stored frames satisfy without transcoding; else 406. `multipart/related` with
    `type` (default application/octet-stream) and `transfer-syntax` (default: the type's own, e.g. Explicit VR Little
    Endian for octet-stream; `*`: as stored); `*/*` and `multipart/*` take the frames as stored."""
    stored = as_stored(syntax)
    for item in (accept or "*/*").split(","):
        kind, params = media_type(item)
        if kind in ("*/*", "multipart/*"):
            return stored
        if kind != "multipart/related":
            continue
        wanted = params.get("type", OCTET).lower()
        wanted, ts = _ALIASES.get(wanted, wanted), params.get("transfer-syntax")
        if wanted in ("*/*", stored.kind) and ts in (None, "*", stored.syntax):
            return stored
        if wanted == OCTET and ts in ("*", stored.syntax):  # compressed bytes, typed as octets by request
            return Served(OCTET, stored.syntax)
    also = "" if stored.kind == OCTET else f'type="{stored.kind}" or '
    raise Problem(
        406,
        f"the frames are kept as stored ({stored.kind}, transfer syntax {stored.syntax}) and not transcoded; "
        f'accept multipart/related; {also}type="application/octet-stream"; transfer-syntax=*',
        slug="not-acceptable",
    )


def frame_parts(blobs: BlobStore, row: DicomInstance, accept: str, numbers: list[int]) -> tuple[str, list[bytes]]:
    """(the parts' media type with its transfer syntax, each numbered frame's bytes) of a stored instance. An SR, or
    a number outside 1..NumberOfFrames: 404; an Accept the stored syntax cannot satisfy: 406."""
    if row.kind != "image":
        raise Problem(404, "this instance is a structured report: it has no pixel data, so no frames", slug="not-found")
    answer = served(accept, transfer_syntax(row))
    ds = pydicom.dcmread(io.BytesIO(blobs.get(row.blob)))
    count = int(ds.get("NumberOfFrames") or 1)
    missing = [n for n in numbers if not 1 <= n <= count]
    if missing:
        held = "one frame" if count == 1 else f"frames 1 to {count}"
        raise Problem(404, f"frame {missing[0]} does not exist: this instance holds {held}", slug="not-found")
    return answer.content_type, [frame_bytes(ds, n - 1, count) for n in numbers]


def frame_bytes(ds: Dataset, index: int, count: int) -> bytes:
    """Frame `index` (0-based) of `count` in the dataset's Pixel Data, as its transfer syntax holds it."""
    syntax = UID(str(ds.file_meta.TransferSyntaxUID))
    if syntax.is_encapsulated:
        offsets = None
        if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
            offsets = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
        return get_frame(ds.PixelData, index, number_of_frames=count, extended_offsets=offsets)
    return _native_frame(ds, index, big_endian=syntax == ExplicitVRBigEndian)


def _native_frame(ds: Dataset, index: int, *, big_endian: bool) -> bytes:
    """Rows x Columns x SamplesPerPixel values of BitsAllocated bits, without the element's padding byte."""
    pixels = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel") or 1)
    bits = int(ds.BitsAllocated)
    data: bytes = ds.PixelData
    if bits == 1:  # bit-packed: a frame after the first need not start on a byte
        start = index * pixels
        if start % 8 == 0:
            return data[start // 8 : (start + pixels + 7) // 8]
        unpacked = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")[start : start + pixels]
        return np.packbits(unpacked, bitorder="little").tobytes()
    size = pixels * bits // 8
    frame = data[index * size : (index + 1) * size]
    if big_endian and bits > 8:
        return np.frombuffer(frame, np.dtype(f"u{bits // 8}")).byteswap().tobytes()
    return frame
