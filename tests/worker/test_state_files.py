"""Training-state files per claim (worker.state_files): a new claim takes over the newest state, and a worker
that lost its lease can only write its own file."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

from worker.state_files import claimed_state, remove_states

SET = uuid.UUID("00000000-0000-0000-0000-000000000001")
JOB = uuid.UUID("00000000-0000-0000-0000-00000000000a")
RETRY = uuid.UUID("00000000-0000-0000-0000-00000000000b")


def _write(path: Path, text: str, age_s: float = 0.0) -> None:
    path.write_text(text)
    then = time.time() - age_s
    os.utime(path, (then, then))


def test_a_claim_takes_over_the_newest_earlier_state(tmp_path: Path) -> None:
    _write(tmp_path / f"{SET}.{JOB}.1.state", "iteration 20", age_s=60)
    _write(tmp_path / f"{SET}.{JOB}.2.state", "iteration 40", age_s=10)
    mine = claimed_state(tmp_path, SET, JOB, 3)
    assert mine.name == f"{SET}.{JOB}.3.state" and mine.read_text() == "iteration 40"
    assert not (tmp_path / f"{SET}.{JOB}.2.state").exists()
    assert claimed_state(tmp_path, SET, JOB, 3) == mine and mine.read_text() == "iteration 40"  # again: kept


def test_a_worker_that_lost_its_lease_writes_only_its_own_file(tmp_path: Path) -> None:
    stale = claimed_state(tmp_path, SET, JOB, 1)
    _write(stale, "A at iteration 20")
    fresh = claimed_state(tmp_path, SET, RETRY, 1)  # reaped, then retried as a new job: B resumes A's state
    assert fresh != stale
    assert fresh.read_text() == "A at iteration 20"
    _write(fresh, "B at iteration 60")
    _write(stale, "A at iteration 40")  # A wakes and saves once more before its next progress write stops it
    assert fresh.read_text() == "B at iteration 60"
    remove_states(tmp_path, SET)  # B succeeded
    assert list(tmp_path.iterdir()) == []


def test_the_single_file_of_earlier_releases_is_taken_over(tmp_path: Path) -> None:
    _write(tmp_path / f"{SET}.state", "before per-claim files")
    other = uuid.UUID("00000000-0000-0000-0000-000000000002")
    _write(tmp_path / f"{other}.1.state", "another set's")
    assert claimed_state(tmp_path, SET, JOB, 5).read_text() == "before per-claim files"
    remove_states(tmp_path, SET)
    _write(tmp_path / f"{SET}.3.state", "before files named the job")
    assert claimed_state(tmp_path, SET, JOB, 1).read_text() == "before files named the job"
    assert (tmp_path / f"{other}.1.state").read_text() == "another set's"
