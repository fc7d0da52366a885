"""One STOW-RS request, web-free: its media type checked, its spooled body split into parts (the whole structure
first, so a malformed body stores nothing), each part stored alone (server.dicomweb.stow), the answer built."""

from __future__ import annotations

import mmap
import uuid
from dataclasses import dataclass

from sqlalchemy.orm import Session

from ..db.entities import Project
from ..predict.cache import ModelCache
from ..problems import Problem
from ..settings import Settings
from ..storage import BlobStore
from ..studies import names
from ..studies.service import DecodeSlots
from . import stow
from .multipart import MultipartError, Part, TooManyParts, boundary_of, media_type, parts
from .results import Infer, Reporter, wants_reports

DICOM = "application/dicom"


def boundary(content_type: str) -> bytes:
    """The boundary of a STOW-RS body; 415 unless it is multipart/related; type="application/dicom"."""
    kind, params = media_type(content_type)
    if kind != "multipart/related" or params.get("type", "").lower() != DICOM:
        raise Problem(
            415,
            'STOW-RS takes multipart/related; type="application/dicom" (one DICOM file per part); '
            f"this body is {content_type or 'untyped'}",
            slug="unsupported-media-type",
        )
    try:
        return boundary_of(content_type)
    except MultipartError as exc:
        raise Problem(400, str(exc), slug="bad-multipart") from exc


@dataclass(frozen=True)
class StowServices:
    """What the API process lends a STOW request: its settings, stores, decoding slots and models."""

    settings: Settings
    blobs: BlobStore
    slots: DecodeSlots | None
    models: ModelCache
    infer: Infer
    #: The absolute root of the DICOMweb service the request came to, for the answer's Retrieve URLs.
    base: str


def store_all(
    session: Session,
    services: StowServices,
    clinic_id: uuid.UUID,
    project: Project | None,
    body: bytes | mmap.mmap,
    separator: bytes,
    study_uid: str | None,
) -> stow.StoreResponse:
    limit = services.settings.max_stow_instances
    try:
        located = parts(body, separator, limit)
    except TooManyParts as exc:
        raise Problem(
            413, f"{exc}: store at most {limit} instances per request; nothing was stored", slug="too-many-instances"
        ) from exc
    except MultipartError as exc:
        raise Problem(400, f"the multipart body is malformed: {exc}; nothing was stored", slug="bad-multipart") from exc
    if not located:
        raise Problem(400, "the multipart body holds no instance", slug="bad-multipart")
    reporter = None
    if wants_reports(project):
        assert project is not None
        reporter = Reporter(session, services.blobs, project, services.models, services.infer)
    settings = services.settings
    ctx = stow.StowContext(
        session=session,
        blobs=services.blobs,
        clinic_id=clinic_id,
        key=names.pseudonym_key(settings),
        limits=settings.image_limits,
        max_instance_bytes=settings.max_upload_bytes,
        slots=services.slots,
        study_uid=study_uid,
        after_store=reporter,
    )
    outcomes = [_one(ctx, body, part) for part in located]
    return stow.response(outcomes, services.base)


def _one(ctx: stow.StowContext, body: bytes | mmap.mmap, part: Part) -> stow.Outcome:
    """One part stored; a part of another media type fails alone. Only a part within the limit is copied out."""
    kind, _ = media_type(part.content_type or DICOM)
    if kind != DICOM:
        return stow.Outcome(failure=stow.CANNOT_UNDERSTAND, reason=f"the part is {kind}, not {DICOM}")
    data = bytes(body[part.start : part.end]) if part.size <= ctx.max_instance_bytes else None
    return stow.store_instance(ctx, data, part.size)
