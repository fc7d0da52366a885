"""Shared pytest fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator
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


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Run a module's training and inference on one torch thread. On the 2-core test machine, two processes
    that each use two OpenMP threads (e.g. a benchmark beside the tests, or a worker process beside the test
    process) slowed a tiny-HRNet forward from 0.02 s to 1.6 s in measurements."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
