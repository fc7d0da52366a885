"""Benchmark profiles: model size, input size and optimisation budget of an IKL protocol run."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, replace
from typing import Any, cast

from models.config import PRECISIONS, Precision


@dataclass(frozen=True, kw_only=True)
class Profile:
    name: str
    backbone: str
    input_size: tuple[int, int]
    sigma: float = 2.0
    batch_size: int = 8
    #: Optimisation steps of step 0 (from scratch) and of every later step.
    step0_iterations: int
    step_iterations: int
    kanet_iterations: int
    lr: float = 2e-3
    #: Cap on the images of each step and of the test set (None: all); the smoke profile keeps runs tiny.
    max_step_images: int | None = None
    max_test_images: int | None = None
    #: TrainConfig overrides for every step after step 0 (alpha, temperature, ...).
    train: dict[str, Any] = field(default_factory=dict)
    #: Precision of training and evaluation (models.precision); results record it resolved ("bf16" or "fp32").
    precision: Precision = "auto"


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        backbone="hrnet_w18_tiny",
        input_size=(128, 160),
        batch_size=4,
        step0_iterations=30,
        step_iterations=12,
        kanet_iterations=6,
        max_step_images=8,
        max_test_images=6,
    ),
    # About 90 minutes for finetune, lwf, cpr, kamp and joint on cld38-5step on 2 CPU cores.
    "cpu": Profile(
        name="cpu",
        backbone="hrnet_w18_small",
        input_size=(160, 200),
        step0_iterations=1000,
        step_iterations=250,
        kanet_iterations=150,
    ),
    # Paper scale: HRNet-W32 at 512x640, ~100 epochs of a 40-image step at batch 8 = 500 iterations.
    "gpu": Profile(
        name="gpu",
        backbone="hrnet_w32",
        input_size=(512, 640),
        sigma=2.0,
        step0_iterations=3000,
        step_iterations=500,
        kanet_iterations=300,
        lr=1e-3,
    ),
}


def add_precision_argument(parser: argparse.ArgumentParser) -> None:
    """--precision: train and evaluate in another precision than the profile's."""
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="instead of the profile's (auto); a results folder holds runs of one resolved precision",
    )


def with_precision(profile: Profile, precision: str | None) -> Profile:
    """`profile`, in `precision` where one is given."""
    return replace(profile, precision=cast(Precision, precision)) if precision else profile
