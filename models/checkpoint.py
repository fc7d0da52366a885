"""Checkpoints: one safetensors file holding the weights and, in its header, JSON metadata that carries
everything needed to rebuild and use the model (landmarks in head order, backbone, codec, lineage, report)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .atomic_file import write_bytes_atomically
from .config import BackboneConfig, CodecConfig, RefineConfig, from_dict, to_dict
from .network import LandmarkNet
from .precision import Resolved, prepare_frozen
from .refine import build_crop_network

FORMAT = "kamp-checkpoint"
FORMAT_VERSION = 1
#: Prefix of the local stage's weights in a two-stage checkpoint's state dict (models.refine).
REFINER_PREFIX = "refiner."


@dataclass(kw_only=True)
class LandmarkInfo:
    """One landmark of the model, in head order."""

    code: str
    step: int
    name: str = ""


@dataclass(kw_only=True)
class Checkpoint:
    """An immutable trained model: weights plus the metadata that defines them."""

    state_dict: dict[str, torch.Tensor]
    landmarks: list[LandmarkInfo]
    backbone: BackboneConfig
    codec: CodecConfig
    step: int
    strategy: str
    #: The local stage's network and crops; None for a one-stage model (no REFINER_PREFIX weights).
    refine: RefineConfig | None = None
    parent_sha256: str | None = None
    train_config: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    #: The hash of the bytes this checkpoint was read from (from_bytes), None for one built in memory. A file
    #: written before a metadata field was added re-serialises differently (the new field's default is written),
    #: so its identity is the hash of its own bytes, not of what to_bytes would write today. Not an init field,
    #: so dataclasses.replace (a changed checkpoint) drops it.
    _file_sha256: str | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def codes(self) -> list[str]:
        return [lm.code for lm in self.landmarks]

    @property
    def step_sizes(self) -> list[int]:
        """Head channels per step, in order (a step that added no landmark has no entry)."""
        sizes: list[int] = []
        last = None
        for lm in self.landmarks:
            if lm.step != last:
                sizes.append(0)
                last = lm.step
            sizes[-1] += 1
        return sizes

    def build_model(self, device: str | torch.device = "cpu") -> LandmarkNet:
        """The first stage's network with these weights, in eval mode."""
        model = LandmarkNet(backbone=_without_pretrained(self.backbone), step_sizes=self.step_sizes)
        model.load_state_dict({k: v for k, v in self.state_dict.items() if not k.startswith(REFINER_PREFIX)})
        return model.to(device).eval()

    def build_crop_network(self, device: str | torch.device = "cpu") -> LandmarkNet:
        """The local stage's crop network with these weights, in eval mode; ValueError for a one-stage model."""
        if self.refine is None:
            raise ValueError("this is a one-stage model: it has no local stage")
        model = build_crop_network(self.refine, self.step_sizes)
        n = len(REFINER_PREFIX)
        model.load_state_dict({k[n:]: v for k, v in self.state_dict.items() if k.startswith(REFINER_PREFIX)})
        return model.to(device).eval()

    def build_frozen_crop_network(self, device: str | torch.device, precision: Resolved) -> LandmarkNet:
        """The crop network for use without training, as build_frozen prepares the first stage."""
        return prepare_frozen(self.build_crop_network(device).frozen(), precision)

    def build_frozen(self, device: str | torch.device, precision: Resolved) -> LandmarkNet:
        """The network for use without training (a Predictor's, a teacher): LandmarkNet.frozen (batch norms
        folded, no gradients) in `precision`'s layout and weights (models.precision.prepare_frozen)."""
        return prepare_frozen(self.build_model(device).frozen(), precision)

    def metadata(self) -> dict[str, Any]:
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "landmarks": [asdict(lm) for lm in self.landmarks],
            "backbone": to_dict(self.backbone),
            "codec": to_dict(self.codec),
            "step": self.step,
            "strategy": self.strategy,
            "parent_sha256": self.parent_sha256,
            "train_config": self.train_config,
            "report": self.report,
            "created_at": self.created_at,
        }
        if self.refine is not None:  # absent from one-stage files, whose bytes (and hashes) stay as they were
            meta["refine"] = to_dict(self.refine)
        return meta

    def to_bytes(self) -> bytes:
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict.items()}
        return st_save(tensors, metadata={"kamp": json.dumps(self.metadata(), sort_keys=True)})

    @property
    def sha256(self) -> str:
        """Content hash of the serialised file (weights and metadata): of the bytes it was read from, where it was
        read from a file, else of to_bytes()."""
        if self._file_sha256 is not None:
            return self._file_sha256
        return hashlib.sha256(self.to_bytes()).hexdigest()

    def save(self, path: str | Path) -> str:
        """Write atomically (temporary file + rename); returns the sha256 of what was written."""
        data = self.to_bytes()
        write_bytes_atomically(Path(path), data)
        return hashlib.sha256(data).hexdigest()

    @staticmethod
    def from_bytes(data: bytes) -> Checkpoint:
        """Parse a serialised checkpoint; ValueError for anything that is not a complete one of this format."""
        try:
            header_len = int.from_bytes(data[:8], "little")
            header = json.loads(data[8 : 8 + header_len])
            meta = json.loads(header["__metadata__"]["kamp"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"not a KAMP checkpoint: {exc}") from exc
        if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
            found = f"{meta.get('format')} v{meta.get('format_version')}"
            raise ValueError(f"unsupported checkpoint format {found}; this library reads {FORMAT} v{FORMAT_VERSION}")
        try:
            checkpoint = Checkpoint(
                state_dict=st_load(data),
                landmarks=[LandmarkInfo(**lm) for lm in meta["landmarks"]],
                backbone=from_dict(BackboneConfig, meta["backbone"]),
                codec=from_dict(CodecConfig, meta["codec"]),
                refine=None if meta.get("refine") is None else from_dict(RefineConfig, meta["refine"]),
                step=int(meta["step"]),
                strategy=meta["strategy"],
                parent_sha256=meta.get("parent_sha256"),
                train_config=meta.get("train_config", {}),
                report=meta.get("report", {}),
                created_at=meta.get("created_at", ""),
            )
        except SafetensorError as exc:
            raise ValueError(f"corrupt or truncated checkpoint weights: {exc}") from exc
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"incomplete KAMP checkpoint metadata: {exc!r}") from exc
        checkpoint._file_sha256 = hashlib.sha256(data).hexdigest()
        return checkpoint

    @staticmethod
    def load(path: str | Path) -> Checkpoint:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint not found: {path}")
        return Checkpoint.from_bytes(path.read_bytes())


def _without_pretrained(config: BackboneConfig) -> BackboneConfig:
    # The checkpoint's own weights replace any pretrained file, which need not exist where it is loaded.
    return replace(config, pretrained=None)
