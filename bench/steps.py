"""How the benchmark sets up each step of a protocol: the images and labels a strategy trains on, and its
training configuration (the profile's settings, an arm's overrides, the oracle's budget)."""

from __future__ import annotations

from typing import Any

from models.config import TrainConfig, from_dict, to_dict
from models.datasets import DatasetInfo, Protocol
from models.registry import strategy as strategy_spec
from models.step_data import StepData

from .profiles import Profile, step_cap


def step_data(protocol: Protocol, ds: DatasetInfo, strategy: str, t: int, profile: Profile) -> StepData:
    """Training data of step t as each strategy sees it (IKL strategies: step t's images, new labels only), each
    step's images capped as the profile says (profiles.step_cap)."""

    def images(s: int) -> list[str]:
        return protocol.steps[s].images[: step_cap(profile, s)]

    data = strategy_spec(strategy).data
    if data == "joint":  # the oracle: every image so far with every landmark so far
        ids = [i for s in range(t + 1) for i in images(s)]
        return ds.step_data(ids, protocol.landmarks_up_to(t), protocol.annotator)
    if data == "joint_partial":  # kept old images, each with its own step's labels
        parts = [ds.step_data(images(s), protocol.steps[s].landmarks, protocol.annotator) for s in range(t + 1)]
        return StepData.concat(parts)
    return ds.step_data(images(t), protocol.steps[t].landmarks, protocol.annotator)


def train_config(
    profile: Profile, seed: int, t: int, device: str, overrides: dict[str, Any] | None = None
) -> TrainConfig:
    """The TrainConfig of step t: the profile's settings, then (steps >= 1) an arm's `overrides`, last, so that
    an override of a field the profile sets (iterations, lr, ...) holds too."""
    config = from_dict(TrainConfig, dict(profile.train) if t else {})
    config.iterations = profile.step0_iterations if t == 0 else profile.step_iterations
    config.batch_size = profile.batch_size
    config.lr = profile.lr
    config.seed = seed * 1000 + t
    config.device = device
    config.precision = profile.precision
    config.kanet.iterations = profile.kanet_iterations
    config.refine.iterations = profile.local_step0_iterations if t == 0 else profile.local_step_iterations
    return apply_overrides(config, overrides) if t and overrides else config


def apply_overrides(config: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """`config` with TrainConfig overrides set ("refine.alpha" sets one field of a nested config), checked."""
    fields = to_dict(config)
    for name, value in overrides.items():
        *parents, leaf = name.split(".")
        node = fields
        for part in parents:
            node = node[part]
        node[leaf] = value
    return from_dict(TrainConfig, fields)


def joint_budget(config: TrainConfig, profile: Profile, budget: str | None, t: int, sizes: list[int]) -> bool:
    """Set the iterations of a joint step t >= 1 by its `budget` (bench.arms.BUDGETS; None: the profile's step
    budget, as every strategy); True where the step trains from scratch. `sizes`: images of steps 0..t."""
    if budget is None or t == 0:
        return False
    seen = sum(sizes)
    if budget == "scratch":  # step 0's iterations per image, on every image so far
        config.iterations = round(profile.step0_iterations * seen / sizes[0])
        config.refine.iterations = round(profile.local_step0_iterations * seen / sizes[0])
        return True
    config.iterations = round(profile.step_iterations * seen / sizes[t])  # "grow"
    config.refine.iterations = round(profile.local_step_iterations * seen / sizes[t])
    return False
