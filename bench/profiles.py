"""Benchmark profiles: model size, input size and optimisation budget of an IKL protocol run."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, cast

from models.config import PRECISIONS, BackboneConfig, Precision, RefineConfig, local_stage_config
from models.precision import resolve_precision
from models.trainer import resolve_device

from .jsonio import write_json


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
    #: Cap on the images of each incremental step (steps >= 1; the low-shot profiles), after max_step_images.
    max_incremental_images: int | None = None
    #: TrainConfig overrides for every step after step 0 (alpha, temperature, ...).
    train: dict[str, Any] = field(default_factory=dict)
    #: Precision of training and evaluation (models.precision); results record it resolved ("bf16" or "fp32").
    precision: Precision = "auto"
    #: The local stage (models.refine): RefineConfig overrides ({} = its defaults), or None for one-stage models;
    #: its training iterations at step 0 and at every later step.
    local_stage: dict[str, Any] | None = None
    local_step0_iterations: int = 1000
    local_step_iterations: int = 500
    #: BackboneConfig.last_relu of both stages (the local stage's unless its overrides name it).
    last_relu: bool = True
    #: BackboneConfig.head_channels of the first stage (0: its 1x1 convs read the backbone's features).
    head_channels: int = 0
    #: The profile whose step 0 this one's is (the two differ only after step 0): bench/ikl.py takes each seed's
    #: step-0 model and evaluation from that profile's folder where they exist instead of training it again.
    step0_of: str | None = None

    def backbone_config(self) -> BackboneConfig:
        return BackboneConfig(name=self.backbone, last_relu=self.last_relu, head_channels=self.head_channels)

    def refine_config(self) -> RefineConfig | None:
        if self.local_stage is None:
            return None
        return local_stage_config(self.local_stage, last_relu=self.last_relu)


#: Fields added to Profile after results folders were written: a stored profile.json without them holds runs
#: of these values.
LATER_FIELDS: dict[str, Any] = {
    "local_stage": None,
    "local_step0_iterations": 1000,
    "local_step_iterations": 500,
    "max_incremental_images": None,
    "last_relu": True,
    "step0_of": None,
    "head_channels": 0,
}

#: Profile fields that do not change step 0: a profile differing from another only in these shares its step 0
#: (Profile.step0_of).
STEP0_FREE = frozenset(
    {
        "name",
        "step0_of",
        "max_incremental_images",
        "train",
        "step_iterations",
        "kanet_iterations",
        "local_step_iterations",
    }
)


def step_cap(profile: Profile, s: int) -> int | None:
    """How many of step s's training images a profile trains on (None: all), the first ones of its list."""
    caps = [c for c in (profile.max_step_images, profile.max_incremental_images if s else None) if c is not None]
    return min(caps) if caps else None


# About 90 minutes for finetune, lwf, cpr, kamp and joint on cld38-5step on 2 CPU cores.
CPU = Profile(
    name="cpu",
    backbone="hrnet_w18_small",
    input_size=(160, 200),
    step0_iterations=1000,
    step_iterations=250,
    kanet_iterations=150,
)

CPU_LOCAL = replace(
    CPU,
    name="cpu-local",
    input_size=(256, 320),
    local_stage={},
    local_step0_iterations=1000,
    local_step_iterations=500,
)

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
    "cpu": CPU,
    # The cpu profile with a local stage (crops at the image's own resolution refined by a second network), its
    # first stage at 256x320: on step 0's held-out images the local stage's large errors are the first stage's
    # (docs/benchmarks.md), and in bf16 the larger input costs 1.35x the time per image.
    "cpu-local": CPU_LOCAL,
    # cpu-local with both stages' heads reading the backbone's features before its last ReLU: a landmark added
    # where earlier steps drove those features to zero still gets a gradient (docs/method.md, Network).
    "cpu-local-preact": replace(CPU_LOCAL, name="cpu-local-preact", last_relu=False),
    # cpu-local-preact with a hidden layer of 128 channels in the first stage's head: heatmaps no longer confined
    # to rank 19, which caps any model that trains more than 19 landmarks at once (docs/benchmarks.md, the oracle).
    "cpu-local-preact-head": replace(CPU_LOCAL, name="cpu-local-preact-head", last_relu=False, head_channels=128),
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


# Low-shot IKL as in the KAMP paper: each incremental step learns its landmarks from 1, 5, 10 or 50 images (step 0
# keeps all of its own), on the network new projects train (cpu-local-preact-head), whose step-0 models they share.
for _shots in (1, 5, 10, 50):
    PROFILES[f"lowshot-{_shots}"] = replace(
        PROFILES["cpu-local-preact-head"],
        name=f"lowshot-{_shots}",
        max_incremental_images=_shots,
        step0_of="cpu-local-preact-head",
    )


def add_precision_argument(parser: argparse.ArgumentParser) -> None:
    """--precision: train and evaluate in another precision than the profile's."""
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="instead of the profile's (auto); a results folder holds runs of one resolved precision",
    )


def add_candidate_precision_argument(parser: argparse.ArgumentParser) -> None:
    """--candidate-precision: model-choice candidates trained in another precision than their folder's."""
    parser.add_argument(
        "--candidate-precision",
        choices=PRECISIONS,
        help="train and measure the candidates in this precision instead of the folder's (e.g. fp32 on a CPU "
        "whose bf16 is emulated); each candidate records its own",
    )


def with_precision(profile: Profile, precision: str | None) -> Profile:
    """`profile`, in `precision` where one is given."""
    return replace(profile, precision=cast(Precision, precision)) if precision else profile


# ---- the profile a results folder is bound to (profile.json) ----


def checked_profile(profile: Profile, device: str) -> dict[str, Any]:
    """The settings a results folder is bound to: the profile's, with its precision as it resolves on `device`."""
    return {**asdict(profile), "precision": resolve_precision(profile.precision, resolve_device(device))}


def stored_profile(out: Path) -> dict[str, Any] | None:
    """The settings a results folder holds runs of (profile.json), or None for a new folder."""
    path = out / "profile.json"
    if not path.is_file():
        return None
    stored = json.loads(path.read_text())
    # Folders written before the precision setting hold runs that trained in float32 on the CPU.
    stored.setdefault("precision", "fp32")
    return stored


def with_later_fields(stored: dict[str, Any], fields: Iterable[str] = LATER_FIELDS) -> dict[str, Any]:
    """`stored` settings with each of `fields` added to profiles since it was written at its earlier value
    (LATER_FIELDS): a folder written before a field holds runs of that value."""
    return {**stored, **{k: LATER_FIELDS[k] for k in fields if k in LATER_FIELDS and k not in stored}}


def check_profile(out: Path, profile: dict[str, Any]) -> None:
    """Results of one folder must come from one profile: refuse to mix in runs of changed settings."""
    path = out / "profile.json"
    current = json.loads(json.dumps(profile))
    stored = stored_profile(out)
    if stored is not None:
        stored = with_later_fields(stored, current)
        if stored != current:
            was = stored["precision"]
            same_but_precision = {**stored, "precision": current.get("precision")} == current
            hint = f" (its runs are {was}: pass --precision {was})" if same_but_precision else ""
            raise SystemExit(
                f"{out} holds results of other profile settings ({path}){hint}; move that folder aside or "
                f"restore the settings.\n stored:  {stored}\n current: {current}"
            )
    else:
        write_json(path, current)
