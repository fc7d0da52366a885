"""Evaluation of a checkpoint on labelled images: radial errors per landmark, MRE, SDR."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .checkpoint import Checkpoint
from .config import Precision
from .metrics import ErrorSummary, per_landmark, radial_errors, summarize
from .predictor import Predictor
from .step_data import StepData


@dataclass
class Evaluation:
    """errors: (N, K) radial errors (mm where the image spacing is known, else pixels), K = codes, NaN where
    the image has no label for the landmark. unit: "mm", "px" (no image has a spacing) or "mixed"."""

    codes: list[str]
    ids: list[str]
    errors: np.ndarray
    confidence: np.ndarray
    overall: ErrorSummary
    landmarks: dict[str, ErrorSummary]
    unit: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "codes": self.codes,
            "unit": self.unit,
            "ids": self.ids,
            "overall": self.overall.to_dict(),
            "landmarks": {c: s.to_dict() for c, s in self.landmarks.items()},
        }


def evaluate(model: Checkpoint | Predictor, data: StepData, *, precision: Precision = "auto") -> Evaluation:
    """Predict `data`'s images and measure every landmark both the model and the data know; a checkpoint is
    run in `precision` (a Predictor in its own)."""
    predictor = model if isinstance(model, Predictor) else Predictor(model, precision=precision)
    codes = [c for c in predictor.codes if c in data.codes]
    if not codes:
        raise ValueError("the model and the data share no landmark code")
    pts, conf = predictor.predict_arrays(data.images, spacing_mm=data.spacing_mm)
    cols = [predictor.codes.index(c) for c in codes]
    errors = radial_errors(pts[:, cols], data.select(codes).keypoints, data.spacing_mm)
    return Evaluation(
        codes=codes,
        ids=list(data.ids),
        errors=errors,
        confidence=conf[:, cols],
        overall=summarize(errors),
        landmarks=per_landmark(errors, codes),
        unit=_unit(data.spacing_mm),
    )


def _unit(spacing_mm: np.ndarray) -> str:
    known = np.isfinite(spacing_mm).all(axis=1)
    return "mm" if known.all() else "px" if not known.any() else "mixed"
