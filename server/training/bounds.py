"""How much one training job may ask of the shared workers: the bounds on its TrainConfig."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from models.config import TrainConfig, from_dict

#: Seeds are drawn into numpy's and torch's generators, which take 32 and 64 bits.
MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class TrainingBounds:
    """The largest settings a submission may ask for (from the service's settings)."""

    max_iterations: int
    max_batch_size: int
    devices: tuple[str, ...]


def check_bounds(fields: dict[str, Any], bounds: TrainingBounds) -> None:
    """ValueError naming the first field of the (validated) TrainConfig `fields` outside its bounds."""
    config = from_dict(TrainConfig, fields)
    limits: list[tuple[str, float, float, float]] = [
        ("iterations", config.iterations, 1, bounds.max_iterations),
        ("kanet.iterations", config.kanet.iterations, 1, bounds.max_iterations),
        ("refine.iterations", config.refine.iterations, 1, bounds.max_iterations),
        ("batch_size", config.batch_size, 1, bounds.max_batch_size),
        ("refine.crops", config.refine.crops, 1, 8 * bounds.max_batch_size),
        ("warmup", config.warmup, 0, bounds.max_iterations),
        ("state_every", config.state_every, 0, bounds.max_iterations),
        ("seed", config.seed, 0, MAX_SEED),
    ]
    for name, value, low, high in limits:
        if not low <= value <= high:
            raise ValueError(f"TrainConfig field {name}: {value} is outside [{low}, {high}]")
    for name, value in (("lr", config.lr), ("kanet.lr", config.kanet.lr), ("refine.lr", config.refine.lr)):
        if not 0 < value <= 1:
            raise ValueError(f"TrainConfig field {name}: {value} is outside (0, 1]")
    if config.device not in bounds.devices:
        raise ValueError(f"TrainConfig field device: {config.device!r}; the workers offer {', '.join(bounds.devices)}")
