"""Atomic JSON files for benchmark results that two runs may rewrite side by side (results.json, runs.json) or
that a run killed at any moment must leave whole (a model choice's record of finished candidates)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from models.atomic_file import write_bytes_atomically


def write_json(path: Path, data: Any) -> None:
    """Write `data` as indented JSON (numpy scalars and tuples as plain values), atomically: a reader sees the
    old file or the new one, never half of it. The temporary file is the writer's own, so two runs writing one
    results folder at once cannot replace each other's half-written file."""
    write_bytes_atomically(path, json.dumps(data, indent=1, default=_jsonable).encode())


def _jsonable(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON: {type(o).__name__}")
