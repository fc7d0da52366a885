"""What a training step reports while it runs (Progress, to a callback, with each stage's ETA) and when it ends
(TrainReport, kept in the checkpoint and the service's version)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .precision import Resolved
from .triplets import Triplet


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


class StepTimer:
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
