"""QIDO-RS answers from the index (server.db.entities.DicomInstance): the matching and paging in SQL, then each
result built from its instances' stored attributes.

A study or series has no row of its own: it is the group of its instances' rows. Its attributes come from its
first image instance (the SR the service adds copies the patient and study attributes of its image)."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from ..db.entities import DicomInstance
from . import qido
from .dicom_json import DicomJson, empty, tag_hex, tag_of, value

_STUDY = [
    "SpecificCharacterSet",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ReferringPhysicianName",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyID",
    "StudyDescription",
]
_SERIES = [
    "SpecificCharacterSet",
    "Modality",
    "SeriesDescription",
    "SeriesInstanceUID",
    "SeriesNumber",
    "StudyInstanceUID",
]
_INSTANCE = [
    "SpecificCharacterSet",
    "SOPClassUID",
    "SOPInstanceUID",
    "InstanceNumber",
    "Rows",
    "Columns",
    "BitsAllocated",
    "NumberOfFrames",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "Modality",
    "AvailableTransferSyntaxUID",
]
DEFAULT_FIELDS = {"study": _STUDY, "series": _SERIES, "instance": _INSTANCE}


def conditions(clinic_id: uuid.UUID, query: qido.Query) -> list[ColumnElement[bool]]:
    """The WHERE clause of the query's matching keys (see qido.MATCHED), always within the clinic."""
    row = DicomInstance
    where: list[ColumnElement[bool]] = [row.clinic_id == clinic_id]
    uid_columns = {
        "StudyInstanceUID": row.study_instance_uid,
        "SeriesInstanceUID": row.series_instance_uid,
        "SOPInstanceUID": row.sop_instance_uid,
        "SOPClassUID": row.sop_class_uid,
    }
    for keyword, raw in query.matches.items():
        if keyword in uid_columns:
            where.append(uid_columns[keyword].in_(qido.uid_list(raw)))
        elif keyword == "PatientID":
            where.append(row.patient_id.like(qido.like_pattern(raw), escape="\\"))
        elif keyword == "StudyDate":
            low, high = qido.date_range(raw)
            where.append(row.study_date.is_not(None))
            where += [row.study_date >= low] if low else []
            where += [row.study_date <= high] if high else []
        elif keyword == "Modality":
            where.append(row.modality.in_(qido.modality_list(raw)))
        elif keyword == "ModalitiesInStudy":
            having = select(row.study_instance_uid).where(row.clinic_id == clinic_id)
            where.append(row.study_instance_uid.in_(having.where(row.modality.in_(qido.modality_list(raw)))))
    return where


def _page(statement: Select[Any], query: qido.Query) -> Select[Any]:
    return statement.limit(query.limit).offset(query.offset)


def studies(session: Session, clinic_id: uuid.UUID, query: qido.Query, base: str) -> list[DicomJson]:
    """Study-level results, oldest study first."""
    groups = _page_of_groups(session, clinic_id, query, DicomInstance.study_instance_uid)
    return [_study_json(rows, query, base) for rows in groups]


def series(session: Session, clinic_id: uuid.UUID, query: qido.Query, base: str) -> list[DicomJson]:
    """Series-level results (of the study the query names), oldest series first."""
    groups = _page_of_groups(session, clinic_id, query, DicomInstance.series_instance_uid)
    return [_series_json(rows, query, base) for rows in groups]


def _page_of_groups(
    session: Session, clinic_id: uuid.UUID, query: qido.Query, key: InstrumentedAttribute[str]
) -> list[list[DicomInstance]]:
    """The query's page of the UIDs of `key` (study or series) whose instances match, oldest first, each with
    every instance of it (not only the matching ones: a study's attributes summarise all its instances)."""
    first = func.min(DicomInstance.created_at)
    keys = select(key).where(*conditions(clinic_id, query)).group_by(key).order_by(first, key)
    uids = list(session.scalars(_page(keys, query)))
    groups = _grouped(_rows(session, clinic_id, key.in_(uids)), lambda r: getattr(r, key.key))
    return [groups[uid] for uid in uids]


def instances(session: Session, clinic_id: uuid.UUID, query: qido.Query, base: str) -> list[DicomJson]:
    """Instance-level results, oldest first."""
    statement = select(DicomInstance).where(*conditions(clinic_id, query))
    statement = statement.order_by(DicomInstance.created_at, DicomInstance.sop_instance_uid)
    return [_instance_json(row, query, base) for row in session.scalars(_page(statement, query))]


def _rows(session: Session, clinic_id: uuid.UUID, which: ColumnElement[bool]) -> list[DicomInstance]:
    statement = select(DicomInstance).where(DicomInstance.clinic_id == clinic_id, which)
    return list(session.scalars(statement.order_by(DicomInstance.created_at, DicomInstance.sop_instance_uid)))


def _grouped(rows: Sequence[DicomInstance], key: Any) -> dict[str, list[DicomInstance]]:
    groups: dict[str, list[DicomInstance]] = defaultdict(list)
    for row in rows:
        groups[key(row)].append(row)
    return groups


def _representative(rows: Sequence[DicomInstance]) -> DicomInstance:
    return next((r for r in rows if r.kind == "image"), rows[0])


def _study_json(rows: list[DicomInstance], query: qido.Query, base: str) -> DicomJson:
    rep = _representative(rows)
    out = _fields(rep.attributes, DEFAULT_FIELDS["study"], query)
    out[tag_hex(0x00080061)] = value("CS", sorted({r.modality for r in rows if r.modality}))  # ModalitiesInStudy
    out[tag_hex(0x00201206)] = value("IS", [len({r.series_instance_uid for r in rows})])
    out[tag_hex(0x00201208)] = value("IS", [len(rows)])
    out[tag_hex(0x00081190)] = value("UR", [f"{base}/studies/{rep.study_instance_uid}"])
    return out


def _series_json(rows: list[DicomInstance], query: qido.Query, base: str) -> DicomJson:
    rep = _representative(rows)
    out = _fields(rep.attributes, DEFAULT_FIELDS["series"], query)
    out[tag_hex(0x00201209)] = value("IS", [len(rows)])
    url = f"{base}/studies/{rep.study_instance_uid}/series/{rep.series_instance_uid}"
    out[tag_hex(0x00081190)] = value("UR", [url])
    return out


def _instance_json(row: DicomInstance, query: qido.Query, base: str) -> DicomJson:
    out = _fields(row.attributes, DEFAULT_FIELDS["instance"], query)
    url = f"{base}/studies/{row.study_instance_uid}/series/{row.series_instance_uid}/instances/{row.sop_instance_uid}"
    out[tag_hex(0x00081190)] = value("UR", [url])
    return out


def _fields(attributes: DicomJson, defaults: list[str], query: qido.Query) -> DicomJson:
    """The level's default attributes and those the query includes (every stored one for includefield=all); a
    requested attribute the instance lacks is answered empty, as PS3.18 asks. SpecificCharacterSet only if held."""
    out: DicomJson = dict(attributes) if query.include_all else {}
    for tag in [tag_of(k) for k in defaults] + query.include:
        key = tag_hex(tag)
        if key in attributes:
            out[key] = attributes[key]
        elif tag != 0x00080005:
            out.setdefault(key, empty(tag))
    return dict(sorted(out.items()))
