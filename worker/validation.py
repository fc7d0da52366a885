"""Validation of a new model version on every step's frozen validation studies, and the promotion gate."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.checkpoint import Checkpoint
from models.config import Precision
from models.evaluate import evaluate
from models.predictor import Predictor
from models.step_data import StepData


@dataclass
class StepValidation:
    step: int
    n_studies: int
    unit: str
    mre: float | None
    sd: float | None
    sdr: dict[str, float]
    landmarks: dict[str, dict[str, Any]]
    parent_mre: float | None = None

    @property
    def change(self) -> float | None:
        """MRE minus the parent's on the same studies (negative: better)."""
        if self.mre is None or self.parent_mre is None:
            return None
        return self.mre - self.parent_mre


def validate(
    checkpoint: Checkpoint,
    parent: Checkpoint | None,
    val_sets: dict[int, StepData],
    precision: Precision = "auto",
    on_step: Callable[[int, int], None] | None = None,
) -> list[StepValidation]:
    """MRE, SD, SDR per landmark and per step on each step's validation studies (those that still exist), and
    the parent's MRE on the old steps' studies for comparison; both models predict in `precision`."""
    predictor = Predictor(checkpoint, precision=precision)
    parent_predictor = Predictor(parent, precision=precision) if parent is not None else None
    out: list[StepValidation] = []
    total = sum(len(d) for d in val_sets.values())
    if on_step is not None:
        on_step(0, total)
    for step, data in sorted(val_sets.items()):
        if on_step is not None and out:
            on_step(sum(s.n_studies for s in out), total)
        if len(data) == 0:
            out.append(StepValidation(step, 0, "mm", None, None, {}, {}))
            continue
        result = evaluate(predictor, data)
        s = result.overall
        parent_mre = None
        if parent_predictor is not None and all(c in parent_predictor.codes for c in data.codes):
            parent_mre = _finite(evaluate(parent_predictor, data).overall.mre)
        out.append(
            StepValidation(
                step=step,
                n_studies=len(data),
                unit=result.unit,
                mre=_finite(s.mre),
                sd=_finite(s.sd),
                sdr={str(k): v for k, v in s.sdr.items()},
                landmarks={c: v.to_dict() for c, v in result.landmarks.items()},
                parent_mre=parent_mre,
            )
        )
    return out


def gate(steps: list[StepValidation], new_step: int, max_new_mre: float, old_tolerance: float) -> tuple[bool, str]:
    """(passes, reason). The new step's landmarks must be validated and below max_new_mre; no old step may be
    worse than under the parent by more than old_tolerance."""
    by_step = {s.step: s for s in steps}
    new = by_step.get(new_step)
    if new is None or new.mre is None:
        return False, f"step {new_step} has no validation study with its landmarks, so the version cannot be validated"
    if new.mre > max_new_mre:
        return False, f"step {new_step}'s landmarks: MRE {new.mre:.2f} {new.unit} above the gate of {max_new_mre:g}"
    for s in steps:
        if s.step != new_step and s.change is not None and s.change > old_tolerance:
            return False, (
                f"step {s.step}'s landmarks got worse: MRE {s.mre:.2f} against {s.parent_mre:.2f} {s.unit} "
                f"under the parent (tolerance {old_tolerance:g})"
            )
    return True, f"step {new_step} MRE {new.mre:.2f} {new.unit}; no old step worse by more than {old_tolerance:g}"


def report(steps: list[StepValidation]) -> dict[str, Any]:
    return {
        "steps": [
            {
                "step": s.step,
                "n_studies": s.n_studies,
                "unit": s.unit,
                "mre": s.mre,
                "sd": s.sd,
                "sdr": s.sdr,
                "parent_mre": s.parent_mre,
                "change": s.change,
                "landmarks": s.landmarks,
            }
            for s in steps
        ]
    }


def _finite(v: float) -> float | None:
    return float(v) if v is not None and np.isfinite(v) else None
