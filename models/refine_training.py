"""Training of the local stage within one incremental step (models.trainer.train_step calls it last).

Each iteration draws `RefineTrainConfig.crops` crops:
  - label crops: around a labelled landmark of the step's images (the new landmarks; every labelled one for the
    joint baselines), offset by a random jitter of the first stage's size, trained on l_GT of that landmark's
    channel;
  - distillation crops (distilling strategies, old landmarks): around the previous model's own first-stage
    estimate of an old landmark in the step's images (the step has no label for it), jittered alike.
Every crop then takes the strategy's loss as the first stage does (models.strategies.step_loss): l_GT on the
labelled (crop, channel) pairs and the strategy's distillation of the previous crop network's old channels on
every crop. KAMP's l_KA acts on the first stage only: a crop holds one landmark and no pair to associate it with,
so the kamp strategies distil the crops by l_KSD alone.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .augment import jitter_intensity
from .batches import Batch, labelled_batch
from .codec import HeatmapCodec
from .config import RefineConfig, TrainConfig
from .crops import CropSource, crop_affine, image_pixels_per_crop_pixel
from .network import LandmarkNet
from .optimise import optimise, warmup_cosine
from .precision import Resolved, autocast, prepare_input
from .refine import crop_codec
from .step_data import StepData
from .strategies import DISTILLING, StepOutputs, step_loss

#: Called with (iteration, total, mean losses of the last 10 iterations).
RefineProgress = Callable[[int, int, dict[str, float]], None]


@dataclass
class CropTask:
    """What one step's crops are drawn from. points: (N, K, 2) image pixels of the step's images in model code
    order, label crops' centres where `labelled` (N, K) and distillation centres (the previous model's
    estimates) in the old channels where `distilled` (N, K) holds."""

    sources: list[CropSource]
    spacing: np.ndarray  # (N, 2) mm/px, NaN where unknown
    labels: np.ndarray  # (N, K, 2) image pixels, NaN where unlabelled
    estimates: np.ndarray | None  # (N, K_old, 2) the previous model's first-stage estimates, image pixels
    num_old: int

    @property
    def label_pairs(self) -> np.ndarray:
        """(P, 2) (image, channel) pairs with a label."""
        return np.argwhere(np.isfinite(self.labels).all(-1))

    @property
    def distill_pairs(self) -> np.ndarray:
        """(Q, 2) (image, old channel) pairs with a finite estimate inside the image."""
        if self.estimates is None or not self.num_old:
            return np.zeros((0, 2), dtype=int)
        inside = np.stack([s.inside(e) for s, e in zip(self.sources, self.estimates, strict=True)])
        return np.argwhere(inside)


@dataclass
class RefineResult:
    seconds: float = 0.0
    iterations: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


def make_task(
    data: StepData,
    codes: list[str],
    estimates: np.ndarray | None,
    num_old: int,
    config: RefineConfig,
    device: torch.device,
) -> CropTask:
    """The crop task of a step: its images as crop sources, labels in `codes` order, old estimates."""
    sources = [
        CropSource.from_image(im, config, sp, device) for im, sp in zip(data.images, data.spacing_mm, strict=True)
    ]
    return CropTask(sources, data.spacing_mm, data.select(codes).keypoints, estimates, num_old)


def draw_batch(
    task: CropTask,
    config: RefineConfig,
    train: TrainConfig,
    codec: HeatmapCodec,
    num_landmarks: int,
    rng: np.random.Generator,
    device: torch.device,
) -> Batch:
    """One batch of crops: x (M, 1, S, S), targets (M, K, h, w) with each label crop's own channel, mask (M, K)
    True on (crop, own channel) where that crop is a label crop and the label lies inside it."""
    rc = train.refine
    labels, distill = task.label_pairs, task.distill_pairs
    n_distill = round(rc.crops * rc.distill_share) if len(distill) else 0
    if not len(labels):
        n_distill = rc.crops
    picks = [(labels[i], True) for i in rng.integers(0, len(labels), rc.crops - n_distill)] if len(labels) else []
    picks += [(distill[i], False) for i in rng.integers(0, len(distill), n_distill)] if len(distill) else []
    k = num_landmarks
    s = config.crop_size
    affines = []
    kp = np.full((len(picks), k, 2), np.nan)
    for m, ((i, j), is_label) in enumerate(picks):
        sp = task.spacing[i]
        centre = task.labels[i, j] if is_label else task.estimates[i, j]  # type: ignore[index]
        kx, ky = image_pixels_per_crop_pixel(config, sp)
        wide = rc.jitter_wide and rng.random() < rc.jitter_wide
        offset = (rng.uniform(-0.4, 0.4, size=2) * s if wide else rng.normal(0.0, rc.jitter, size=2)) * (kx, ky)
        angle = np.deg2rad(rng.uniform(-rc.rotation_deg, rc.rotation_deg))
        affine = crop_affine(config, centre + offset, sp, angle, rng.uniform(1 - rc.scale, 1 + rc.scale))
        affines.append(affine)
        if is_label:
            kp[m, j] = affine.apply(task.labels[i, j])
    x = torch.zeros(len(picks), 1, s, s, device=device)
    for i in {int(i) for (i, _), _ in picks}:  # one sampling pass per image
        rows = [m for m, ((image, _), _) in enumerate(picks) if image == i]
        x[rows] = task.sources[i].crops([affines[m] for m in rows], s)
    x = jitter_intensity(x, train.augment, rng) if train.augment.enabled else x
    return labelled_batch(x, kp, codec, device)


def train_crop_network(
    student: LandmarkNet,
    teacher: LandmarkNet | None,
    task: CropTask,
    strategy: str,
    config: RefineConfig,
    train: TrainConfig,
    precision: Resolved,
    rng: np.random.Generator,
    progress: RefineProgress | None = None,
    state: dict[str, Any] | None = None,
    save: Callable[[dict[str, Any]], None] | None = None,
) -> RefineResult:
    """Train `student` (in place) for train.refine.iterations on crops of `task` with `strategy`'s loss;
    `teacher` is the previous model's frozen crop network (distilling strategies).

    `save`, if given, receives a resumable state every train.state_every iterations (before `progress`, which
    may raise to cancel); passing it back as `state` resumes there, with the same random draws."""
    rc = train.refine
    device = next(student.parameters()).device
    codec = crop_codec(config, student.stride)
    loss_config = _loss_config(train)
    num_old = task.num_old if teacher is not None and strategy in DISTILLING else 0
    optimizer = torch.optim.Adam(student.parameters(), lr=rc.lr)
    schedule = warmup_cosine(rc.iterations, max(1, min(50, rc.iterations // 10)))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    result = RefineResult(iterations=rc.iterations)
    start = _resume(state, student, optimizer, scheduler, rng, result)
    student.train()
    running: dict[str, float] = {}
    count = 0
    t0 = time.perf_counter()
    for it in range(start, rc.iterations):
        batch = draw_batch(task, config, train, codec, student.head.num_landmarks, rng, device)
        outputs = _forward(student, teacher, batch, num_old, precision)
        loss, parts = step_loss(strategy, loss_config, batch, outputs, num_old)
        optimise(loss, parts, optimizer, scheduler, running, f"in the local stage at iteration {it}")
        count += 1
        if (it + 1) % 10 and it + 1 < rc.iterations:
            continue
        means = {name: v / count for name, v in running.items()}
        result.history.append({"iteration": it + 1, **means})
        running, count = {}, 0
        if save is not None and train.state_every and (it + 1) % train.state_every == 0 and it + 1 < rc.iterations:
            save(
                {
                    "iteration": it + 1,
                    "student": student.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "rng": rng.bit_generator.state,
                    "history": result.history,
                }
            )
        if progress is not None:
            progress(it + 1, rc.iterations, means)
    result.seconds = time.perf_counter() - t0
    student.eval()
    return result


def _loss_config(train: TrainConfig) -> TrainConfig:
    """The strategy's loss settings for crops: the local stage's own distillation weight (when it has one), and
    no l_FD (l_KA is the first stage's too: crop batches hold no triplet)."""
    alpha = train.alpha if train.refine.alpha is None else train.refine.alpha
    return dataclasses.replace(train, feature_weight=0.0, alpha=alpha)


def _resume(
    state: dict[str, Any] | None,
    student: LandmarkNet,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    rng: np.random.Generator,
    result: RefineResult,
) -> int:
    """The first iteration: 0, or where `state` stopped, with the network, optimiser, schedule, random
    generator and history restored."""
    if state is None:
        return 0
    student.load_state_dict(state["student"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    rng.bit_generator.state = state["rng"]
    result.history = list(state["history"])
    return int(state["iteration"])


def _forward(
    student: LandmarkNet, teacher: LandmarkNet | None, batch: Batch, num_old: int, precision: Resolved
) -> StepOutputs:
    """One crop batch through the student (and the teacher's old channels when it distils), in `precision`;
    the heatmaps the loss reads, float32."""
    device = batch.x.device
    x = prepare_input(batch.x, precision)
    with autocast(device, precision):
        hm = student(x)
        t_hm = None
        if num_old and teacher is not None:
            with torch.no_grad():
                t_hm = teacher(x)[:, :num_old]
    return StepOutputs(hm.float(), None if t_hm is None else t_hm.float())


__all__ = ["CropTask", "RefineResult", "draw_batch", "make_task", "train_crop_network"]
