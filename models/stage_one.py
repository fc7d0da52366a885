"""Stage I of a KAMP step: choose the triplets (old <- two new landmarks) and train KA-Net to map the old model's
features and the two new landmarks' labels to the old model's heatmap of the associated old landmark. The
previous model is a frozen teacher throughout; KA-Net is frozen for stage II."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .batches import Batch, BatchSampler, PreparedData
from .checkpoint import Checkpoint
from .codec import HeatmapCodec
from .config import TrainConfig
from .kanet import KANet
from .losses import heatmap_mse
from .network import LandmarkNet
from .precision import Resolved, autocast, prepare_input, prepare_module, resolve_device, resolve_precision
from .registry import strategy as strategy_spec
from .step_data import StepData
from .step_report import StepTimer, TrainReport
from .strategies import ASSOCIATING, KAContext, ka_prediction
from .triplets import Triplet, random_triplets, select_triplets


@dataclass
class FittedKANet:
    """Stage I's result: the frozen KA-Net with its triplets as head channels of `codes` (the previous model's
    codes, then the step's new ones), the triplets by code, and KA-Net's last training loss."""

    ka: KAContext
    codes: list[str]
    triplets: list[Triplet]
    loss: float | None


def fit_ka_net(previous: Checkpoint, data: StepData, strategy: str, config: TrainConfig) -> FittedKANet:
    """Stage I of a KAMP step alone, for diagnostics (e.g. bench/ka_diagnostics.py): the triplets chosen as
    `train_step` chooses them and a KA-Net trained as it trains one, on `previous`'s features of `data` (the
    step's images with the new labels). Its random initialisation and batch order may differ from those of a
    `train_step` with the same seed, which draws other numbers first."""
    if strategy not in ASSOCIATING:
        raise ValueError(f"{strategy!r} has no KA-Net; choose one of {', '.join(sorted(ASSOCIATING))}")
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    old_codes = previous.codes
    new_codes = [c for c in data.codes if c not in old_codes]
    if not new_codes:
        raise ValueError("the data has no landmark the previous model lacks")
    codes = old_codes + new_codes
    prepared = PreparedData(data, codes, HeatmapCodec(previous.codec))
    teacher = previous.build_frozen(device, precision)
    report = TrainReport(
        strategy, previous.step + 1, new_codes, old_codes, len(data), 0, 0.0, 0.0, str(device), precision
    )
    sampler = BatchSampler(len(prepared), config.batch_size, rng)
    ka = stage_one(teacher, prepared, data, config, rng, sampler, StepTimer(None), None, report)
    return FittedKANet(ka, codes, report.triplets, report.kanet_loss)


def stage_one(
    teacher: LandmarkNet,
    prepared: PreparedData,
    data: StepData,
    config: TrainConfig,
    rng: np.random.Generator,
    sampler: BatchSampler,
    timer: StepTimer,
    state: dict[str, Any] | None,
    report: TrainReport,
) -> KAContext:
    """Choose triplets and train KA-Net (or restore both from a training state). The codes are the prepared
    data's (the report's old ones, then its new ones); the device is the teacher's, the precision the report's."""
    codes, old_codes, new_codes, strategy = prepared.codes, report.old_codes, report.new_codes, report.strategy
    device = next(teacher.parameters()).device
    precision = report.precision
    kc = config.kanet
    if state is not None and "triplets" in state:
        triplets = [tuple(t) for t in state["triplets"]]
    elif kc.triplets:
        triplets = [tuple(t) for t in kc.triplets]
        for o, a, b in triplets:
            if o not in old_codes or a not in new_codes or b not in new_codes:
                raise ValueError(f"triplet ({o} <- {a}, {b}) must name an old landmark and two new ones")
    else:
        auto = _auto_triplets(teacher, prepared, data, codes, old_codes, new_codes, kc.max_triplets, precision)
        random = strategy_spec(strategy).kanet == "random"
        triplets = random_triplets(old_codes, new_codes, len(auto), rng) if random else auto
    report.triplets = [tuple(t) for t in triplets]  # type: ignore[misc]
    index = {c: i for i, c in enumerate(codes)}

    def idx(pos: int) -> torch.Tensor:
        return torch.tensor([index[t[pos]] for t in triplets], device=device)

    kanet = KANet(
        feature_channels=teacher.backbone.out_channels,
        num_triplets=len(triplets),
        hidden=kc.hidden,
        dilations=kc.dilations,
    ).to(device)
    prepare_module(kanet, precision)
    ka = KAContext(kanet=kanet, old=idx(0), new_a=idx(1), new_b=idx(2), precision=precision)
    if state is not None and "kanet" in state:
        kanet.load_state_dict(state["kanet"])
        report.kanet_loss = state.get("kanet_loss")
    else:
        report.kanet_loss = _train_kanet(teacher, ka, prepared, config, rng, device, sampler, timer)
    kanet.eval().requires_grad_(False)
    return ka


def _auto_triplets(
    teacher: LandmarkNet,
    prepared: PreparedData,
    data: StepData,
    codes: list[str],
    old_codes: list[str],
    new_codes: list[str],
    max_triplets: int,
    precision: Resolved,
) -> list[Triplet]:
    """Triplets from the old model's predictions and the new labels on the step's own images (mm if known)."""
    old_pts = teacher_points(teacher, prepared, precision)
    spacing = np.where(np.isfinite(data.spacing_mm), data.spacing_mm, 1.0)[:, None, :]
    new_pts = data.select(new_codes).keypoints * spacing
    old_pts = old_pts * spacing
    return select_triplets(
        {c: old_pts[:, i] for i, c in enumerate(old_codes)},
        {c: new_pts[:, i] for i, c in enumerate(new_codes)},
        max_triplets=max_triplets,
    )


def teacher_points(teacher: LandmarkNet, prepared: PreparedData, precision: Resolved) -> np.ndarray:
    """The previous model's first-stage estimates of its landmarks on the step's (unaugmented) images:
    (N, K_old, 2) image pixels."""
    device = next(teacher.parameters()).device
    preds = []
    with torch.no_grad():
        for i in range(0, len(prepared), 16):
            x = prepare_input(prepared.inputs[i : i + 16].to(device), precision)
            with autocast(device, precision):
                hm = teacher(x)
            pts, _ = prepared.codec.decode_to_image(hm.float(), prepared.affines[i : i + 16])
            preds.append(pts)
    return np.concatenate(preds)


def _train_kanet(
    teacher: LandmarkNet,
    ka: KAContext,
    prepared: PreparedData,
    config: TrainConfig,
    rng: np.random.Generator,
    device: torch.device,
    sampler: BatchSampler,
    timer: StepTimer,
) -> float:
    kc = config.kanet
    ka.kanet.train()
    opt = torch.optim.Adam(ka.kanet.parameters(), lr=kc.lr)
    codec = prepared.codec
    last = float("nan")
    for it in range(kc.iterations):
        batch: Batch = prepared.batch(sampler.next(), config.augment, rng, device)
        with torch.no_grad(), autocast(device, ka.precision):
            t_hm, feats = teacher.forward_with_features(prepare_input(batch.x, ka.precision))
        target = ka_target(t_hm.float()[:, ka.old], codec, config)
        predicted, mask = ka_prediction(ka, feats, batch)
        loss = config.gt_scale * heatmap_mse(predicted, target, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        last = loss.item()
        if (it + 1) % 10 == 0 or it + 1 == kc.iterations:
            timer.report("kanet", it + 1, kc.iterations, it + 1, {"ka_net": last})
    return last


def ka_target(old_heatmaps: torch.Tensor, codec: HeatmapCodec, config: TrainConfig) -> torch.Tensor:
    """Stage I's pseudo-label of each triplet's old landmark, (B, N, h, w), from the old model's heatmaps of
    them (B, N, h, w): the heatmaps as they are, or unit-peak Gaussians at their decoded peaks."""
    if config.kanet.target != "gaussian":
        return old_heatmaps
    with torch.no_grad():
        peaks, _ = codec.decode(old_heatmaps)
        return codec.encode(peaks).to(old_heatmaps.device)
