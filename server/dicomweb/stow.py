"""STOW-RS (PS3.18 10.5): each instance of a request stored as a study exactly as POST /v1/studies stores one (the
same decoding limits and slots, de-identification and dedup by pixel hash), then answered in the Store Instances
Response Module (PS3.18 Annex I).

Each instance succeeds or fails alone: its blobs are content-addressed and its rows committed in one transaction
(server.studies.service.ingest), so a failure leaves at most an unreferenced blob (which the reaper sweeps).
"""

from __future__ import annotations

import io
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import pydicom
from pydicom.dataset import Dataset
from sqlalchemy import select
from sqlalchemy.orm import Session

from ..db.entities import DicomInstance, Study
from ..imaging import DecodedImage, ImageLimits
from ..problems import Problem
from ..storage import BlobStore
from ..studies.service import DecodeSlots, decode_upload, ingest
from . import index, uids
from .dicom_json import DicomJson, tag_hex, value

log = logging.getLogger("kamp.dicomweb")

#: Failure Reason (0008,1197) values (PS3.18 I.2.2); C409 is this service's (the Cxxx range) for a study mismatch.
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000
STUDY_MISMATCH = 0xC409
TRANSFER_SYNTAX_NOT_SUPPORTED = 0xC122
PROCESSING_FAILURE = 0x0110
SOP_CLASS_NOT_SUPPORTED = 0x0122
#: Warning Reason (0008,1196): the same pixels were stored before; the earlier instance is the one answered.
COERCED = 0xB000
_BY_SLUG = {
    "image-too-large": OUT_OF_RESOURCES,
    "busy": OUT_OF_RESOURCES,
    "unsupported-transfer-syntax": TRANSFER_SYNTAX_NOT_SUPPORTED,
    "no-pixel-data": SOP_CLASS_NOT_SUPPORTED,
}


@dataclass(frozen=True)
class StowContext:
    """What every instance of one request is stored with."""

    session: Session
    blobs: BlobStore
    clinic_id: uuid.UUID
    key: bytes
    limits: ImageLimits
    max_instance_bytes: int
    slots: DecodeSlots | None
    #: The study the request's path names (its instances must belong to it), or None.
    study_uid: str | None
    #: Called with each instance stored (e.g. to add its SR); its failures never fail the instance.
    after_store: Callable[[DicomInstance, Study, DecodedImage], None] | None = None


@dataclass
class Outcome:
    """One instance's result: stored (its index row) or failed (the UIDs it was sent with, a reason)."""

    stored: DicomInstance | None = None
    sop_class_uid: str = ""
    sop_instance_uid: str = ""
    failure: int | None = None
    warning: int | None = None
    reason: str = ""


def store_instance(ctx: StowContext, data: bytes | None, size: int) -> Outcome:
    """Store one part's bytes (None where the part is over the size limit and was not read)."""
    if data is None:
        limit = ctx.max_instance_bytes
        return Outcome(failure=OUT_OF_RESOURCES, reason=f"the instance ({size} bytes) is larger than {limit} bytes")
    source = _header(data)
    outcome = Outcome(sop_class_uid=_uid(source, "SOPClassUID"), sop_instance_uid=_uid(source, "SOPInstanceUID"))
    if source is None:
        return _failed(outcome, CANNOT_UNDERSTAND, "the part is not a DICOM dataset")
    sent_study = _uid(source, "StudyInstanceUID")
    if ctx.study_uid is not None and sent_study != ctx.study_uid:
        return _failed(outcome, STUDY_MISMATCH, f"the instance belongs to study {sent_study}, not {ctx.study_uid}")
    try:
        _store(ctx, data, source, outcome)
    except Problem as problem:
        ctx.session.rollback()
        return _failed(outcome, _BY_SLUG.get(problem.slug, CANNOT_UNDERSTAND), problem.detail)
    except Exception as exc:  # one instance's unexpected failure must not fail the others
        ctx.session.rollback()
        log.exception("STOW-RS: storing an instance failed")
        return _failed(outcome, PROCESSING_FAILURE, f"the instance could not be stored: {type(exc).__name__}")
    return outcome


def _store(ctx: StowContext, data: bytes, source: Dataset, outcome: Outcome) -> None:
    image = decode_upload(data, None, ctx.limits, None, None, ctx.slots)
    if image.format != "dicom":
        raise Problem(422, f"the part is a {image.format.upper()} image, not a DICOM instance")
    image = uids.consistent(image, source, ctx.key, ctx.clinic_id, lambda uid: _known(ctx, uid))
    study, created = ingest(ctx.session, ctx.blobs, ctx.clinic_id, image, None, ctx.key)
    row = index.image_instance(ctx.session, study, ctx.blobs)
    if row is None:
        raise Problem(
            409, f"the same pixels are stored already as study {study.id}, a {study.format.upper()} image, not DICOM"
        )
    outcome.stored = row
    outcome.warning = None if created else COERCED
    if ctx.after_store is not None:
        try:
            ctx.after_store(row, study, image)
        except Exception:
            ctx.session.rollback()
            log.exception("STOW-RS: the instance is stored, but its structured report failed")


def _known(ctx: StowContext, uid: str) -> bool:
    """Whether `uid` is a study or series UID the clinic holds already (an instance added to a stored study)."""
    row = DicomInstance
    hit = select(row.id).where(row.clinic_id == ctx.clinic_id)
    hit = hit.where((row.study_instance_uid == uid) | (row.series_instance_uid == uid)).limit(1)
    return ctx.session.scalar(hit) is not None


def _header(data: bytes) -> Dataset | None:
    try:
        return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    except Exception:  # not DICOM, or damaged before its pixels: the part fails with CANNOT_UNDERSTAND
        return None


def _uid(ds: Dataset | None, keyword: str) -> str:
    try:
        return str(ds.get(keyword, "") or "") if ds is not None else ""
    except Exception:  # a damaged value in an otherwise readable header
        return ""


def _failed(outcome: Outcome, code: int, reason: str) -> Outcome:
    outcome.failure, outcome.reason = code, reason
    return outcome


@dataclass
class StoreResponse:
    """The Store Instances Response Module of a request, and its HTTP status (PS3.18 10.5.3)."""

    body: DicomJson = field(default_factory=dict)
    status: int = 200


def response(outcomes: list[Outcome], base: str) -> StoreResponse:
    """200: every instance stored without warning; 202: some stored, with warnings or failures; 409: none stored.
    A failed item carries its reason as text in Text Value (0040,A160) (this service's choice: Annex I has none)."""
    stored = [o for o in outcomes if o.stored is not None]
    failed = [o for o in outcomes if o.stored is None]
    body: DicomJson = {}
    studies = {o.stored.study_instance_uid for o in stored if o.stored is not None}
    if len(studies) == 1:
        body[tag_hex(0x00081190)] = value("UR", [f"{base}/studies/{studies.pop()}"])
    if failed:
        body[tag_hex(0x00081198)] = {"vr": "SQ", "Value": [_failed_item(o) for o in failed]}
    if stored:
        body[tag_hex(0x00081199)] = {"vr": "SQ", "Value": [_stored_item(o, base) for o in stored]}
    if not stored:
        status = 409
    elif failed or any(o.warning is not None for o in stored):
        status = 202
    else:
        status = 200
    return StoreResponse(body, status)


def _failed_item(o: Outcome) -> DicomJson:
    return {
        "00081150": value("UI", [o.sop_class_uid] if o.sop_class_uid else []),
        "00081155": value("UI", [o.sop_instance_uid] if o.sop_instance_uid else []),
        "00081197": value("US", [o.failure]),
        "0040A160": value("UT", [o.reason]),
    }


def _stored_item(o: Outcome, base: str) -> DicomJson:
    row = o.stored
    assert row is not None
    url = f"{base}/studies/{row.study_instance_uid}/series/{row.series_instance_uid}/instances/{row.sop_instance_uid}"
    item = {
        "00081150": value("UI", [row.sop_class_uid]),
        "00081155": value("UI", [row.sop_instance_uid]),
        "00081190": value("UR", [url]),
    }
    if o.warning is not None:
        item["00081196"] = value("US", [o.warning])
    return item
