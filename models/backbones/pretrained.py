"""Load pretrained backbone weights from a local file, by parameter name. Nothing is ever downloaded.

Checkpoints come wrapped in many ways (a training checkpoint holding "state_dict", DataParallel's
"module." prefix, mmpose's "backbone." prefix), and ImageNet or pose checkpoints carry layers this
backbone lacks (classifier, final heatmap layer). So keys are unwrapped and stripped, and only tensors
whose name and shape both match are copied; the report says what happened to the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

PREFIXES = ("module.", "backbone.", "model.")
CONTAINER_KEYS = ("state_dict", "model")
#: The stem conv whose RGB weights are folded onto a grayscale input.
STEM_WEIGHT = "conv1.weight"


@dataclass
class LoadReport:
    """Outcome of `load_pretrained`; every list holds state-dict keys of the model (after stripping).

    Attributes:
        loaded: copied into the model (including an RGB stem folded to grayscale).
        skipped: present in both, but with a different shape; left at their initial values.
        missing: model keys the file does not have; left at their initial values.
        unexpected: file keys the model does not have (classifier, final layer, ...); ignored.
    """

    loaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{len(self.loaded)} loaded, {len(self.skipped)} skipped (shape), "
            f"{len(self.missing)} missing, {len(self.unexpected)} unexpected"
        )


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a local checkpoint, unwrapped from containers and with prefixes stripped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights not found: {path}")
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        raw: object = load_file(str(path), device="cpu")
    else:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    while isinstance(raw, dict):
        inner = next((raw[k] for k in CONTAINER_KEYS if isinstance(raw.get(k), dict)), None)
        if inner is None:
            break
        raw = inner
    if not isinstance(raw, dict):
        raise ValueError(f"{path} does not hold a state dict (got {type(raw).__name__})")
    return {_strip(str(k)): v for k, v in raw.items() if isinstance(v, Tensor)}


def _strip(key: str) -> str:
    # Prefixes stack ("module.backbone.conv1.weight"), so strip until none is left.
    while prefix := next((p for p in PREFIXES if key.startswith(p)), None):
        key = key[len(prefix) :]
    return key


def _fold_rgb(name: str, source: Tensor, target: Tensor) -> Tensor | None:
    """An RGB stem (O, 3, k, k) summed to grayscale (O, 1, k, k): a grey image x gives the RGB response."""
    if name != STEM_WEIGHT or source.ndim != 4 or target.ndim != 4:
        return None
    rgb_to_gray = source.shape[1] == 3 and target.shape[1] == 1
    if rgb_to_gray and source.shape[0] == target.shape[0] and source.shape[2:] == target.shape[2:]:
        return source.sum(dim=1, keepdim=True)
    return None


def load_pretrained(model: nn.Module, path: str | Path) -> LoadReport:
    """Copy the matching tensors of the local file `path` into `model` in place.

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: no tensor of the file matches the model, which means the wrong file.
    """
    source = read_state_dict(path)
    target = model.state_dict()
    report = LoadReport()
    matched: dict[str, Tensor] = {}
    for name, tensor in target.items():
        if name not in source:
            report.missing.append(name)
            continue
        value: Tensor | None = source[name]
        if value is not None and value.shape != tensor.shape:
            value = _fold_rgb(name, value, tensor)
        if value is None:
            report.skipped.append(name)
            continue
        matched[name] = value
        report.loaded.append(name)
    report.unexpected = sorted(set(source) - set(target))
    if not matched:
        raise ValueError(f"no tensor in {path} matches the model ({report.summary()}): wrong file?")
    model.load_state_dict(matched, strict=False)
    return report
