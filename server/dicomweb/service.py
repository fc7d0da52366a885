"""The rules of DICOMweb's reads, web-free: which of the clinic's instances a path names, what a request's Accept
header allows, and the answers of QIDO-RS and WADO-RS (instances, metadata, rendered images)."""

from __future__ import annotations

import functools
import io
import uuid
from collections.abc import Callable

import numpy as np
import pydicom
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session

from ..db.entities import DicomInstance, Study
from ..problems import Problem
from ..storage import BlobStore
from . import qido, search
from .dicom_json import DicomJson, first, metadata
from .index import AVAILABLE_TRANSFER_SYNTAX
from .multipart import media_type

DICOM = "application/dicom"
RENDERED = ("image/jpeg", "image/png")


def find(
    session: Session, clinic_id: uuid.UUID, study: str, series: str | None = None, sop: str | None = None
) -> list[DicomInstance]:
    """The clinic's instances of a study (of one series, or one instance), oldest first; 404 for none (another
    clinic's UIDs answer as missing ones do)."""
    row = DicomInstance
    statement = select(row).where(row.clinic_id == clinic_id, row.study_instance_uid == study)
    statement = statement.where(row.series_instance_uid == series) if series is not None else statement
    statement = statement.where(row.sop_instance_uid == sop) if sop is not None else statement
    rows = list(session.scalars(statement.order_by(row.created_at, row.sop_instance_uid)))
    if not rows:
        what = "instance" if sop is not None else "series" if series is not None else "study"
        raise Problem(404, f"the {what} does not exist", slug="not-found")
    return rows


def query(
    session: Session, clinic_id: uuid.UUID, level: str, params: list[tuple[str, str]], base: str, **path: str
) -> tuple[list[DicomJson], list[str]]:
    """(the results of a QIDO-RS search at `level` within the path's study or series, the warnings to answer)."""
    try:
        parsed = qido.parse(params, level)
        parsed.matches.update(path)  # the path's UIDs are matching keys the parameters cannot widen
        answer = {"study": search.studies, "series": search.series, "instance": search.instances}[level]
        return answer(session, clinic_id, parsed, base), parsed.warnings
    except qido.QueryError as exc:
        raise Problem(400, str(exc), slug="bad-query") from exc


def transfer_syntax(row: DicomInstance) -> str:
    return str(first(row.attributes, AVAILABLE_TRANSFER_SYNTAX) or "1.2.840.10008.1.2.1")


def check_accept_dicom(accept: str, rows: list[DicomInstance]) -> None:
    """406 unless the Accept header allows the instances as stored: `multipart/related; type="application/dicom"`
    with no transfer syntax, `*`, or each stored one (the service does not transcode)."""
    stored = {transfer_syntax(r) for r in rows}
    for item in (accept or "*/*").split(","):
        kind, params = media_type(item)
        if kind in ("*/*", "multipart/*"):
            return
        if kind == "multipart/related" and params.get("type", DICOM).lower() in (DICOM, "*/*"):
            wanted = params.get("transfer-syntax", "*")
            if wanted == "*" or stored <= {wanted}:
                return
    raise Problem(
        406,
        f"the instances are kept as stored, in transfer syntax {', '.join(sorted(stored))}; accept "
        'multipart/related; type="application/dicom"; transfer-syntax=* (or that syntax)',
        slug="not-acceptable",
    )


def instance_parts(blobs: BlobStore, rows: list[DicomInstance]) -> list[tuple[str, Callable[[], bytes]]]:
    """The multipart items of the stored files, each typed with its transfer syntax and read from the blob store
    only when called (server.dicomweb.multipart.stream)."""
    return [(f"{DICOM}; transfer-syntax={transfer_syntax(r)}", functools.partial(blobs.get, r.blob)) for r in rows]


def metadata_of(blobs: BlobStore, rows: list[DicomInstance]) -> list[DicomJson]:
    """Each instance's whole header in the DICOM JSON model, without its pixels (bulk data)."""
    return [metadata(pydicom.dcmread(io.BytesIO(blobs.get(r.blob)), stop_before_pixels=True)) for r in rows]


def no_such_frame(frame: int) -> None:
    raise Problem(404, f"frame {frame} does not exist: each instance here holds one frame", slug="not-found")


def rendered_type(accept: str) -> str:
    """image/jpeg (the default, PS3.18 8.7.4) or image/png, the first the Accept header allows; else 406."""
    for item in (accept or "*/*").split(","):
        kind, _ = media_type(item)
        if kind in RENDERED:
            return kind
        if kind in ("*/*", "image/*"):
            return RENDERED[0]
    raise Problem(406, "a rendered instance is answered as image/jpeg or image/png", slug="not-acceptable")


def rendered(session: Session, blobs: BlobStore, row: DicomInstance, kind: str, quality: int) -> bytes:
    """The instance's display image as 8-bit grey JPEG or PNG (from the study's stored 16-bit display PNG: the
    same windowing as everywhere in the service). An SR has no pixels: 406."""
    study = session.get(Study, row.study_id)
    if row.kind != "image" or study is None:
        raise Problem(406, "this instance is a structured report: it has no rendered image", slug="not-acceptable")
    with Image.open(io.BytesIO(blobs.get(study.pixels_blob))) as png:
        grey = (np.asarray(png, dtype=np.uint16) >> 8).astype(np.uint8)
    buf = io.BytesIO()
    if kind == "image/png":
        Image.fromarray(grey).save(buf, format="PNG")
    else:
        Image.fromarray(grey).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
