"""Dataclass configurations of the KAMP library. Every choice the paper leaves open is a field here.

docs/method.md gives the reason for each default. Configs are plain data: `to_dict`/`from_dict` round-trip
them through JSON so that a checkpoint carries the exact configuration that made it.
"""

from __future__ import annotations

import dataclasses
import math
import reprlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, get_args

T = TypeVar("T")

#: Numeric precision of the network (models.precision).
Precision = Literal["auto", "bf16", "fp32"]
PRECISIONS: tuple[str, ...] = get_args(Precision)


def check_precision(value: str) -> None:
    """Raise ValueError unless `value` names a precision."""
    if value not in PRECISIONS:
        raise ValueError(f"unknown precision {value!r}; choose one of {', '.join(PRECISIONS)}")


@dataclass(kw_only=True)
class BackboneConfig:
    """Which backbone to build (a name in models.backbones.registry) and where its weights come from."""

    name: str = "hrnet_w32"
    in_channels: int = 1
    #: Local file with pretrained weights (safetensors or a torch state dict); nothing is ever downloaded.
    pretrained: str | None = None
    #: Whether the features the head reads pass through the backbone's last ReLU. False: the head reads them
    #: before it, so every position keeps a gradient for a landmark added later (docs/method.md, Network).
    #: True is what every checkpoint written before the option holds.
    last_relu: bool = True
    #: Channels of a 3x3 conv-BN-ReLU layer that every step's 1x1 conv reads instead of the backbone's features
    #: (0: none). Without it each image's K heatmaps lie in the span of the backbone's C channels and a constant
    #: (rank C + 1), too few to fit more than C + 1 landmarks trained at once (docs/benchmarks.md, the oracle).
    #: 0 is what every checkpoint written before the option holds.
    head_channels: int = 0

    def __post_init__(self) -> None:
        if self.head_channels < 0:
            raise ValueError(f"head_channels must be >= 0, got {self.head_channels}")


@dataclass(kw_only=True)
class CodecConfig:
    """Geometry of the network input and its heatmaps."""

    #: Network input (width, height) in pixels; images are resized keeping their aspect ratio and padded.
    input_size: tuple[int, int] = (256, 320)
    #: Input pixels per heatmap pixel.
    stride: int = 4
    #: Standard deviation of the Gaussian targets, in heatmap pixels.
    sigma: float = 2.0


@dataclass(kw_only=True)
class AugmentConfig:
    """Random geometric and intensity augmentation; landmarks move with the image."""

    enabled: bool = True
    #: Isotropic scale drawn uniformly from [1 - scale, 1 + scale].
    scale: float = 0.1
    rotation_deg: float = 10.0
    #: Translation drawn uniformly within +- this fraction of the input size, per axis.
    translate: float = 0.05
    brightness: float = 0.1
    contrast: float = 0.15
    #: Gamma drawn log-uniformly from [exp(-gamma), exp(gamma)].
    gamma: float = 0.25


@dataclass(kw_only=True)
class KANetConfig:
    """The knowledge-association network of KAMP's stage I and its triplets."""

    hidden: int = 64
    #: Dilations of its three 3x3 conv layers: a receptive field of 1 + 2 * sum = 15 heatmap pixels reaches an
    #: old landmark several heatmap pixels away from the two new ones.
    dilations: tuple[int, int, int] = (1, 2, 4)
    iterations: int = 300
    lr: float = 1e-3
    #: At most this many (old <- new, new) triplets are chosen automatically per step.
    max_triplets: int = 2
    #: Explicit triplets (old code, new code 1, new code 2); None selects them from data.
    triplets: list[tuple[str, str, str]] | None = None
    #: Stage-I pseudo-label: the old model's heatmap as it is ("heatmap") or a clean Gaussian rendered at
    #: its decoded peak ("gaussian").
    #: "gaussian" by default: distillation by softmaxes (l_KSD) leaves the old channels free to drift in level (the
    #: softmax ignores a constant), so after one KSD step the old model's raw heatmaps are far from unit-peak
    #: Gaussians (minima of -2 to -6 measured) and a KA-Net fitted to them does not converge.
    target: Literal["heatmap", "gaussian"] = "gaussian"


@dataclass(kw_only=True)
class RefineConfig:
    """The second, local stage's network and crop geometry: fixed at step 0 and kept by every later step (like
    the backbone and the codec), stored in the checkpoint. docs/method.md gives the reason for each default."""

    #: Backbone of the crop network (a name in models.backbones.registry); its heatmaps are at its stride.
    backbone: str = "hrnet_w18_tiny"
    #: The crop network's `BackboneConfig.last_relu`.
    last_relu: bool = True
    #: Side of the square crop, in crop pixels (a multiple of the backbone's stride).
    crop_size: int = 64
    #: Crop resolution where the image's pixel spacing is known: millimetres per crop pixel.
    mm_per_pixel: float = 0.2
    #: Crop resolution where it is not: image pixels per crop pixel.
    image_pixels_per_pixel: float = 1.0
    #: Standard deviation of the crop's Gaussian targets, in crop heatmap pixels.
    sigma: float = 2.0
    #: Standard deviation, in crop pixels, of a Gaussian around the crop's centre (the estimate it refines) by
    #: which the crop heatmap is weighted to choose its peak (0: the highest peak anywhere in the crop). It prefers a
    #: peak near the estimate to a look-alike structure far from it; the peak chosen is then located on the heatmap
    #: itself, so the weighting does not pull it.
    prior: float = 0.0
    #: Passes at prediction time: each pass after the first crops again around the previous pass's point, so a
    #: landmark the first stage missed by much of a crop ends nearer the centre, where the crop network is best.
    passes: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.last_relu, bool):  # "false" would be read as true; a JSON value may be anything
            raise ValueError(f"refine last_relu must be true or false, got {reprlib.repr(self.last_relu)}")
        if not (_is_number(self.prior) and math.isfinite(self.prior) and self.prior >= 0):
            raise ValueError(f"refine prior must be >= 0 and finite, got {self.prior!r}")
        for name in ("mm_per_pixel", "image_pixels_per_pixel", "sigma"):
            value = getattr(self, name)
            if not (_is_number(value) and math.isfinite(value) and value > 0):
                raise ValueError(f"refine {name} must be positive and finite, got {value!r}")
        if not _is_int(self.passes) or not 1 <= self.passes <= 4:
            raise ValueError(f"refine passes must be an integer in [1, 4], got {self.passes!r}")
        if not _is_int(self.crop_size) or not 16 <= self.crop_size <= 512:
            raise ValueError(f"refine crop_size must be an integer in [16, 512], got {self.crop_size!r}")


def _is_number(value: object) -> bool:
    """Whether a JSON value is a number: an int or a float, and not a bool (which Python counts as an int)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value: object) -> bool:
    """Whether a JSON value is an integer, and not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(kw_only=True)
class RefineTrainConfig:
    """How a step trains the local stage (when the model has one)."""

    iterations: int = 1000
    #: Crops per iteration; where the step distils old landmarks, `distill_share` of them are around the
    #: previous model's own estimates of old landmarks, the rest around the labels of the new ones.
    crops: int = 64
    distill_share: float = 0.5
    lr: float = 2e-3
    #: Standard deviation of each training crop's offset from its centre (label or previous estimate), in crop
    #: pixels per axis: the first stage's errors, which the crop must tolerate at prediction time.
    jitter: float = 10.0
    #: Share of training crops whose offset is instead uniform over the central 80% of the crop: the first
    #: stage's errors have a heavier tail than a Gaussian, and a landmark far from the crop's centre must still
    #: be found.
    jitter_wide: float = 0.0
    #: Random rotation (degrees, uniform in +-) and isotropic scale (uniform in 1 +- scale) of training crops.
    rotation_deg: float = 10.0
    scale: float = 0.1
    #: Weight of the local stage's distillation of old landmarks; None: TrainConfig.alpha (the first stage's).
    #: Its l_GT on fresh labels is far larger than the first stage's, so its distillation needs a larger weight
    #: to hold the old landmarks (chosen on step 1's held-out images: docs/method.md).
    alpha: float | None = 30.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.jitter_wide <= 1.0:
            raise ValueError(f"refine jitter_wide must be in [0, 1], got {self.jitter_wide!r}")
        if not 0.0 <= self.distill_share < 1.0:
            raise ValueError(f"refine distill_share must be in [0, 1), got {self.distill_share!r}")
        if self.crops < 1 or self.iterations < 0:
            raise ValueError("refine crops must be >= 1 and iterations >= 0")


@dataclass(kw_only=True)
class TrainConfig:
    """Optimisation and loss settings of one incremental step."""

    #: Optimisation steps (not epochs: an IKL step holds only ~40 images).
    iterations: int = 1000
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 0.0
    warmup: int = 50
    #: Start from the previous model ("previous") or from a fresh network ("scratch", for joint baselines).
    init: Literal["previous", "scratch"] = "previous"
    #: l_GT is mean squared heatmap error times this factor, which puts it near 1 for unit-peak Gaussians.
    gt_scale: float = 1000.0
    #: Weight of the distillation terms (l_KSD + l_KA for KAMP, l_LwF for LwF and CPR).
    alpha: float = 1.0
    #: Softmax temperature of every distillation distribution (heatmaps peak at 1; see docs/method.md).
    temperature: float = 0.1
    #: "marginal": softmax of the max-profiles along H and along W; "rows": one softmax per column and
    #: per row of the heatmap.
    ksd_mode: Literal["marginal", "rows"] = "marginal"
    #: Weight of the l_KA term relative to l_KSD inside the alpha bracket.
    ka_weight: float = 1.0
    #: How stage II uses the frozen KA-Net. "features": KA-Net reads the NEW model's features F' (masked by the
    #: new landmarks' labels) and its output must match the old landmark's stage-I pseudo-label, so the gradient
    #: reaches the new backbone through KA-Net (the association is kept in the shared features).
    #: "pseudo_label": KA-Net reads the old model's features and its output is a target for the new model's heatmap
    #: of the old landmark (an earlier reading; it degraded old landmarks on cld38-5step, docs/benchmarks.md).
    ka_mode: Literal["features", "pseudo_label"] = "features"
    #: Weight of a feature-distillation term l_FD inside the alpha bracket (every distilling strategy; 0: off):
    #: the new model's backbone features F' held near the previous model's F, as a relative squared error
    #: (scale-free: 1 when F' is as far from F as F is from zero). Meant to keep F' where the frozen KA-Net was
    #: fitted; measured (cld38-5step, seed 0), weight 1 helps KAMP and KSD alone alike (2.95 -> 2.85, 2.81 ->
    #: 2.73 mm) and leaves the KA term's cost (docs/benchmarks.md, "Where the KA term costs"). Off by default:
    #: one seed, and a tie with KSD alone on the two-step validation split.
    feature_weight: float = 0.0
    #: Weight of CPR's entropy regulariser (added to LwF).
    #: Chosen on step 1's own validation split of cld38-5step (bench/select.py, docs/benchmarks.md): 0.001 scored
    #: 2.69 mm, 0.01 3.25 mm; the first value, 0.1, had cost 28.7 mm on the old landmarks after one step.
    cpr_beta: float = 0.001
    seed: int = 0
    #: "auto" picks CUDA when available.
    device: str = "auto"
    #: Precision of the network's passes (models.precision): "auto" is bf16 autocast + channels_last on CUDA and on
    #: CPUs with AMX or AVX-512 BF16, fp32 elsewhere; losses and decoding stay float32 either way.
    precision: Precision = "auto"
    #: Write a resumable training-state file every this many iterations (0: never).
    state_every: int = 100
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    kanet: KANetConfig = field(default_factory=KANetConfig)
    #: Training of the local stage; used only by models that have one (models.refine).
    refine: RefineTrainConfig = field(default_factory=RefineTrainConfig)

    def __post_init__(self) -> None:
        check_precision(self.precision)


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (nested) config dataclass."""
    return dataclasses.asdict(config)


def merge_overrides(defaults: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """TrainConfig overrides `overrides` on top of `defaults`; a nested config (augment, kanet, refine) given as a
    dict on both sides merges by key, so {"refine": {"iterations": 500}} keeps a default {"refine": {"alpha": 300}}.
    A new dict, nested ones copied: changing it leaves `defaults` (e.g. the registry's table) as it was."""
    merged = {key: dict(value) if isinstance(value, Mapping) else value for key, value in defaults.items()}
    for key, value in overrides.items():
        below = merged.get(key)
        merged[key] = {**below, **value} if isinstance(value, Mapping) and isinstance(below, Mapping) else value
    return merged


def local_stage_config(overrides: dict[str, Any], *, last_relu: bool) -> RefineConfig:
    """The local stage of `overrides` (RefineConfig fields), its crop network reading its features as the first
    stage's does (`last_relu`) unless the overrides name their own. TypeError/ValueError for bad fields."""
    return from_dict(RefineConfig, {"last_relu": last_relu, **overrides})


def from_dict(cls: type[T], data: dict[str, Any] | None) -> T:
    """Build config class `cls` from a (possibly partial) dict; unknown keys raise ValueError."""
    data = dict(data or {})
    if cls is TrainConfig:
        # Checkpoints and arms written before `precision` carry `amp`, which only ever acted on CUDA.
        data.pop("amp", None)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(data) - set(fields)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
    kwargs: dict[str, Any] = {}
    nested = {"augment": AugmentConfig, "kanet": KANetConfig, "refine": RefineTrainConfig}
    for name, value in data.items():
        if name in nested and isinstance(value, dict):
            value = from_dict(nested[name], value)
        elif name in ("input_size", "dilations") and value is not None:
            value = tuple(int(v) for v in value)
        elif name == "triplets" and value is not None:
            value = [tuple(t) for t in value]
        kwargs[name] = value
    return cls(**kwargs)
