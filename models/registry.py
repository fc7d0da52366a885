"""The incremental strategies, by name: what each distils, whether it has a KA-Net, what data a step reads.

One table that the trainer (which teacher and which terms), the benchmark (which data a step gets), the
service (which strategies a project may train, and why not the others) and its OpenAPI enum all read.
Plain data: no torch here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .config import merge_overrides

#: The old landmarks' term: LwF's soft targets, CPR's (LwF plus the regulariser), KSD's spatial distillation.
Distillation = Literal["lwf", "cpr", "ksd"]
#: A step's training data: its own images with its own labels (IKL); every image so far with every landmark so
#: far (the oracle); every earlier step's images kept, each with its own step's labels.
StepData = Literal["step", "joint", "joint_partial"]


@dataclass(frozen=True)
class StrategySpec:
    name: str
    summary: str
    distil: Distillation | None = None
    #: KA-Net (stage I and the l_KA term): triplets chosen from the data, or drawn at random (the ablation).
    kanet: Literal["chosen", "random"] | None = None
    data: StepData = "step"
    #: For a strategy whose data a service cannot give: what it needs.
    needs: str = ""
    #: TrainConfig overrides the benchmark chose for it on a step's own held-out images (bench/selection_plan.py,
    #: docs/benchmarks.md "Fair baselines"; the local stage's under "refine"): a new project of this strategy
    #: stores them unless it sets its own.
    validated: Mapping[str, Any] = field(default_factory=dict)

    @property
    def teacher(self) -> bool:
        """Whether a step needs the previous model (frozen, as the teacher)."""
        return self.distil is not None

    @property
    def served(self) -> bool:
        """Whether a service whose steps hold only their own labels can train it."""
        return self.data == "step"


#: The local stage's distillation weight that every distilling strategy's model choice preferred on the held-out
#: images (docs/benchmarks.md, "The local stage's weight, chosen for each strategy").
_LOCAL_WEIGHT: Mapping[str, float] = {"alpha": 300.0}

REGISTRY: dict[str, StrategySpec] = {
    s.name: s
    for s in (
        StrategySpec("finetune", "the new landmarks' labels only; the old ones are forgotten (lower bound)"),
        StrategySpec(
            "lwf",
            "Learning without Forgetting on the old landmarks' heatmaps",
            distil="lwf",
            validated={"alpha": 100.0, "temperature": 0.05, "refine": _LOCAL_WEIGHT},
        ),
        StrategySpec(
            "cpr",
            "LwF plus the classifier-projection regulariser",
            distil="cpr",
            validated={"alpha": 10.0, "temperature": 0.05, "refine": _LOCAL_WEIGHT},
        ),
        StrategySpec(
            "kamp",
            "KAMP: spatial distillation (l_KSD) and knowledge association (l_KA)",
            "ksd",
            "chosen",
            validated={"alpha": 10.0, "refine": _LOCAL_WEIGHT},
        ),
        StrategySpec(
            "kamp_ksd_only",
            "KAMP without KA-Net: spatial distillation alone",
            distil="ksd",
            validated={"alpha": 10.0, "refine": _LOCAL_WEIGHT},
        ),
        StrategySpec("kamp_random", "KAMP with KA-Net's triplets drawn at random (ablation)", "ksd", "random"),
        StrategySpec(
            "joint",
            "the oracle: every image so far with every landmark so far",
            data="joint",
            needs="every image so far annotated with every landmark so far (IKL has no old landmarks on new images)",
        ),
        StrategySpec(
            "joint_partial",
            "every earlier step's images kept, each with its own step's labels",
            data="joint_partial",
            needs="every earlier step's images kept with their labels (the service trains a step on its own)",
        ),
    )
}
STRATEGIES: tuple[str, ...] = tuple(REGISTRY)
#: What a new project trains unless it names a strategy: the one the benchmark's model choice scores best on
#: held-out images of the steps' own (docs/method.md, "Which strategy a project trains").
DEFAULT_STRATEGY = "kamp_ksd_only"
SERVED: tuple[str, ...] = tuple(n for n, s in REGISTRY.items() if s.served)
#: Baselines whose meaning lies in the data the caller passes (the trainer trains them like finetune).
BASELINES: dict[str, str] = {n: s.needs for n, s in REGISTRY.items() if not s.served}
DISTILLING = frozenset(n for n, s in REGISTRY.items() if s.teacher)
ASSOCIATING = frozenset(n for n, s in REGISTRY.items() if s.kanet is not None)


def strategy(name: str) -> StrategySpec:
    """The spec of `name`; ValueError naming the choices for an unknown one."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}") from None


def with_validated(name: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """TrainConfig overrides for training strategy `name`: its validated settings under the caller's `overrides`
    (ValueError for an unknown strategy)."""
    return merge_overrides(strategy(name).validated, overrides)
