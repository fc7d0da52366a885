"""The worker's job tests' app: a file database and a lenient gate (tests/worker/job_setup.py builds the
projects, steps and jobs)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ..server.conftest import Api, make_api


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    # A half-and-half split so that three studies per step give validation studies; a lenient gate (a
    # 12-iteration tiny model is far from accurate: the gate's logic is tested separately).
    a = make_api(
        f"sqlite:///{tmp_path / 'kamp.db'}",
        tmp_path,
        validation_fraction=0.5,
        gate_max_new_mre=1e4,
        gate_old_tolerance=1e4,
    )
    with a.client:
        yield a
