"""What every training loop of a step shares: its learning-rate schedule and its optimisation step."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


def warmup_cosine(iterations: int, warmup: int) -> Callable[[int], float]:
    """LambdaLR factor: linear warm-up over `warmup` iterations, then cosine decay to 1% of the base rate."""

    def f(it: int) -> float:
        if it < warmup:
            return (it + 1) / warmup
        span = max(1, iterations - warmup)
        progress = min(1.0, (it - warmup) / span)
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress))

    return f


def optimise(
    loss: torch.Tensor,
    parts: dict[str, float],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    running: dict[str, float],
    where: str,
) -> None:
    """One step on `loss` (FloatingPointError, naming `where`, if it is not finite), its `parts` added to the
    `running` sums of the log."""
    if not torch.isfinite(loss):
        raise FloatingPointError(f"loss became {float(loss)} {where}: {parts}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    scheduler.step()
    for name, value in parts.items():
        running[name] = running.get(name, 0.0) + value
