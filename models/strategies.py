"""The loss of each incremental strategy, given the student's and the teachers' outputs on one batch."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .batches import Batch
from .config import TrainConfig
from .losses import cpr_regulariser, feature_distillation, heatmap_mse, ksd_loss, lwf_loss
from .precision import Resolved, autocast
from .registry import ASSOCIATING, DISTILLING
from .registry import strategy as spec_of

__all__ = ["ASSOCIATING", "DISTILLING", "KAContext", "StepOutputs", "ka_prediction", "step_loss"]


@dataclass
class KAContext:
    """A trained, frozen KA-Net and its triplets as head channel indices (each (N,) long tensors), with the
    precision its passes run in (that of the step's network)."""

    kanet: torch.nn.Module
    old: torch.Tensor
    new_a: torch.Tensor
    new_b: torch.Tensor
    precision: Resolved = "fp32"


def ka_prediction(ka: KAContext, features: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """KA-Net's heatmaps of the associated old landmarks, (B, N, h, w), and where they are defined, (B, N):
    where both new landmarks of the triplet are labelled in this sample. The heatmaps are float32 whatever
    the precision of KA-Net's pass."""
    g1, g2 = batch.targets[:, ka.new_a], batch.targets[:, ka.new_b]
    mask = batch.mask[:, ka.new_a] & batch.mask[:, ka.new_b]
    with autocast(features.device, ka.precision):
        heatmaps = ka.kanet(features, g1, g2)
    return heatmaps.float(), mask


@dataclass
class StepOutputs:
    """One batch's network outputs that a strategy's loss reads, float32 (None where the step has none).

    student: (B, K, h, w) heatmaps of the model being trained; its first num_old channels are the old
        landmarks, in the teacher's order.
    teacher: (B, num_old, h, w) heatmaps of the frozen previous model on the same batch.
    teacher_features: (B, C, h, w) its features F (KA-Net's input in ka_mode "pseudo_label").
    student_features: (B, C, h, w) the new model's features F' (KA-Net's input in ka_mode "features"; the
        gradient flows through the frozen KA-Net into them; also l_FD's input).
    ka_target: (B, N, h, w) the stage-I pseudo-label of each triplet's old landmark (ka_mode "features").
    """

    student: torch.Tensor
    teacher: torch.Tensor | None = None
    teacher_features: torch.Tensor | None = None
    student_features: torch.Tensor | None = None
    ka_target: torch.Tensor | None = None


def step_loss(
    strategy: str,
    config: TrainConfig,
    batch: Batch,
    outputs: StepOutputs,
    num_old: int,
    ka: KAContext | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss and its parts for one batch.

    l_GT on every labelled landmark (new ones in IKL, all in the joint baselines), plus:
      lwf:            alpha * l_LwF(old)
      cpr:            alpha * l_LwF(old) + cpr_beta * CPR(all)
      kamp_ksd_only:  alpha * l_KSD(old)
      kamp, random:   alpha * (l_KSD(old) + ka_weight * l_KA)
    and, for every distilling strategy when config.feature_weight > 0, alpha * feature_weight * l_FD(F', F).
    `outputs` holds the heatmaps and features (see StepOutputs).
    """
    student, teacher = outputs.student, outputs.teacher
    l_gt = config.gt_scale * heatmap_mse(student, batch.targets, batch.mask)
    parts = {"gt": l_gt.item()}
    total = l_gt
    if strategy not in DISTILLING or num_old == 0:
        return total, parts
    if teacher is None:
        raise ValueError(f"strategy {strategy!r} needs the previous model's heatmaps")
    old = student[:, :num_old]
    spec = spec_of(strategy)
    if spec.distil in ("lwf", "cpr"):
        distil = lwf_loss(old, teacher, temperature=config.temperature)
        parts["lwf"] = distil.item()
        if spec.distil == "cpr":
            l_cpr = cpr_regulariser(student, temperature=config.temperature)
            parts["cpr"] = l_cpr.item()
            total = total + config.cpr_beta * l_cpr
    else:
        distil = ksd_loss(old, teacher, temperature=config.temperature, mode=config.ksd_mode)
        parts["ksd"] = distil.item()
        if spec.kanet is not None and ka is not None:
            l_ka = _ka_loss(config, batch, outputs, ka)
            parts["ka"] = l_ka.item()
            distil = distil + config.ka_weight * l_ka
    if config.feature_weight:
        if outputs.student_features is None or outputs.teacher_features is None:
            raise ValueError("feature_weight > 0 needs the new and the previous model's features")
        l_fd = feature_distillation(outputs.student_features, outputs.teacher_features)
        parts["fd"] = l_fd.item()
        distil = distil + config.feature_weight * l_fd
    return total + config.alpha * distil, parts


def _ka_loss(config: TrainConfig, batch: Batch, outputs: StepOutputs, ka: KAContext) -> torch.Tensor:
    """l_KA in either reading of stage II (TrainConfig.ka_mode)."""
    if config.ka_mode == "features":
        if outputs.student_features is None or outputs.ka_target is None:
            raise ValueError("KAMP (ka_mode 'features') needs the new model's features and the KA target")
        ka_hm, ka_mask = ka_prediction(ka, outputs.student_features, batch)
        return config.gt_scale * heatmap_mse(ka_hm, outputs.ka_target, ka_mask)
    if outputs.teacher_features is None:
        raise ValueError("KAMP needs the previous model's features for KA-Net")
    with torch.no_grad():
        ka_hm, ka_mask = ka_prediction(ka, outputs.teacher_features, batch)
    return config.gt_scale * heatmap_mse(outputs.student[:, ka.old], ka_hm, ka_mask)
