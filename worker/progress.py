"""A training job's progress across all its stages: one fraction done and one ETA from the first iteration
on, and a short loss curve per stage, written into the job's `progress`.

Stages, in order: `kanet` (KAMP's stage I, steps after the first with an associating strategy), `train`
(stage II), `refine` (the local stage, when the model has one) and `validation` (both the new version and its
parent predict every validation study). A stage's cost is its iterations times its seconds per iteration:
measured once it runs; before, the same project's last version's (its train report), else the current stage's
rate, which is what the first seconds know. Validation's cost is counted in training iterations: a study is
predicted by two models, forward only, against a training iteration's forward and backward pass over a batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from models.config import TrainConfig
from models.strategies import ASSOCIATING

#: Points kept of each stage's loss curve; beyond, every other one is dropped (the curve keeps its shape).
CURVE_POINTS = 100
#: A training iteration's forward and backward pass, against one forward pass of one image.
TRAIN_PASS_COST = 3.0


@dataclass
class Stage:
    name: str
    iterations: float
    #: Seconds per iteration known before the stage runs (the project's last version), or None.
    prior_s: float | None = None


def planned_stages(
    config: TrainConfig,
    strategy: str,
    has_parent: bool,
    local_stage: bool,
    n_validation: int,
    last_report: dict[str, Any] | None = None,
) -> list[Stage]:
    """The stages a job will run, with prior seconds per iteration from the project's last train report."""
    prior = stage_rates(last_report or {})
    stages = []
    if has_parent and strategy in ASSOCIATING:
        stages.append(Stage("kanet", config.kanet.iterations, prior.get("kanet")))
    stages.append(Stage("train", config.iterations, prior.get("train")))
    if local_stage:
        stages.append(Stage("refine", config.refine.iterations, prior.get("refine")))
    stages.append(Stage("validation", 2 * n_validation / (TRAIN_PASS_COST * config.batch_size)))
    return stages


def stage_iterations(config: TrainConfig) -> dict[str, int]:
    """What a version's train report keeps so that the next job of its project knows each stage's rate."""
    return {"kanet": config.kanet.iterations, "train": config.iterations, "refine": config.refine.iterations}


def stage_rates(report: dict[str, Any]) -> dict[str, float]:
    """Seconds per iteration of each stage that a train report measured (see stage_iterations)."""
    iterations = {"train": report.get("iterations"), **report.get("stage_iterations", {})}
    seconds = {
        "kanet": report.get("kanet_seconds"),
        "train": report.get("seconds"),
        "refine": report.get("refine_seconds"),
    }
    return {k: float(seconds.get(k) or 0) / float(n) for k, n in iterations.items() if n and seconds.get(k)}


@dataclass
class JobProgress:
    """Turns each stage's (iteration, total) into the job's overall fraction and ETA."""

    stages: list[Stage]
    clock: Callable[[], float] = time.monotonic
    curves: dict[str, list[list[Any]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.started = self.clock()
        self.stage_started = self.started
        self.current = -1
        self.first: tuple[float, int] | None = None
        self.last_report = self.started
        self.spent: dict[str, float] = {}  # seconds of the stages that ended

    def enter(self, name: str) -> None:
        """A stage begins (stages before it that did not run, e.g. done by an earlier attempt, count as done)."""
        index = next((i for i, s in enumerate(self.stages) if s.name == name), self.current)
        if index == self.current:
            return
        # A stage begins where the one before ended, at its last report; the first one with the job (so the
        # data loading before its first iteration is its own).
        begun = self.last_report if self.current >= 0 else self.started
        if self.current >= 0:
            self.spent[self.stages[self.current].name] = begun - self.stage_started
        self.current, self.stage_started = index, begun
        self.first = None  # (time, iteration) of the stage's first report

    def update(self, name: str, iteration: int, total: int, losses: dict[str, float]) -> dict[str, Any]:
        """The overall figures after `iteration` of `total` in stage `name`: {"overall": 0..1, "overall_eta_s",
        "curve": {stage: [[iteration, losses]]}}."""
        self.enter(name)
        if self.current < 0:  # before the first stage: what the priors alone say
            priors = [s.prior_s for s in self.stages if s.name != "validation"]
            known = None not in priors
            eta = sum(self._estimate(s, 0.0) for s in self.stages) if known else None
            return {"overall": 0.0, "overall_eta_s": None if eta is None else round(eta, 1), "curve": self.curves}
        self._record(name, iteration, losses)
        rate = self._rate(iteration)
        now = self.last_report = self.clock()
        earlier = sum(self._estimate(s, rate or 0.0) for s in self.stages[: self.current])
        later = sum(self._estimate(s, rate or 0.0) for s in self.stages[self.current + 1 :])
        if rate is None:  # the stage has begun but done no iteration yet: priced like a stage to come
            done = earlier + (now - self.stage_started)
            left = self._estimate(self.stages[self.current], self._train_rate(0.0)) + later
        else:
            done = earlier + rate * iteration
            left = rate * max(0, total - iteration) + later
        overall = done / (done + left) if done + left > 0 else 0.0
        return {"overall": round(min(1.0, overall), 4), "overall_eta_s": round(left, 1), "curve": self.curves}

    def _rate(self, iteration: int) -> float | None:
        """Seconds per iteration of the running stage, None before its first iteration: between its first report
        and now once there are two (what came before the first iteration, loading data or a teacher, is not an
        iteration's), else since the stage began. Iterations count from where this attempt started (a retry
        resumes mid-stage)."""
        now = self.clock()
        if iteration <= 0:
            return None
        if self.first is None:
            self.first = (now, iteration)
            return (now - self.stage_started) / iteration
        t0, i0 = self.first
        if iteration > i0:
            return (now - t0) / (iteration - i0)
        return (now - self.stage_started) / iteration

    def _train_rate(self, current_rate: float) -> float:
        """Seconds per training iteration: measured if training ran here, else its prior, else `current_rate`."""
        train = next((s for s in self.stages if s.name == "train"), None)
        if train is None:
            return current_rate
        if train.name in self.spent and train.iterations:
            return self.spent[train.name] / train.iterations
        return train.prior_s if train.prior_s is not None else current_rate

    def _estimate(self, stage: Stage, current_rate: float) -> float:
        """Seconds of a stage: spent if it ended; else its iterations times its prior, else times the running
        stage's rate (validation's, which counts training iterations, times the training rate)."""
        if stage.name in self.spent:
            return self.spent[stage.name]
        if stage.name == "validation":
            return stage.iterations * self._train_rate(current_rate)
        return stage.iterations * (stage.prior_s if stage.prior_s is not None else current_rate)

    def _record(self, name: str, iteration: int, losses: dict[str, float]) -> None:
        if not losses:
            return
        curve = self.curves.setdefault(name, [])
        curve.append([iteration, {k: round(v, 5) for k, v in losses.items()}])
        if len(curve) > CURVE_POINTS:
            del curve[1::2]
