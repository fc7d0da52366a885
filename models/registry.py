"""The incremental strategies, by name: what each distils, whether it has a KA-Net, what data a step reads.

One table that the trainer (which teacher and which terms), the benchmark (which data a step gets), the
service (which strategies a project may train, and why not the others) and its OpenAPI enum all read.
Plain data: no torch here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from .config import merge_overrides

#: The old landmarks' term: LwF's soft targets, CPR's (LwF plus the regulariser), KSD's spatial distillation.
Distillation = Literal["lwf", "cpr", "ksd"]
#: A step's training data: its own images with its own labels (IKL); every image so far with every landmark so
#: far (the oracle); every earlier step's images kept, each with its own step's labels.
StepData = Literal["step", "joint", "joint_partial"]
#: What a project's images show. The benchmark chose each strategy's settings for every modality it has a
#: protocol of (cephalometric: cld38-5step; chest: chest6-2step).
Modality = Literal["cephalometric", "chest", "other"]
MODALITIES: tuple[str, ...] = get_args(Modality)
#: The modality whose choice a modality without a protocol of its own trains: the one chosen on the most
#: images and landmarks.
FALLBACK_MODALITY: Modality = "cephalometric"


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
    #: Per modality, the TrainConfig overrides the benchmark chose for it on a step's own held-out images
    #: (bench/selection_plan.py, docs/benchmarks.md "Fair baselines"; the local stage's under "refine"): a new
    #: project of this strategy stores its modality's unless it sets its own.
    validated: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def validated_for(self, modality: str) -> Mapping[str, Any]:
        """The settings chosen for `modality` (the fallback modality's where it has none of its own; ValueError
        for an unknown modality)."""
        if modality not in MODALITIES:
            raise ValueError(f"unknown modality {modality!r}; choose one of {', '.join(MODALITIES)}")
        return self.validated.get(modality, self.validated.get(FALLBACK_MODALITY, {}))

    @property
    def teacher(self) -> bool:
        """Whether a step needs the previous model (frozen, as the teacher)."""
        return self.distil is not None

    @property
    def served(self) -> bool:
        """Whether a service whose steps hold only their own labels can train it."""
        return self.data == "step"


#: The local stage's distillation weight that every distilling strategy's model choice preferred on cld38's
#: held-out images, and LwF's and CPR's on chest6's (docs/benchmarks.md, "The local stage's weight, chosen for each
#: strategy"; on chest6 KSD alone and KAMP keep the default 30).
_LOCAL_WEIGHT: Mapping[str, float] = {"alpha": 300.0}

REGISTRY: dict[str, StrategySpec] = {
    s.name: s
    for s in (
        StrategySpec("finetune", "the new landmarks' labels only; the old ones are forgotten (lower bound)"),
        StrategySpec(
            "lwf",
            "Learning without Forgetting on the old landmarks' heatmaps",
            distil="lwf",
            validated={
                "cephalometric": {"alpha": 100.0, "temperature": 0.05, "refine": _LOCAL_WEIGHT},
                "chest": {"alpha": 10.0, "temperature": 0.05, "refine": _LOCAL_WEIGHT},
            },
        ),
        StrategySpec(
            "cpr",
            "LwF plus the classifier-projection regulariser",
            distil="cpr",
            validated={
                "cephalometric": {"alpha": 10.0, "temperature": 0.05, "refine": _LOCAL_WEIGHT},
                "chest": {"alpha": 100.0, "temperature": 0.05, "refine": _LOCAL_WEIGHT},
            },
        ),
        StrategySpec(
            "kamp",
            "KAMP: spatial distillation (l_KSD) and knowledge association (l_KA)",
            "ksd",
            "chosen",
            validated={"cephalometric": {"alpha": 10.0, "refine": _LOCAL_WEIGHT}, "chest": {}},
        ),
        StrategySpec(
            "kamp_ksd_only",
            "KAMP without KA-Net: spatial distillation alone",
            distil="ksd",
            validated={"cephalometric": {"alpha": 10.0, "refine": _LOCAL_WEIGHT}, "chest": {}},
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


def with_validated(name: str, overrides: Mapping[str, Any], modality: str = FALLBACK_MODALITY) -> dict[str, Any]:
    """TrainConfig overrides for training strategy `name` on images of `modality`: its validated settings for
    that modality under the caller's `overrides` (ValueError for an unknown strategy or modality)."""
    return merge_overrides(strategy(name).validated_for(modality), overrides)


def switch_validated(settings: Mapping[str, Any], old: str, new: str, modality: str) -> dict[str, Any]:
    """Settings stored for strategy `old` (its validated ones for `modality` under the caller's own) made
    strategy `new`'s: every value still equal to `old`'s validated one gives way to `new`'s, the rest is kept as
    the caller's own (a value the caller set equal to the validated one cannot be told apart from it)."""
    return merge_overrides(strategy(new).validated_for(modality), _own(settings, strategy(old).validated_for(modality)))


def _own(settings: Mapping[str, Any], validated: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of `settings` that differ from `validated`, nested configs compared key by key."""
    own: dict[str, Any] = {}
    for key, value in settings.items():
        below = validated.get(key)
        if isinstance(value, Mapping) and isinstance(below, Mapping):
            if rest := _own(value, below):
                own[key] = rest
        elif key not in validated or value != below:
            own[key] = value
    return own
