"""A step's training-state file: what it holds is keyed by a fingerprint of the step's inputs, so a resume
only ever continues the same step; written atomically (a temporary file renamed into place)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .atomic_file import write_atomically
from .checkpoint import Checkpoint
from .config import BackboneConfig, CodecConfig, RefineConfig, TrainConfig, to_dict
from .step_data import StepData
from .step_report import TrainReport
from .strategies import KAContext


def fingerprint(
    previous: Checkpoint | None,
    data: StepData,
    strategy: str,
    config: TrainConfig,
    codes: list[str],
    refine: RefineConfig | None,
    backbone: BackboneConfig,
    codec: CodecConfig,
) -> str:
    """The step's identity. A step after 0 takes its networks from `previous` (its hash is an input); step 0's
    networks (backbone, codec and local stage) are inputs themselves, so a state of another network never
    resumes. (Adding a config field changes the fingerprint of states written before: they start over.)"""
    h = hashlib.sha256()
    inputs = [previous.sha256 if previous else None, strategy, to_dict(config), codes, list(data.ids)]
    if refine is not None:
        inputs.append(to_dict(refine))
    if previous is None:
        inputs += [to_dict(backbone), to_dict(codec)]
    h.update(
        json.dumps(
            inputs,
            sort_keys=True,
            default=str,
        ).encode()
    )
    h.update(np.ascontiguousarray(np.nan_to_num(data.keypoints, nan=-1.0)).tobytes())
    return h.hexdigest()


def ka_state(ka: KAContext | None, report: TrainReport) -> dict[str, Any]:
    if ka is None:
        return {}
    return {
        "kanet": ka.kanet.state_dict(),
        "triplets": [list(t) for t in report.triplets],
        "kanet_loss": report.kanet_loss,
    }


def load_state(path: str | Path | None, fingerprint: str) -> dict[str, Any] | None:
    if not path or not Path(path).is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("fingerprint") != fingerprint:
        return None  # a state of other inputs: start over (and overwrite it at the first save)
    return state


def save_state(path: str | Path, state: dict[str, Any]) -> None:
    write_atomically(Path(path), lambda f: torch.save(state, f))
