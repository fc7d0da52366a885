"""A landmark set's annotated studies, read from storage into the library's StepData."""

from __future__ import annotations

import io
import logging

import numpy as np
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session

from models.step_data import StepData
from server.annotations.service import current_annotations
from server.db.entities import LandmarkSet, Split, Study
from server.storage import BlobStore

log = logging.getLogger("kamp.worker")


def read_pixels(blobs: BlobStore, key: str) -> np.ndarray:
    """The study's display image: (H, W) uint16 (the 16-bit PNG written at ingest)."""
    with Image.open(io.BytesIO(blobs.get(key))) as im:
        return np.asarray(im, dtype=np.uint16)


def set_data(session: Session, blobs: BlobStore, landmark_set: LandmarkSet, role: str) -> StepData:
    """The set's studies whose frozen split is `role` ("train" or "val"), each with its current annotation
    of the set's landmarks (NaN where a landmark was not placed). Studies whose image is gone are skipped:
    a clinic may delete old studies, and IKL never needs them again."""
    codes = [lm.code for lm in landmark_set.landmarks]
    roles = {s.study_id: s.role for s in session.scalars(select(Split).where(Split.set_id == landmark_set.id))}
    images, keypoints, spacing, ids = [], [], [], []
    for annotation in current_annotations(session, landmark_set):
        if roles.get(annotation.study_id) != role:
            continue
        study = session.get(Study, annotation.study_id)
        if study is None or not blobs.exists(study.pixels_blob):
            log.warning("study %s of set %s is gone; skipped", annotation.study_id, landmark_set.id)
            continue
        images.append(read_pixels(blobs, study.pixels_blob))
        keypoints.append([annotation.points.get(c, [np.nan, np.nan]) for c in codes])
        spacing.append([study.spacing_x_mm or np.nan, study.spacing_y_mm or np.nan])
        ids.append(str(study.id))
    return StepData(
        images,
        np.asarray(keypoints, dtype=np.float64).reshape(len(images), len(codes), 2),
        codes,
        np.asarray(spacing, dtype=np.float64).reshape(len(images), 2),
        ids,
    )
