"""Results back into DICOM: an instance stored through STOW-RS into a project whose DICOMweb setting
`sr_on_store` is on is predicted with the project's active version, and the landmarks are stored as a DICOM SR
(server.predict.outputs.structured_report) in the same study, where QIDO-RS finds it and WADO-RS returns it.

It runs in the STOW request, after the instance is committed: the prediction jobs of server.predict.jobs predict
uploads into a JSON result, not into instances, and a crash between store and report must not lose the report
silently. A failure here costs the SR, never the stored instance (the caller logs it).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from dataclasses import dataclass

import pydicom
from sqlalchemy import select
from sqlalchemy.orm import Session

from models.predictor import Prediction, Predictor

from ..analyses.service import context as measure_context
from ..db.entities import DicomInstance, ModelVersion, Project, Study, VersionStatus
from ..imaging import DecodedImage
from ..predict.cache import ModelCache
from ..predict.outputs import structured_report
from ..predict.schemas import prediction_out
from ..storage import BlobStore
from .index import instance_row

log = logging.getLogger("kamp.dicomweb")

#: Predicts one decoded image with a predictor (on the API's inference thread, or the calling one).
Infer = Callable[[Predictor, DecodedImage], Prediction]


def wants_reports(project: Project | None) -> bool:
    return project is not None and bool((project.dicomweb or {}).get("sr_on_store"))


@dataclass(frozen=True)
class Reporter:
    """Adds the SR of one stored instance (see the module's docstring)."""

    session: Session
    blobs: BlobStore
    project: Project
    models: ModelCache
    infer: Infer

    def __call__(self, image_row: DicomInstance, study: Study, image: DecodedImage) -> None:
        version = self._active_version()
        if version is None:
            log.info("project %s has no active version: no SR for a stored instance", self.project.id)
            return
        if self._reported(image_row, version):
            return  # the same image again: its SR by this version is there
        predictor = self.models.get(version.id, version.checkpoint_blob, self.blobs)
        result = prediction_out(
            version,
            self.infer(predictor, image),
            spacing_source=image.spacing_source,
            filename=None,
            analyses=measure_context(self.session, version),
        )
        model = f"v{version.number} {version.checkpoint_sha256[:16]}"
        sr = structured_report(self.blobs.get(image_row.blob), result.landmarks, model, result.measurements)
        ds = pydicom.dcmread(io.BytesIO(sr), stop_before_pixels=True)
        blob = self.blobs.put(sr)
        row = instance_row(
            ds, clinic_id=study.clinic_id, study_id=study.id, kind="sr", blob=blob, model_version_id=version.id
        )
        self.session.add(row)
        self.session.commit()

    def _active_version(self) -> ModelVersion | None:
        statement = select(ModelVersion).where(
            ModelVersion.project_id == self.project.id, ModelVersion.status == VersionStatus.active
        )
        return self.session.scalar(statement)

    def _reported(self, image_row: DicomInstance, version: ModelVersion) -> bool:
        statement = select(DicomInstance.id).where(
            DicomInstance.study_id == image_row.study_id,
            DicomInstance.kind == "sr",
            DicomInstance.model_version_id == version.id,
        )
        return self.session.scalar(statement.limit(1)) is not None
