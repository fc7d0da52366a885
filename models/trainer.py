"""One incremental step: `train_step(previous checkpoint or None, step data, strategy, config)`.

Stage I (KAMP only, models.stage_one): train KA-Net on the step's images to map (old features, new labels) to
the old model's heatmap of an associated old landmark. Stage II (`_fit`): train the new model with the
strategy's loss (models.strategies). Then, for a two-stage model, the local stage (models.refine_training). The
previous model and KA-Net are frozen teachers in eval mode throughout. A training-state file (models.train_state)
lets an interrupted step resume where it stopped.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .batches import Batch, BatchSampler, PreparedData
from .checkpoint import REFINER_PREFIX, Checkpoint, LandmarkInfo
from .codec import HeatmapCodec
from .config import BackboneConfig, CodecConfig, RefineConfig, TrainConfig, to_dict
from .network import LandmarkNet
from .optimise import optimise, warmup_cosine
from .precision import Resolved, autocast, prepare_input, prepare_module, resolve_device, resolve_precision
from .refine import build_crop_network
from .refine_training import make_task, train_crop_network
from .registry import strategy as strategy_spec
from .stage_one import FittedKANet, fit_ka_net, ka_target, stage_one, teacher_points
from .step_data import StepData
from .step_report import Progress, ProgressCallback, StepTimer, TrainReport
from .strategies import ASSOCIATING, DISTILLING, KAContext, StepOutputs, step_loss
from .train_state import fingerprint, ka_state, load_state, save_state

__all__ = ["FittedKANet", "Progress", "TrainReport", "fit_ka_net", "resolve_device", "train_step"]


@dataclass
class _StepRun:
    """What the stages of one step share: its inputs resolved, the networks, the data and the resumable state."""

    previous: Checkpoint | None
    data: StepData
    strategy: str
    config: TrainConfig
    device: torch.device
    precision: Resolved
    rng: np.random.Generator
    step: int
    backbone: BackboneConfig
    codec: CodecConfig
    refine: RefineConfig | None
    heatmaps: HeatmapCodec
    prepared: PreparedData
    teacher: LandmarkNet | None
    student: LandmarkNet
    sampler: BatchSampler
    timer: StepTimer
    report: TrainReport
    fingerprint: str
    state: dict[str, Any] | None
    state_path: str | Path | None
    ka: KAContext | None = None

    def save(self, stage: str, **values: Any) -> None:
        """Write the training state of `stage` (nothing without a state file or with state_every 0)."""
        if self.state_path and self.config.state_every:
            state = {"fingerprint": self.fingerprint, "stage": stage, "history": self.report.loss_history}
            save_state(self.state_path, state | values | ka_state(self.ka, self.report))


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
        strategy: one of models.registry.STRATEGIES.
        refine: step 0 only: the local stage's network and crops (models.refine); None gives a one-stage model.
        names: optional landmark code -> human-readable name, stored in the checkpoint.
        progress: called with a Progress every few iterations.
        state_path: training-state file; written every config.state_every iterations and resumed from when
            it exists and matches this call's inputs. Removed when the step completes.
    Returns:
        (the new checkpoint, whose parent_sha256 is previous's hash; a TrainReport).
    """
    started = time.perf_counter()
    run = _prepare(previous, data, strategy, config, backbone, codec, refine, progress, state_path)
    if run.teacher is not None and strategy in ASSOCIATING and run.report.new_codes:
        t_ka = time.perf_counter()
        run.ka = stage_one(
            run.teacher, run.prepared, data, config, run.rng, run.sampler, run.timer, run.state, run.report
        )
        run.report.kanet_seconds = time.perf_counter() - t_ka
    _fit(run)
    crop_net = None
    if run.refine is not None:
        t_refine = time.perf_counter()
        crop_net = _fit_local(run)
        run.report.refine_seconds = time.perf_counter() - t_refine
    run.report.total_seconds = time.perf_counter() - started
    checkpoint = _checkpoint(run, crop_net, names or {})
    if state_path:
        Path(state_path).unlink(missing_ok=True)
    return checkpoint, run.report


def _prepare(
    previous: Checkpoint | None,
    data: StepData,
    strategy: str,
    config: TrainConfig,
    backbone: BackboneConfig | None,
    codec: CodecConfig | None,
    refine: RefineConfig | None,
    progress: ProgressCallback | None,
    state_path: str | Path | None,
) -> _StepRun:
    """The step's inputs checked and resolved, the teacher and the student built, the state file read."""
    strategy_spec(strategy)  # ValueError for an unknown one
    if len(data) == 0:
        raise ValueError("a training step needs at least one image")
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    old_codes = previous.codes if previous else []
    new_codes = [c for c in data.codes if c not in old_codes]
    codes = old_codes + new_codes
    if not data.select(codes).labelled.any(axis=0).any():
        raise ValueError("the step's data has no labelled landmark")
    if previous is None and not new_codes:
        raise ValueError("step 0 needs at least one landmark")
    codec_config = previous.codec if previous else (codec or CodecConfig())
    backbone = previous.backbone if previous else (backbone or BackboneConfig())
    refine_config = previous.refine if previous else refine
    heatmaps = HeatmapCodec(codec_config)
    prepared = PreparedData(data, codes, heatmaps)
    teacher = previous.build_frozen(device, precision) if previous and strategy in DISTILLING else None
    student = _initial_student(previous, backbone, config, device)
    if new_codes:
        student.head.grow(len(new_codes))
    prepare_module(student, precision)
    step = previous.step + 1 if previous else 0
    report = TrainReport(
        strategy, step, new_codes, old_codes, len(data), config.iterations, 0.0, 0.0, str(device), precision
    )
    key = fingerprint(previous, data, strategy, config, codes, refine_config, backbone, codec_config)
    return _StepRun(
        previous, data, strategy, config, device, precision, rng, step, backbone, codec_config, refine_config,
        heatmaps, prepared, teacher, student, BatchSampler(len(prepared), config.batch_size, rng),
        StepTimer(progress), report, key, load_state(state_path, key), state_path,
    )  # fmt: skip


# ---- stage II -------------------------------------------------------------------------------------------


def _fit(run: _StepRun) -> None:
    """Stage II: the student trained with the strategy's loss for config.iterations (from where a state stopped)."""
    config, report = run.config, run.report
    optimizer = torch.optim.Adam(run.student.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(config.iterations, config.warmup))
    start = _resume_fit(run, optimizer, scheduler)
    run.student.train()
    # Loss sums since the last log entry; part of the training state so a resumed run logs the same means.
    resumed = run.state if start and run.state is not None else {}
    running: dict[str, float] = dict(resumed.get("running", {}))
    count = int(resumed.get("count", 0))
    t0 = time.perf_counter()
    for it in range(start, config.iterations):
        batch = run.prepared.batch(run.sampler.next(), config.augment, run.rng, run.device)
        loss, parts = step_loss(run.strategy, config, batch, _forward(run, batch), len(report.old_codes), run.ka)
        optimise(loss, parts, optimizer, scheduler, running, f"at iteration {it}")
        count += 1
        logged = (it + 1) % 10 == 0 or it + 1 == config.iterations
        if logged:
            means = {k: v / count for k, v in running.items()}
            report.loss_history.append({"iteration": it + 1, **means})
            running, count = {}, 0
        if config.state_every and (it + 1) % config.state_every == 0 and it + 1 < config.iterations:
            # Saved before the progress callback, which may raise to cancel: a cancel loses no saved work.
            run.save(
                "train", iteration=it + 1, student=run.student.state_dict(), optimizer=optimizer.state_dict(),
                scheduler=scheduler.state_dict(), sampler=run.sampler.state(), running=running, count=count,
            )  # fmt: skip
        if logged:
            run.timer.report("train", it + 1 - start, config.iterations - start, it + 1, means)
    report.seconds = time.perf_counter() - t0
    report.seconds_per_image = report.seconds / max(1, (config.iterations - start) * run.sampler.batch_size)
    run.student.eval()


def _resume_fit(run: _StepRun, optimizer: torch.optim.Optimizer, scheduler: Any) -> int:
    """Stage II's first iteration: 0, or where the training state stopped (all of it if the local stage had
    begun), with the networks, optimiser, schedule and sampler restored."""
    state = run.state
    if state is None or state.get("stage") not in ("train", "refine"):
        return 0
    run.student.load_state_dict(state["student"])
    run.report.loss_history = state["history"]
    if state["stage"] == "refine":  # stage II had finished
        run.report.resumed_from = run.config.iterations
        return run.config.iterations
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    run.sampler.restore(state["sampler"])
    run.report.resumed_from = int(state["iteration"])
    return run.report.resumed_from


def _forward(run: _StepRun, batch: Batch) -> StepOutputs:
    """One batch through the student (and the teacher when there are old landmarks), in the step's precision;
    the outputs the loss reads, in float32."""
    num_old, ka, config = len(run.report.old_codes), run.ka, run.config
    # The new model's features F' are an input of l_KA (reading "features") and of l_FD.
    wants_features = (ka is not None and config.ka_mode == "features") or bool(
        config.feature_weight and run.teacher is not None and num_old
    )
    x = prepare_input(batch.x, run.precision)
    with autocast(run.device, run.precision):
        s_feat = None
        if wants_features:
            hm, s_feat = run.student.forward_with_features(x)
        else:
            hm = run.student(x)
        t_hm = t_feat = None
        if run.teacher is not None and num_old:
            with torch.no_grad():
                t_hm, t_feat = run.teacher.forward_with_features(x)
    # From here on float32: the losses read the network's outputs cast back (KA-Net's pass inside l_KA runs in
    # the same precision, models.strategies.ka_prediction).
    target = None
    if ka is not None and t_hm is not None and s_feat is not None:
        target = ka_target(t_hm.float()[:, ka.old], run.heatmaps, config)
    return StepOutputs(
        student=hm.float(),
        teacher=None if t_hm is None else t_hm.float(),
        teacher_features=None if t_feat is None else t_feat.float(),
        student_features=None if s_feat is None else s_feat.float(),
        ka_target=target,
    )


# ---- the local stage ------------------------------------------------------------------------------------


def _fit_local(run: _StepRun) -> LandmarkNet:
    """Train the step's crop network (models.refine_training): from the previous one (or fresh), its head grown
    by the step's new landmarks; distilling from the previous one on crops around the teacher's estimates;
    resumable from the training state's "refine" part."""
    previous, refine, report = run.previous, run.refine, run.report
    assert refine is not None
    if previous is not None and previous.refine is not None and run.config.init == "previous":
        crop_net = previous.build_crop_network(run.device).train()
    else:
        crop_net = build_crop_network(refine, previous.step_sizes if previous else []).to(run.device)
    if report.new_codes:
        crop_net.head.grow(len(report.new_codes))
    prepare_module(crop_net, run.precision)
    crop_teacher = estimates = None
    if run.teacher is not None and previous is not None and previous.refine is not None and report.old_codes:
        crop_teacher = previous.build_frozen_crop_network(run.device, run.precision)
        estimates = teacher_points(run.teacher, run.prepared, run.precision)
    task = make_task(run.data, run.prepared.codes, estimates, len(report.old_codes), refine, run.device)
    state = run.state
    resumed = state.get("refine") if state is not None and state.get("stage") == "refine" else None

    def progress(iteration: int, total: int, losses: dict[str, float]) -> None:
        run.timer.report("refine", iteration, total, iteration, losses)

    def save(partial: dict[str, Any]) -> None:
        run.save("refine", student=run.student.state_dict(), refine=partial)

    result = train_crop_network(
        crop_net, crop_teacher, task, run.strategy, refine, run.config, run.precision, run.rng, progress, resumed, save
    )
    report.refine_history = result.history
    return crop_net


# ---- the checkpoint -------------------------------------------------------------------------------------


def _checkpoint(run: _StepRun, crop_net: LandmarkNet | None, names: dict[str, str]) -> Checkpoint:
    """The step's checkpoint: both stages' weights, the landmarks with their steps and names, the configs."""
    previous = run.previous
    landmarks = [
        LandmarkInfo(code=lm.code, step=lm.step, name=lm.name) for lm in (previous.landmarks if previous else [])
    ]
    landmarks += [LandmarkInfo(code=c, step=run.step, name=names.get(c, "")) for c in run.report.new_codes]
    weights = {k: v.detach().cpu().contiguous() for k, v in run.student.state_dict().items()}
    if crop_net is not None:
        weights |= {REFINER_PREFIX + k: v.detach().cpu().contiguous() for k, v in crop_net.state_dict().items()}
    return Checkpoint(
        state_dict=weights,
        landmarks=landmarks,
        backbone=run.backbone,
        codec=run.codec,
        refine=run.refine,
        step=run.step,
        strategy=run.strategy,
        parent_sha256=previous.sha256 if previous else None,
        train_config=to_dict(run.config),
        report=run.report.to_dict(),
    )


def _initial_student(
    previous: Checkpoint | None, backbone: BackboneConfig, config: TrainConfig, device: torch.device
) -> LandmarkNet:
    if previous is not None and config.init == "previous":
        return copy.deepcopy(previous.build_model(device)).train()
    sizes = previous.step_sizes if previous else []
    fresh_backbone = backbone
    if previous is not None and backbone.pretrained and not Path(backbone.pretrained).is_file():
        fresh_backbone = replace(backbone, pretrained=None)
    return LandmarkNet(backbone=fresh_backbone, step_sizes=sizes).to(device).train()
