"""One incremental step: `train_step(previous checkpoint or None, step data, strategy, config)`.

Stage I (KAMP only): train KA-Net on the step's images to map (old features, new labels) to the old model's
heatmap of an associated old landmark. Stage II: train the new model with the strategy's loss
(models.strategies). The previous model and KA-Net are frozen teachers in eval mode throughout.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .batches import Batch, BatchSampler, PreparedData
from .checkpoint import REFINER_PREFIX, Checkpoint, LandmarkInfo
from .codec import HeatmapCodec
from .config import BackboneConfig, CodecConfig, RefineConfig, TrainConfig, to_dict
from .kanet import KANet
from .losses import heatmap_mse
from .network import LandmarkNet
from .optimise import optimise, warmup_cosine
from .precision import Resolved, autocast, prepare_input, prepare_module, resolve_precision
from .refine import build_crop_network
from .refine_training import make_task, train_crop_network
from .registry import strategy as strategy_spec
from .step_data import StepData
from .strategies import ASSOCIATING, DISTILLING, KAContext, ka_prediction, step_loss
from .triplets import Triplet, random_triplets, select_triplets


@dataclass
class Progress:
    """Reported to the progress callback every few iterations. Raising in the callback stops training
    (the training-state file, if any, lets a later call resume)."""

    stage: str  # "kanet" or "train"
    iteration: int
    total: int
    losses: dict[str, float]
    elapsed_s: float
    eta_s: float


ProgressCallback = Callable[[Progress], None]


@dataclass
class TrainReport:
    strategy: str
    step: int
    new_codes: list[str]
    old_codes: list[str]
    images: int
    iterations: int
    seconds: float
    seconds_per_image: float
    device: str
    #: The precision the network trained in ("bf16" or "fp32"; TrainConfig.precision resolved on the device).
    precision: Resolved = "fp32"
    #: Seconds of the whole call (data and teacher set-up, stage I, stage II); `seconds` is stage II's loop
    #: alone (what seconds_per_image divides), kanet_seconds stage I's (triplet choice and KA-Net training).
    total_seconds: float = 0.0
    kanet_seconds: float = 0.0
    #: Seconds of the local stage's training (models.refine_training), 0 for a one-stage model.
    refine_seconds: float = 0.0
    refine_history: list[dict[str, float]] = field(default_factory=list)
    triplets: list[Triplet] = field(default_factory=list)
    kanet_loss: float | None = None
    loss_history: list[dict[str, float]] = field(default_factory=list)
    resumed_from: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(map(list, v)) if k == "triplets" else v) for k, v in self.__dict__.items()}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def train_step(
    previous: Checkpoint | None,
    data: StepData,
    strategy: str,
    config: TrainConfig,
    *,
    backbone: BackboneConfig | None = None,
    codec: CodecConfig | None = None,
    refine: RefineConfig | None = None,
    names: dict[str, str] | None = None,
    progress: ProgressCallback | None = None,
    state_path: str | Path | None = None,
) -> tuple[Checkpoint, TrainReport]:
    """Train the model of the next step.

    Args:
        previous: the last step's checkpoint, or None for step 0 (then `backbone`, `codec` and `refine` configure
            the new model; otherwise they are taken from `previous`).
        data: the step's training images; its codes that `previous` lacks are the new landmarks (appended to
            the head in data's order). Labels of old codes, if present (joint baselines), are trained on too.
        strategy: one of models.config.STRATEGIES.
        refine: step 0 only: the local stage's network and crops (models.refine); None gives a one-stage model.
        names: optional landmark code -> human-readable name, stored in the checkpoint.
        progress: called with a Progress every few iterations.
        state_path: training-state file; written every config.state_every iterations and resumed from when
            it exists and matches this call's inputs. Removed when the step completes.
    Returns:
        (the new checkpoint, whose parent_sha256 is previous's hash; a TrainReport).
    """
    strategy_spec(strategy)  # ValueError for an unknown one
    if len(data) == 0:
        raise ValueError("a training step needs at least one image")
    started = time.perf_counter()
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)

    old_codes = previous.codes if previous else []
    new_codes = [c for c in data.codes if c not in old_codes]
    codes = old_codes + new_codes
    labelled = data.select(codes).labelled.any(axis=0)
    if not labelled.any():
        raise ValueError("the step's data has no labelled landmark")
    if previous is None and not new_codes:
        raise ValueError("step 0 needs at least one landmark")
    step = previous.step + 1 if previous else 0
    backbone = previous.backbone if previous else (backbone or BackboneConfig())
    codec_config = previous.codec if previous else (codec or CodecConfig())
    refine_config = previous.refine if previous else refine
    heatmaps = HeatmapCodec(codec_config)
    prepared = PreparedData(data, codes, heatmaps)

    teacher = previous.build_frozen(device, precision) if previous and strategy in DISTILLING else None
    student = _initial_student(previous, backbone, config, device)
    if new_codes:
        student.head.grow(len(new_codes))
    prepare_module(student, precision)

    fingerprint = _fingerprint(previous, data, strategy, config, codes, refine_config)
    state = _load_state(state_path, fingerprint)
    timer = _Timer(progress)
    sampler = BatchSampler(len(prepared), config.batch_size, rng)
    report = TrainReport(
        strategy=strategy,
        step=step,
        new_codes=new_codes,
        old_codes=old_codes,
        images=len(data),
        iterations=config.iterations,
        seconds=0.0,
        seconds_per_image=0.0,
        device=str(device),
        precision=precision,
    )

    ka: KAContext | None = None
    if teacher is not None and strategy in ASSOCIATING and new_codes:
        t_ka = time.perf_counter()
        ka = _stage_one(teacher, prepared, data, config, rng, sampler, timer, state, report)
        report.kanet_seconds = time.perf_counter() - t_ka

    optimizer = torch.optim.Adam(student.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = warmup_cosine(config.iterations, config.warmup)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    start = 0
    if state is not None and state.get("stage") == "train":
        student.load_state_dict(state["student"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        sampler.restore(state["sampler"])
        report.loss_history = state["history"]
        start = report.resumed_from = int(state["iteration"])
    elif state is not None and state.get("stage") == "refine":  # stage II had finished
        student.load_state_dict(state["student"])
        report.loss_history = state["history"]
        start = report.resumed_from = config.iterations

    student.train()
    num_old = len(old_codes)
    # The new model's features F' are an input of l_KA (reading "features") and of l_FD.
    wants_features = (ka is not None and config.ka_mode == "features") or bool(
        config.feature_weight and teacher is not None and num_old
    )
    # Loss sums since the last log entry; part of the training state so a resumed run logs the same means.
    resumed = state if start and state is not None else {}
    running: dict[str, float] = dict(resumed.get("running", {}))
    count = int(resumed.get("count", 0))
    t0 = time.perf_counter()
    for it in range(start, config.iterations):
        batch = prepared.batch(sampler.next(), config.augment, rng, device)
        x = prepare_input(batch.x, precision)
        with autocast(device, precision):
            s_feat = ka_target = None
            if wants_features:
                hm, s_feat = student.forward_with_features(x)
            else:
                hm = student(x)
            t_hm = t_feat = None
            if teacher is not None and num_old:
                with torch.no_grad():
                    t_hm, t_feat = teacher.forward_with_features(x)
        # From here on float32: the losses read the network's outputs cast back (KA-Net's pass inside l_KA
        # runs in the same precision, models.strategies.ka_prediction).
        if ka is not None and t_hm is not None and s_feat is not None:
            ka_target = _ka_target(t_hm.float()[:, ka.old], heatmaps, config)
        loss, parts = step_loss(
            strategy,
            config,
            batch,
            hm.float(),
            num_old,
            None if t_hm is None else t_hm.float(),
            None if t_feat is None else t_feat.float(),
            ka,
            None if s_feat is None else s_feat.float(),
            ka_target,
        )
        optimise(loss, parts, optimizer, scheduler, running, f"at iteration {it}")
        count += 1
        logged = (it + 1) % 10 == 0 or it + 1 == config.iterations
        if logged:
            means = {k: v / count for k, v in running.items()}
            report.loss_history.append({"iteration": it + 1, **means})
            running, count = {}, 0
        if state_path and config.state_every and (it + 1) % config.state_every == 0 and it + 1 < config.iterations:
            # Saved before the progress callback, which may raise to cancel: a cancel loses no saved work.
            _save_state(
                state_path,
                {
                    "fingerprint": fingerprint,
                    "stage": "train",
                    "iteration": it + 1,
                    "student": student.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "sampler": sampler.state(),
                    "history": report.loss_history,
                    "running": running,
                    "count": count,
                    **_ka_state(ka, report),
                },
            )
        if logged:
            timer.report("train", it + 1 - start, config.iterations - start, it + 1, means)
    seconds = time.perf_counter() - t0
    done = config.iterations - start
    report.seconds = seconds
    report.seconds_per_image = seconds / max(1, done * sampler.batch_size)
    student.eval()

    crop_net: LandmarkNet | None = None
    if refine_config is not None:
        t_refine = time.perf_counter()
        refine_state = state.get("refine") if state is not None and state.get("stage") == "refine" else None

        def save_refine(partial: dict[str, Any]) -> None:
            if state_path and config.state_every:
                _save_state(
                    state_path,
                    {
                        "fingerprint": fingerprint,
                        "stage": "refine",
                        "student": student.state_dict(),
                        "history": report.loss_history,
                        "refine": partial,
                        **_ka_state(ka, report),
                    },
                )

        crop_net = _stage_local(
            previous,
            teacher,
            prepared,
            data,
            strategy,
            config,
            refine_config,
            device,
            precision,
            rng,
            timer,
            refine_state,
            save_refine,
            report,
        )
        report.refine_seconds = time.perf_counter() - t_refine

    prev_info = previous.landmarks if previous else []
    names = names or {}
    landmarks = [LandmarkInfo(code=lm.code, step=lm.step, name=lm.name) for lm in prev_info] + [
        LandmarkInfo(code=c, step=step, name=names.get(c, "")) for c in new_codes
    ]
    report.total_seconds = time.perf_counter() - started
    weights = {k: v.detach().cpu().contiguous() for k, v in student.state_dict().items()}
    if crop_net is not None:
        weights |= {REFINER_PREFIX + k: v.detach().cpu().contiguous() for k, v in crop_net.state_dict().items()}
    checkpoint = Checkpoint(
        state_dict=weights,
        landmarks=landmarks,
        backbone=backbone,
        codec=codec_config,
        refine=refine_config,
        step=step,
        strategy=strategy,
        parent_sha256=previous.sha256 if previous else None,
        train_config=to_dict(config),
        report=report.to_dict(),
    )
    if state_path:
        Path(state_path).unlink(missing_ok=True)
    return checkpoint, report


# ---- the local stage ------------------------------------------------------------------------------------


def _stage_local(
    previous: Checkpoint | None,
    teacher: LandmarkNet | None,
    prepared: PreparedData,
    data: StepData,
    strategy: str,
    config: TrainConfig,
    refine: RefineConfig,
    device: torch.device,
    precision: Resolved,
    rng: np.random.Generator,
    timer: _Timer,
    state: dict[str, Any] | None,
    save: Callable[[dict[str, Any]], None],
    report: TrainReport,
) -> LandmarkNet:
    """Train the step's crop network (models.refine_training): from the previous one (or fresh), its head grown
    by the step's new landmarks; distilling from the previous one on crops around the teacher's estimates."""
    if previous is not None and previous.refine is not None and config.init == "previous":
        crop_net = previous.build_crop_network(device).train()
    else:
        crop_net = build_crop_network(refine, previous.step_sizes if previous else []).to(device)
    if report.new_codes:
        crop_net.head.grow(len(report.new_codes))
    prepare_module(crop_net, precision)
    crop_teacher = None
    estimates = None
    if teacher is not None and previous is not None and previous.refine is not None and report.old_codes:
        crop_teacher = previous.build_frozen_crop_network(device, precision)
        estimates = _teacher_points(teacher, prepared, precision)
    task = make_task(data, prepared.codes, estimates, len(report.old_codes), refine, device)

    def progress(iteration: int, total: int, losses: dict[str, float]) -> None:
        timer.report("refine", iteration, total, iteration, losses)

    result = train_crop_network(
        crop_net, crop_teacher, task, strategy, refine, config, precision, rng, progress, state, save
    )
    report.refine_history = result.history
    return crop_net


# ---- stage I --------------------------------------------------------------------------------------------


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
    ka = _stage_one(teacher, prepared, data, config, rng, sampler, _Timer(None), None, report)
    return FittedKANet(ka, codes, report.triplets, report.kanet_loss)


def _stage_one(
    teacher: LandmarkNet,
    prepared: PreparedData,
    data: StepData,
    config: TrainConfig,
    rng: np.random.Generator,
    sampler: BatchSampler,
    timer: _Timer,
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
    old_pts = _teacher_points(teacher, prepared, precision)
    spacing = np.where(np.isfinite(data.spacing_mm), data.spacing_mm, 1.0)[:, None, :]
    new_pts = data.select(new_codes).keypoints * spacing
    old_pts = old_pts * spacing
    return select_triplets(
        {c: old_pts[:, i] for i, c in enumerate(old_codes)},
        {c: new_pts[:, i] for i, c in enumerate(new_codes)},
        max_triplets=max_triplets,
    )


def _teacher_points(teacher: LandmarkNet, prepared: PreparedData, precision: Resolved) -> np.ndarray:
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
    timer: _Timer,
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
        target = _ka_target(t_hm.float()[:, ka.old], codec, config)
        predicted, mask = ka_prediction(ka, feats, batch)
        loss = config.gt_scale * heatmap_mse(predicted, target, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        last = loss.item()
        if (it + 1) % 10 == 0 or it + 1 == kc.iterations:
            timer.report("kanet", it + 1, kc.iterations, it + 1, {"ka_net": last})
    return last


def _ka_target(old_heatmaps: torch.Tensor, codec: HeatmapCodec, config: TrainConfig) -> torch.Tensor:
    """Stage I's pseudo-label of each triplet's old landmark, (B, N, h, w), from the old model's heatmaps of
    them (B, N, h, w): the heatmaps as they are, or unit-peak Gaussians at their decoded peaks."""
    if config.kanet.target != "gaussian":
        return old_heatmaps
    with torch.no_grad():
        peaks, _ = codec.decode(old_heatmaps)
        return codec.encode(peaks).to(old_heatmaps.device)


# ---- helpers --------------------------------------------------------------------------------------------


def _initial_student(
    previous: Checkpoint | None, backbone: BackboneConfig, config: TrainConfig, device: torch.device
) -> LandmarkNet:
    if previous is not None and config.init == "previous":
        return copy.deepcopy(previous.build_model(device)).train()
    sizes = previous.step_sizes if previous else []
    fresh_backbone = backbone
    if previous is not None and backbone.pretrained and not Path(backbone.pretrained).is_file():
        fresh_backbone = BackboneConfig(name=backbone.name, in_channels=backbone.in_channels)
    return LandmarkNet(backbone=fresh_backbone, step_sizes=sizes).to(device).train()


class _Timer:
    """Reports progress with each stage's ETA from its first iteration: the stage's mean time per iteration
    so far, and once past WARM_UP iterations, the mean since then (the first iterations are slower)."""

    WARM_UP = 10

    def __init__(self, callback: ProgressCallback | None) -> None:
        self.callback = callback
        self.t0 = time.perf_counter()
        self.last = self.t0  # the previous report's time: where the next stage starts
        self.stage: str | None = None
        self.start = self.t0
        self.warm: tuple[float, int] | None = None

    def report(self, stage: str, done: int, todo: int, iteration: int, losses: dict[str, float]) -> None:
        if self.callback is None:
            return
        now = time.perf_counter()
        if stage != self.stage:
            self.stage, self.start, self.warm = stage, self.last, None
        if self.warm is None and done >= self.WARM_UP:
            self.warm = (now, done)
        if self.warm is not None and done > self.warm[1]:
            rate = (now - self.warm[0]) / (done - self.warm[1])
        else:
            rate = (now - self.start) / max(1, done)
        self.last = now
        self.callback(
            Progress(
                stage,
                iteration,
                todo if stage == "kanet" else todo + iteration - done,
                losses,
                now - self.t0,
                rate * (todo - done),
            )
        )


def _fingerprint(
    previous: Checkpoint | None,
    data: StepData,
    strategy: str,
    config: TrainConfig,
    codes: list[str],
    refine: RefineConfig | None,
) -> str:
    h = hashlib.sha256()
    inputs = [previous.sha256 if previous else None, strategy, to_dict(config), codes, list(data.ids)]
    if refine is not None:  # the local stage of step 0 is an input too (later steps take it from `previous`)
        inputs.append(to_dict(refine))
    h.update(
        json.dumps(
            inputs,
            sort_keys=True,
            default=str,
        ).encode()
    )
    h.update(np.ascontiguousarray(np.nan_to_num(data.keypoints, nan=-1.0)).tobytes())
    return h.hexdigest()


def _ka_state(ka: KAContext | None, report: TrainReport) -> dict[str, Any]:
    if ka is None:
        return {}
    return {
        "kanet": ka.kanet.state_dict(),
        "triplets": [list(t) for t in report.triplets],
        "kanet_loss": report.kanet_loss,
    }


def _load_state(path: str | Path | None, fingerprint: str) -> dict[str, Any] | None:
    if not path or not Path(path).is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("fingerprint") != fingerprint:
        return None  # a state of other inputs: start over (and overwrite it at the first save)
    return state


def _save_state(path: str | Path, state: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


__all__ = ["Progress", "TrainReport", "train_step"]
