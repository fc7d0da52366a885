"""Losses of incremental landmark learning. All take heatmaps (B, K, h, w) and return a scalar tensor, except
feature_distillation, which takes backbone features (B, C, h, w).

The distillation losses compare softmax distributions made from heatmaps at a temperature T. Heatmaps are
regression outputs with a unit peak, not logits: at T = 1 their softmax is nearly uniform and carries almost
no position, so T must be well below 1 (docs/method.md). Every distillation loss is a KL divergence
KL(teacher || student): it has the gradient of the cross-entropy of the paper and is exactly zero when the
student equals the teacher.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

KsdMode = Literal["marginal", "rows"]


def heatmap_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error per heatmap, averaged over the labelled (sample, landmark) pairs only.

    Args:
        pred, target: (B, K, h, w).
        mask: (B, K) bool, True where the landmark is labelled; None means all.
    Returns:
        0 when nothing is labelled (so an all-unlabelled batch contributes no gradient).
    """
    per_map = ((pred.float() - target.float()) ** 2).mean(dim=(-2, -1))  # (B, K)
    if mask is None:
        return per_map.mean()
    m = mask.to(per_map.dtype)
    return (per_map * m).sum() / m.sum().clamp_min(1.0)


def _kl(log_p_teacher: torch.Tensor, log_p_student: torch.Tensor, dim: int) -> torch.Tensor:
    """KL(teacher || student) along `dim`, averaged over every other axis."""
    return (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=dim).mean()


def spatial_log_distributions(
    heatmaps: torch.Tensor, temperature: float, mode: KsdMode
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two spatial distributions of KSD, as log-probabilities.

    "marginal": the max-profile along H (reduce W by max) and along W (reduce H by max), each softmaxed:
        shapes (B, K, h) and (B, K, w); one distribution per landmark and direction.
    "rows": softmax along H for every column and along W for every row: shapes (B, K, h, w) with the
        distribution on dim -2, and (B, K, h, w) with the distribution on dim -1.
    """
    z = heatmaps.float() / temperature
    if mode == "marginal":
        return F.log_softmax(z.amax(dim=-1), dim=-1), F.log_softmax(z.amax(dim=-2), dim=-1)
    if mode == "rows":
        return F.log_softmax(z, dim=-2), F.log_softmax(z, dim=-1)
    raise ValueError(f"unknown KSD mode {mode!r}: use 'marginal' or 'rows'")


def ksd_loss(
    student: torch.Tensor, teacher: torch.Tensor, *, temperature: float, mode: KsdMode = "marginal"
) -> torch.Tensor:
    """Keypoint-guided spatial distillation (KAMP, l_KSD).

    KL(teacher || student) of the distribution along H plus that along W, each averaged over samples,
    landmarks (and, in "rows" mode, over the columns or rows); summed over the two directions.
    Args:
        student, teacher: (B, K, h, w) heatmaps of the old landmarks.
    """
    sy, sx = spatial_log_distributions(student, temperature, mode)
    ty, tx = spatial_log_distributions(teacher.detach(), temperature, mode)
    dim_y = -1 if mode == "marginal" else -2
    return _kl(ty, sy, dim_y) + _kl(tx, sx, -1)


def lwf_loss(student: torch.Tensor, teacher: torch.Tensor, *, temperature: float) -> torch.Tensor:
    """LwF as the KAMP paper applies it to heatmaps: at each pixel, softmax across the landmark channels,
    then KL(teacher || student), averaged over samples and pixels.

    Args:
        student, teacher: (B, K_old, h, w).
    """
    log_s = F.log_softmax(student.float() / temperature, dim=1)
    log_t = F.log_softmax(teacher.detach().float() / temperature, dim=1)
    return _kl(log_t, log_s, dim=1)


def cpr_regulariser(heatmaps: torch.Tensor, *, temperature: float) -> torch.Tensor:
    """CPR (Cha et al., ICLR 2021) adapted to heatmaps: KL(p || uniform) = log K - H(p) of the same per-pixel
    channel distribution LwF distils, averaged over samples and pixels. Minimising it maximises the entropy
    of the student's landmark classifier at every pixel, CPR's push towards a wide local optimum.

    Args:
        heatmaps: (B, K, h, w) of the student, over all landmarks it predicts.
    """
    k = heatmaps.shape[1]
    if k < 2:
        return heatmaps.sum() * 0.0
    log_p = F.log_softmax(heatmaps.float() / temperature, dim=1)
    entropy = -(log_p.exp() * log_p).sum(dim=1)
    return (math.log(k) - entropy).mean()


def feature_distillation(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Relative squared error of the new model's backbone features against the previous model's:
    sum((F' - F)^2) / sum(F^2) over the batch, a scale-free number (0 when F' = F, 1 when F' is as far from F
    as F is from zero). The teacher side carries no gradient.

    Args:
        student, teacher: (B, C, h, w) features (not heatmaps) of the same batch.
    """
    t = teacher.detach().float()
    return ((student.float() - t) ** 2).sum() / (t**2).sum().clamp_min(1e-12)
