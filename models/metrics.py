"""Landmark localisation metrics: radial errors, MRE/SD/SDR summaries and incremental-learning metrics.

Conventions:
- Errors are in millimetres where the image's pixel spacing is known, else in pixels of the image.
- NaN marks "not labelled" (or "not predicted"); every summary ignores NaN entries, never counts them as 0.
- "Pooled" means averaged over all (image, landmark) errors together, not a mean of per-landmark means.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Success detection rate thresholds (in mm, or pixels for images without spacing).
SDR_THRESHOLDS_MM: tuple[float, ...] = (2.0, 2.5, 3.0, 4.0)


def radial_errors(pred: np.ndarray, gt: np.ndarray, spacing_mm: np.ndarray | float | None) -> np.ndarray:
    """Euclidean distance between predicted and true landmarks, scaled by the pixel spacing.

    Args:
        pred: (N, K, 2) predicted (x, y) in pixels.
        gt: (N, K, 2) true (x, y) in pixels; NaN where not labelled.
        spacing_mm: (N, 2) (x, y) mm per pixel, or (N,) isotropic, or a scalar for all images, or None
            (all unknown). An image whose spacing has a NaN component is measured in pixels.

    Returns:
        (N, K) float64 errors sqrt((dx * sx)^2 + (dy * sy)^2): mm where the spacing is known, else pixels;
        NaN where gt or pred is NaN.
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[-1] != 2:
        raise ValueError(f"pred and gt must both have shape (N, K, 2), got {pred.shape} and {gt.shape}")
    n = gt.shape[0]
    spacing = np.full((n, 2), np.nan) if spacing_mm is None else np.asarray(spacing_mm, dtype=np.float64)
    if spacing.ndim == 0:
        spacing = np.full((n, 2), float(spacing))
    elif spacing.shape == (n,):
        spacing = np.repeat(spacing[:, None], 2, axis=1)
    if spacing.shape != (n, 2):
        raise ValueError(f"spacing_mm must have shape (N={n}, 2) or (N,), got {spacing.shape}")
    unknown = np.isnan(spacing).any(axis=1)
    spacing = np.where(unknown[:, None], 1.0, spacing)
    d = (pred - gt) * spacing[:, None, :]
    return np.sqrt((d**2).sum(axis=-1))


def _finite(values: np.ndarray | Iterable[float]) -> np.ndarray:
    """The non-NaN entries of `values`, flattened to 1-D float64."""
    x = np.asarray(values, dtype=np.float64).ravel()
    return x[~np.isnan(x)]


def _nanmean(values: np.ndarray | Iterable[float]) -> float:
    """Mean of the non-NaN entries; NaN (without a warning) when there are none."""
    x = _finite(values)
    return float(x.mean()) if x.size else math.nan


def _json_float(x: float | None) -> float | None:
    """`x` as a JSON-safe value: NaN and None become None."""
    return None if x is None or math.isnan(x) else float(x)


@dataclass
class ErrorSummary:
    """Summary of a set of radial errors (mm, or pixels where the spacing is unknown).

    Attributes:
        mre: mean radial error.
        sd: sample standard deviation (ddof=1) of the errors; 0.0 for a single error.
        median: median error.
        sdr: success detection rate per threshold: fraction in [0, 1] of errors <= threshold.
        n: number of (non-NaN) errors summarised. With n == 0 every other field is NaN.
    """

    mre: float
    sd: float
    median: float
    sdr: dict[float, float] = field(default_factory=dict)
    n: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; NaN becomes None and SDR thresholds become string keys ("2.0")."""
        return {
            "mre": _json_float(self.mre),
            "sd": _json_float(self.sd),
            "median": _json_float(self.median),
            "sdr": {str(float(t)): _json_float(v) for t, v in self.sdr.items()},
            "n": self.n,
        }


def summarize(errors: np.ndarray | Iterable[float], thresholds: Sequence[float] = SDR_THRESHOLDS_MM) -> ErrorSummary:
    """MRE, SD, median and SDR of errors of any shape, ignoring NaN entries.

    Args:
        errors: radial errors of any shape (mm or pixels); NaN entries are not labelled and are skipped.
        thresholds: SDR thresholds, in the unit of the errors.
    """
    x = _finite(errors)
    if x.size == 0:
        return ErrorSummary(math.nan, math.nan, math.nan, {float(t): math.nan for t in thresholds}, 0)
    sd = float(x.std(ddof=1)) if x.size > 1 else 0.0
    sdr = {float(t): float((x <= t).mean()) for t in thresholds}
    return ErrorSummary(float(x.mean()), sd, float(np.median(x)), sdr, int(x.size))


def per_landmark(
    errors: np.ndarray, codes: Sequence[str], thresholds: Sequence[float] = SDR_THRESHOLDS_MM
) -> dict[str, ErrorSummary]:
    """Summary of each landmark column of (N, K) errors, keyed by the K landmark codes (in their order)."""
    errors = np.asarray(errors, dtype=np.float64)
    if errors.ndim != 2 or errors.shape[1] != len(codes):
        raise ValueError(f"errors must have shape (N, K={len(codes)}), got {errors.shape}")
    return {code: summarize(errors[:, k], thresholds) for k, code in enumerate(codes)}


# --------------------------------------------------------------------------------------------------------
# Incremental keypoint learning


@dataclass
class IncrementalResult:
    """Test errors of a model after each finished step of an incremental protocol.

    Attributes:
        landmark_step: the step (0-based) at which each landmark is learned, for every landmark of the
            protocol (later, unfinished steps may be included).
        errors: one dict per finished step t; errors[t][code] is the (N,) per-image error (mm or pixels;
            NaN where not labelled) of landmark `code` after step t, on the test images. It must hold every
            landmark learned up to t; entries of landmarks learned later are ignored.
    """

    landmark_step: dict[str, int]
    errors: list[dict[str, np.ndarray]]

    def __post_init__(self) -> None:
        self.errors = [
            {code: np.asarray(e, dtype=np.float64).ravel() for code, e in step.items()} for step in self.errors
        ]
        for t, step in enumerate(self.errors):
            unknown = sorted(set(step) - set(self.landmark_step))
            if unknown:
                raise ValueError(f"errors[{t}] has landmarks missing from landmark_step: {unknown}")
            missing = [code for code in self.landmarks_up_to(t) if code not in step]
            if missing:
                raise ValueError(f"errors[{t}] lacks landmarks learned up to step {t}: {missing}")

    @property
    def num_steps(self) -> int:
        """Number of finished steps (len(errors))."""
        return len(self.errors)

    def landmarks_of(self, s: int) -> list[str]:
        """Codes of the landmarks learned at step s."""
        return [code for code, step in self.landmark_step.items() if step == s]

    def landmarks_up_to(self, t: int) -> list[str]:
        """Codes of the landmarks learned at steps 0..t, ordered by step."""
        return [code for code, s in sorted(self.landmark_step.items(), key=lambda kv: kv[1]) if s <= t]

    def _check_step(self, t: int) -> None:
        if not 0 <= t < self.num_steps:
            raise IndexError(f"step {t} is not a finished step (0..{self.num_steps - 1})")

    def pooled(self, t: int, codes: Iterable[str]) -> np.ndarray:
        """1-D array of all per-image errors after step t of the given landmarks, concatenated (NaN kept)."""
        self._check_step(t)
        parts = [self.errors[t][code] for code in codes]
        return np.concatenate(parts) if parts else np.empty(0)


def step_matrix(result: IncrementalResult) -> list[list[float | None]]:
    """E[t][s]: pooled mean error after step t of the landmarks learned at step s (s <= t); None for s > t.

    A (T, T) nested list for T finished steps; NaN where step s's landmarks have no labelled test error.
    """
    t_count = result.num_steps
    return [
        [_nanmean(result.pooled(t, result.landmarks_of(s))) if s <= t else None for s in range(t_count)]
        for t in range(t_count)
    ]


def a_mre(result: IncrementalResult, t: int) -> float:
    """Average MRE after step t: pooled mean of all (image, landmark) errors of landmarks learned up to t."""
    result._check_step(t)
    return _nanmean(result.pooled(t, result.landmarks_up_to(t)))


def per_landmark_mre(result: IncrementalResult, t: int) -> dict[str, float]:
    """MRE after step t of each landmark learned up to t (NaN-aware), ordered by step."""
    result._check_step(t)
    return {code: _nanmean(result.errors[t][code]) for code in result.landmarks_up_to(t)}


def transfer(result: IncrementalResult, t: int) -> tuple[float | None, float | None]:
    """(AT_t, MT_t): average and maximum transfer to the old landmarks after step t.

    For each old landmark l (learned at step s_l < t), d_l = MRE_l after step s_l - MRE_l after step t;
    positive means landmark l improved since it was learned (negative: it was forgotten).
    AT_t is the mean and MT_t the maximum of d_l over the old landmarks whose d_l is defined.
    (None, None) for t = 0 or when no d_l is defined.
    """
    result._check_step(t)
    diffs = [
        _nanmean(result.errors[s][code]) - _nanmean(result.errors[t][code])
        for code, s in result.landmark_step.items()
        if s < t
    ]
    d = _finite(diffs)
    if d.size == 0:
        return None, None
    return float(d.mean()), float(d.max())


def incremental_report(result: IncrementalResult, thresholds: Sequence[float] = SDR_THRESHOLDS_MM) -> dict[str, Any]:
    """JSON-ready report of an incremental run; NaN becomes None.

    Keys: "num_steps"; "landmark_step"; "E" (step_matrix); per finished step t (lists of length T):
    "a_mre", "at", "mt", "per_landmark_mre" (dict code -> MRE) and "summary" (ErrorSummary.to_dict() of
    the pooled errors of all landmarks learned up to t).
    """
    steps = range(result.num_steps)
    transfers = [transfer(result, t) for t in steps]
    return {
        "num_steps": result.num_steps,
        "landmark_step": dict(result.landmark_step),
        "E": [[_json_float(v) for v in row] for row in step_matrix(result)],
        "a_mre": [_json_float(a_mre(result, t)) for t in steps],
        "at": [_json_float(at) for at, _ in transfers],
        "mt": [_json_float(mt) for _, mt in transfers],
        "per_landmark_mre": [{code: _json_float(v) for code, v in per_landmark_mre(result, t).items()} for t in steps],
        "summary": [summarize(result.pooled(t, result.landmarks_up_to(t)), thresholds).to_dict() for t in steps],
    }
