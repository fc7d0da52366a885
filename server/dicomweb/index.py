"""The DICOM index: one row per DICOM instance the service holds (server.db.entities.DicomInstance), made from the
stored, de-identified dataset, so that QIDO-RS matches and answers from the database alone."""

from __future__ import annotations

import io
import re
import uuid

import pydicom
from pydicom.dataset import Dataset
from sqlalchemy import select
from sqlalchemy.orm import Session

from ..db.entities import DicomInstance, Study
from ..imaging import DecodedImage
from ..storage import BlobStore
from .dicom_json import index_attributes, tag_hex

_DATE = re.compile(r"^\d{8}$")
#: (0008,3002) Available Transfer Syntax UID: the stored file's, answered at the instance level.
AVAILABLE_TRANSFER_SYNTAX = 0x00083002


def _text(ds: Dataset, keyword: str, length: int) -> str | None:
    raw = str(ds.get(keyword, "") or "").strip()
    return raw[:length] or None


def instance_row(
    ds: Dataset,
    *,
    clinic_id: uuid.UUID,
    study_id: uuid.UUID,
    kind: str,
    blob: str,
    model_version_id: uuid.UUID | None = None,
) -> DicomInstance:
    """The index row of a stored dataset (its file meta gives the transfer syntax)."""
    attributes = index_attributes(ds)
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax:
        attributes[tag_hex(AVAILABLE_TRANSFER_SYNTAX)] = {"vr": "UI", "Value": [str(syntax)]}
    date = _text(ds, "StudyDate", 8)
    return DicomInstance(
        clinic_id=clinic_id,
        study_id=study_id,
        kind=kind,
        study_instance_uid=str(ds.StudyInstanceUID),
        series_instance_uid=str(ds.SeriesInstanceUID),
        sop_instance_uid=str(ds.SOPInstanceUID),
        sop_class_uid=str(ds.SOPClassUID),
        modality=_text(ds, "Modality", 16),
        study_date=date if date and _DATE.match(date) else None,
        patient_id=_text(ds, "PatientID", 64),
        blob=blob,
        model_version_id=model_version_id,
        attributes=attributes,
    )


def add_instance(session: Session, study: Study, image: DecodedImage) -> None:
    """Index a new study's image where it is DICOM (called by ingest, in the study's own transaction, after the
    study row is flushed); other formats are no DICOM instance and stay out of DICOMweb."""
    if image.dicom is not None:
        session.add(
            instance_row(
                image.dicom, clinic_id=study.clinic_id, study_id=study.id, kind="image", blob=study.source_blob
            )
        )


def image_instance(session: Session, study: Study, blobs: BlobStore) -> DicomInstance | None:
    """A DICOM study's index row; one stored before the index existed is indexed now, from its stored file. None
    for a study that is not DICOM."""
    row = session.scalar(select(DicomInstance).where(DicomInstance.study_id == study.id, DicomInstance.kind == "image"))
    if row is not None or study.format != "dicom":
        return row
    ds = pydicom.dcmread(io.BytesIO(blobs.get(study.source_blob)), stop_before_pixels=True)
    row = instance_row(ds, clinic_id=study.clinic_id, study_id=study.id, kind="image", blob=study.source_blob)
    session.add(row)
    session.commit()
    return row
