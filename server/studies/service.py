"""Ingest: decode, de-identify, store the blobs, record the study (once per clinic and pixel hash)."""

from __future__ import annotations

import contextlib
import io
import threading
import uuid
from collections.abc import Iterator

import numpy as np
from PIL import Image
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..db.entities import Clinic, Study
from ..dicomweb import index as dicom_index
from ..imaging import DecodedImage, ImageLimits, ImagingError, decode_image
from ..imaging.descriptors import with_descriptors
from ..problems import Problem, not_found
from ..storage import BlobStore
from . import names


def encode_png16(pixels: np.ndarray) -> bytes:
    """(H, W) uint16 -> 16-bit greyscale PNG bytes (lossless)."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint16)).save(buf, format="PNG")
    return buf.getvalue()


class DecodeSlots:
    """At most `n` uploads decode at once in this process: a decode can take several times its pixels' bytes of
    memory, and the API's thread pool is far larger than what the memory holds. A request waits up to `wait_s`
    for a slot, then answers 503 with Retry-After."""

    def __init__(self, n: int, wait_s: float) -> None:
        self._slots = threading.BoundedSemaphore(n)
        self.wait_s = wait_s

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        if not self._slots.acquire(timeout=self.wait_s):
            raise Problem(503, "every decoding slot is busy; retry shortly", slug="busy", headers={"Retry-After": "5"})
        try:
            yield
        finally:
            self._slots.release()


def decode_upload(
    data: bytes,
    filename: str | None,
    limits: ImageLimits,
    spacing: tuple[float, float] | None,
    at_least: tuple[int, int] | None = None,
    slots: DecodeSlots | None = None,
) -> DecodedImage:
    """`decode_image` within one of `slots` (where given), its refusals as problems (HTTP status and slug from
    the imaging error)."""
    with slots.held() if slots else contextlib.nullcontext():
        try:
            return decode_image(data, filename=filename, limits=limits, spacing_mm=spacing, at_least=at_least)
        except ImagingError as exc:
            raise Problem(exc.http_status, exc.message, slug=exc.code, title="Unusable image") from exc


def ingest(
    session: Session, blobs: BlobStore, clinic_id: uuid.UUID, image: DecodedImage, filename: str | None, key: bytes
) -> tuple[Study, bool]:
    """(the study, whether it is new). Of `filename` only its digest under `key` is kept (server.studies.names);
    a DICOM's descriptions only where the clinic keeps them (``Clinic.keep_descriptors``).
    Blobs are written before the row: content-addressed, so a failed commit leaves at most an unreferenced blob,
    never a row that points at nothing."""
    existing = find_by_hash(session, clinic_id, image.pixel_sha256)
    if existing is not None:
        return existing, False
    clinic = session.get(Clinic, clinic_id)
    if clinic is not None and clinic.keep_descriptors:
        image = with_descriptors(image)
    source = blobs.put(image.source_bytes_deidentified)
    pixels = blobs.put(encode_png16(image.pixels))
    sx, sy = image.spacing_mm if image.spacing_mm else (None, None)
    study = Study(
        clinic_id=clinic_id,
        pixel_sha256=image.pixel_sha256,
        source_blob=source,
        pixels_blob=pixels,
        format=str(image.format),
        width=image.width,
        height=image.height,
        spacing_x_mm=sx,
        spacing_y_mm=sy,
        spacing_source=str(image.spacing_source),
        modality=image.modality,
        deid_method=image.deid_method,
        name_key=names.name_key(filename, key),
    )
    session.add(study)
    try:
        session.flush()  # the study's id, for its DICOM index row
        dicom_index.add_instance(session, study, image)
        session.commit()
    except IntegrityError:  # the same image arrived concurrently: the other request's study is the one
        session.rollback()
        existing = find_by_hash(session, clinic_id, image.pixel_sha256)
        if existing is None:
            raise
        return existing, False
    return study, True


def find_by_hash(session: Session, clinic_id: uuid.UUID, sha: str) -> Study | None:
    return session.scalar(select(Study).where(Study.clinic_id == clinic_id, Study.pixel_sha256 == sha))


def get_study(session: Session, clinic_id: uuid.UUID, study_id: uuid.UUID) -> Study:
    """The clinic's study; another clinic's id answers 404 like a missing one."""
    study = session.get(Study, study_id)
    if study is None or study.clinic_id != clinic_id:
        raise not_found("study")
    return study


def thumbnail(png16: bytes, longest_side: int) -> bytes:
    """A stored 16-bit display PNG -> an 8-bit JPEG whose longest side is at most `longest_side` pixels (for a
    grid of studies; the full image stays at GET .../image). Every further copy is of every `step`-th pixel, at
    least four times the thumbnail's size (the resize still averages over them): a large study's thumbnail holds
    about its decoded pixels twice, not six times."""
    with Image.open(io.BytesIO(png16)) as image:
        width, height = image.size
        grey = np.asarray(image, dtype=np.uint16)
    scale = min(1.0, longest_side / max(width, height))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    step = max(1, max(width, height) // (4 * longest_side))
    small = Image.fromarray((grey[::step, ::step] >> 8).astype(np.uint8))
    del grey
    buf = io.BytesIO()
    small.resize(size, Image.Resampling.BILINEAR).save(buf, format="JPEG", quality=80)
    return buf.getvalue()
