from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.json_schema import JsonDict, JsonValue

from models.backbones import available_backbones
from models.registry import BASELINES, DEFAULT_STRATEGY, SERVED, STRATEGIES, Modality, with_validated

from ..bodies import RequestBody, UtcDatetime
from ..training.config import validate_training

if TYPE_CHECKING:
    from ..db.entities import Project

CODE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,39}$"


def check_strategy(v: str) -> str:
    """A strategy the service can train: ValueError (422) for an unknown one or a benchmark baseline."""
    if v not in STRATEGIES:
        raise ValueError(f"unknown strategy {v!r}; choose one of {', '.join(_SERVED)}")
    if v in BASELINES:
        raise ValueError(
            f"strategy {v!r} is a benchmark baseline that needs {BASELINES[v]}; choose one of {', '.join(_SERVED)}"
        )
    return v


_SERVED = list(SERVED)
#: The backbones a project may name, listed in OpenAPI (the console offers them from there).
BACKBONES: JsonDict = {"enum": list[JsonValue](available_backbones())}
#: The strategies a project may train, listed in OpenAPI (the validator answers the reason for any other).
SERVED_STRATEGIES: JsonDict = {"enum": list(_SERVED)}


class GateIn(RequestBody):
    """A project's promotion gate; a missing field takes the service's setting (KAMP_GATE_*)."""

    max_new_mre: float | None = Field(
        default=None, gt=0, allow_inf_nan=False, description="the new landmarks' validation MRE must be under this"
    )
    old_tolerance: float | None = Field(
        default=None,
        ge=0,
        allow_inf_nan=False,
        description="no earlier step's validation MRE may be worse than under the parent version by more than this",
    )


class DicomwebIn(RequestBody):
    """A project's DICOMweb settings (server.dicomweb)."""

    sr_on_store: bool = Field(
        default=False,
        description="every instance stored through STOW-RS into this project (/dicomweb/projects/{id}/studies) "
        "is predicted with the active version, and the landmarks stored as a DICOM SR in the same study",
    )


class AnalysisLandmarksIn(RequestBody):
    """A project's mapping of the analyses' catalogue landmark codes to its own."""

    analysis_landmarks: dict[str, str] = Field(
        description="catalogue landmark code -> this project's code; a code not named is the project's own",
        examples=[{"S": "sella", "N": "nasion"}],
    )


class ProjectIn(RequestBody):
    name: str = Field(min_length=1, max_length=200, examples=["Lateral ceph"])
    description: str = Field(default="", max_length=5000)
    modality: Modality = Field(
        examples=["cephalometric"],
        description="what the images show; a new project stores its strategy's settings chosen for this modality "
        "(other: the cephalometric ones)",
    )
    input_width: int = Field(default=256, ge=32, le=2048, multiple_of=4)
    input_height: int = Field(default=320, ge=32, le=2048, multiple_of=4)
    # The defaults are the `cpu-local` benchmark profile's network (docs/benchmarks.md): HRNet-W32 at 256x320 takes
    # 0.22 s per image in bf16 on the 2-core machine, so 1000 iterations of batch 8 alone would spend the whole
    # 30-minute budget of a step; HRNet-W18-small takes 0.09 s.
    backbone: str = Field(default="hrnet_w18_small", examples=["hrnet_w18_small"], json_schema_extra=BACKBONES)
    # Off by default: with the ReLU, a landmark added where no earlier one was can get no gradient at all
    # (isbi19-5step, docs/benchmarks.md); without it PNS is learned and every other step lands within 0.07 mm.
    backbone_last_relu: bool = Field(
        default=False,
        description="whether the landmark heads (of both stages, unless local_stage names its own) read the "
        "backbone's features after its last ReLU (true) or before it (false: a landmark added where no earlier "
        "one was still learns; docs/method.md, Network)",
    )
    # 128 by default: without the layer no model fits more landmarks at once than the backbone has channels plus
    # one (19 for W18); with it step 0 of 38 cld38 landmarks keeps its first 19 at their 19-landmark accuracy and
    # KSD's steps end no worse (docs/benchmarks.md, "A hidden layer in the head").
    head_channels: int = Field(
        default=128,
        ge=0,
        le=1024,
        description="channels of a hidden layer (3x3 conv, batch norm, ReLU) that the first stage's per-step 1x1 "
        "convs read (default 128); 0: they read the backbone's features, and no model fits more landmarks at once "
        "than the backbone has channels plus one (docs/method.md, Network)",
    )
    strategy: str = Field(
        default=DEFAULT_STRATEGY,
        examples=[DEFAULT_STRATEGY, "kamp"],
        description="the incremental strategy of every step after the first (default: the one the benchmark's model "
        "choice scores best, docs/method.md)",
        json_schema_extra=SERVED_STRATEGIES,
    )
    training: dict[str, Any] = Field(
        default_factory=dict,
        description="TrainConfig overrides; stored with the strategy's validated settings for the modality (e.g. "
        "its distillation weight alpha, chosen on held-out images by the benchmark) where it does not set them",
    )
    gate: GateIn = Field(default_factory=GateIn, description="promotion gate overrides; {} = the service's")
    dicomweb: DicomwebIn = Field(default_factory=DicomwebIn, description="DICOMweb settings")
    analysis_landmarks: dict[str, str] = Field(
        default_factory=dict,
        description="cephalometric analyses: catalogue landmark code -> this project's code, where they differ "
        "(default: the ISBI 2015 / CL-Detection 2023 codes of GET /v1/analyses are the project's own)",
        examples=[{}, {"S": "sella", "N": "nasion"}],
    )
    # On by default: the most accurate configuration within a step's 30-minute budget on two CPU cores
    # (docs/benchmarks.md, "Two stages", with the cost of a step on the service's defaults).
    local_stage: dict[str, Any] | None = Field(
        default_factory=dict,
        validate_default=True,
        description="the local stage (RefineConfig overrides; {} = the defaults, the default): each landmark "
        "refined on a crop at the image's own resolution. null trains one-stage models.",
        examples=[{}, {"crop_size": 64, "mm_per_pixel": 0.2}, None],
    )

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, v: str) -> str:
        return check_strategy(v)

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, v: str) -> str:
        from models.backbones import available_backbones

        if v not in available_backbones():
            raise ValueError(f"unknown backbone {v!r}; choose one of {', '.join(available_backbones())}")
        return v

    @field_validator("local_stage")
    @classmethod
    def _valid_local_stage(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        from models.config import RefineConfig, from_dict

        if v is None:
            return None
        try:
            config = from_dict(RefineConfig, v)
        except (TypeError, ValueError) as exc:
            raise ValueError(str(exc)) from exc
        if config.crop_size % 4:
            raise ValueError(f"local_stage crop_size must be a multiple of 4, got {config.crop_size}")
        from models.backbones import available_backbones

        if config.backbone not in available_backbones():
            raise ValueError(f"unknown local_stage backbone {config.backbone!r}")
        return v

    @model_validator(mode="after")
    def _resolved_local_stage(self) -> ProjectIn:
        """The local stage stored resolved (a later change of the defaults leaves the project as it was), its
        crop network reading its features as the first stage's does unless it names its own `last_relu`."""
        from models.config import local_stage_config, to_dict

        if self.local_stage is not None:
            self.local_stage = to_dict(local_stage_config(self.local_stage, last_relu=self.backbone_last_relu))
        return self

    @model_validator(mode="after")
    def _validated_training(self) -> ProjectIn:
        """The strategy's settings validated for the project's modality, stored with the project (a later choice
        of the benchmark leaves the project as it was), under any the request sets itself."""
        self.training = with_validated(self.strategy, self.training, self.modality)
        return self

    @field_validator("training")
    @classmethod
    def _valid_training(cls, v: dict[str, Any]) -> dict[str, Any]:
        return validate_training(v)  # the rule a submission's overrides follow, so every stored default trains


class ProjectOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    name: str
    description: str
    modality: str
    input_width: int
    input_height: int
    backbone: str
    backbone_last_relu: bool
    head_channels: int = 0
    strategy: str
    training: dict[str, Any]
    gate: dict[str, float] = Field(default_factory=dict, description="the project's gate overrides")
    dicomweb: dict[str, Any] = Field(default_factory=dict, description="the project's DICOMweb settings")
    analysis_landmarks: dict[str, str] = Field(
        default_factory=dict, description="catalogue landmark code -> the project's, where they differ"
    )
    local_stage: dict[str, Any] | None = None
    created_at: UtcDatetime
    steps: int = 0


class LandmarkIn(RequestBody):
    code: str = Field(pattern=CODE_PATTERN, examples=["S"])
    name: str = Field(default="", max_length=200, examples=["Sella"])
    description: str = Field(default="", max_length=2000)


class AssociationIn(RequestBody):
    old: str = Field(pattern=CODE_PATTERN, description="a landmark of an earlier step", examples=["B"])
    new: tuple[str, str] = Field(description="two landmarks of this set", examples=[["D", "L1A"]])


class LandmarkSetIn(RequestBody):
    name: str = Field(default="", max_length=200, examples=["dental"])
    description: str = Field(default="", max_length=5000)
    landmarks: list[LandmarkIn] = Field(min_length=1, max_length=500)
    associations: list[AssociationIn] = Field(default_factory=list, max_length=100)

    @model_validator(mode="after")
    def _unique_codes(self) -> LandmarkSetIn:
        codes = [lm.code for lm in self.landmarks]
        dupes = sorted({c for c in codes if codes.count(c) > 1})
        if dupes:
            raise ValueError(f"landmark codes repeat within the set: {', '.join(dupes)}")
        for a in self.associations:
            bad = [c for c in a.new if c not in codes]
            if bad:
                raise ValueError(f"association {a.old} <- {a.new}: {', '.join(bad)} not in this set")
            if a.new[0] == a.new[1]:
                raise ValueError(f"association {a.old} <- {a.new}: the two new landmarks must differ")
        return self


class LandmarkOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    code: str
    name: str
    description: str


class AssociationOut(BaseModel):
    old: str
    new: tuple[str, str]


class LandmarkSetOut(BaseModel):
    id: uuid.UUID
    project_id: uuid.UUID
    step: int
    name: str
    description: str
    landmarks: list[LandmarkOut]
    associations: list[AssociationOut]
    created_at: UtcDatetime


def project_out(project: Project) -> ProjectOut:
    """A project's answer, with its number of steps."""
    out = ProjectOut.model_validate(project)
    out.steps = len(project.landmark_sets)
    return out
