"""Benchmark arms: a strategy, optionally with TrainConfig overrides for its incremental steps.

An arm is written `strategy` or `strategy@field=value[@field=value...]`, e.g. `kamp@ka_mode=pseudo_label`. The
whole spelling is the arm's name in results (tables, plots, file names: `@` and `=` are safe in file names on
every system), so a variant is measured beside the defaults without touching them. Step 0 is the same for every
arm of a seed (the overrides apply from step 1 on).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from models.config import RefineTrainConfig, TrainConfig, to_dict
from models.registry import STRATEGIES

#: The names an override may set: TrainConfig fields, and `refine.<field>` for the local stage's training.
TRAIN_FIELDS = frozenset(to_dict(TrainConfig()))
REFINE_FIELDS = frozenset(f"refine.{name}" for name in to_dict(RefineTrainConfig()))
#: How the benchmark trains the `joint` oracle's steps >= 1 (bench.steps.joint_budget), not a TrainConfig field:
#: `budget=scratch`, from nothing on every image so far with step 0's iterations per image (constant epochs);
#: `budget=grow`, from the previous joint model with the step budget times images so far over the step's images.
BUDGETS = ("scratch", "grow")


def is_override_name(name: str) -> bool:
    """A TrainConfig field ("alpha"), a field of its local stage's training ("refine.alpha"), or `budget`."""
    return name in TRAIN_FIELDS or name in REFINE_FIELDS or name == "budget"


@dataclass(frozen=True)
class Arm:
    """`name`: the spelling, used as the results' strategy label; `strategy`: one of models.config.STRATEGIES;
    `overrides`: TrainConfig fields set for steps >= 1."""

    name: str
    strategy: str
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def train_overrides(self) -> dict[str, Any]:
        """The overrides that set TrainConfig fields."""
        return {k: v for k, v in self.overrides.items() if k != "budget"}

    @property
    def budget(self) -> str | None:
        """The joint oracle's budget (BUDGETS), or None: the profile's step budget."""
        return self.overrides.get("budget")


def parse_value(text: str) -> Any:
    """'3' -> 3, '0.3' or '1e-3' -> float, anything else stays text ('pseudo_label')."""
    try:
        return float(text) if any(ch in text for ch in ".e") else int(text)
    except ValueError:
        return text


def parse_arm(spec: str) -> Arm:
    """`kamp@ka_mode=pseudo_label@ka_weight=3` -> Arm(spec, "kamp", {"ka_mode": "pseudo_label", "ka_weight": 3}).

    Raises ValueError for an unknown strategy, a malformed override, an unknown or repeated field."""
    strategy, *parts = spec.split("@")
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r} in {spec!r}; choose from {', '.join(STRATEGIES)}")
    overrides: dict[str, Any] = {}
    for part in parts:
        name, sep, value = part.partition("=")
        if not sep or not name or not value:
            raise ValueError(f"an override is written field=value; got {part!r} in {spec!r}")
        if not is_override_name(name):
            raise ValueError(f"{name!r} in {spec!r} is not a TrainConfig field (nor refine.<RefineTrainConfig field>)")
        if name in overrides:
            raise ValueError(f"{name!r} is set twice in {spec!r}")
        overrides[name] = parse_value(value)
    budget = overrides.get("budget")
    if budget is not None and (strategy != "joint" or budget not in BUDGETS):
        raise ValueError(f"budget={budget} in {spec!r}: only joint takes a budget, one of {', '.join(BUDGETS)}")
    return Arm(spec, strategy, overrides)
