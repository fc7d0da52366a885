"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The shared real-data folder: $KAMP_DATA_ROOT, else <repository>/../shared/data; skip if absent."""
    env = os.environ.get("KAMP_DATA_ROOT")
    root = Path(env) if env else Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
    root = root.expanduser().resolve()
    if not root.is_dir():
        pytest.skip(f"shared landmark data not found at {root} (set KAMP_DATA_ROOT to its folder)")
    return root
