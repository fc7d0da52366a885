"""Each claim of a training job trains into its own training-state file, `<set id>.<job id>.<lease>.state`,
taken over from the newest file an earlier claim of the same landmark set left (a rename: atomic on one file
system). A worker that lost its lease (paused, reaped, its job retried elsewhere) can then only write its own
file, never the one the new claim resumes from and saves into; its last save before its next progress write
stops it is left over and removed when a claim of the set succeeds. The job id is in the name because a retry is
a new job whose leases count from 1 again: without it the retry's first claim would share the file of the
original's first claim, the reaped worker saving over it and, when it finishes, deleting it."""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def state_folder(data_dir: Path) -> Path:
    """Where the training-state files of a host's claims are: under its data folder (each host's own)."""
    return Path(data_dir) / "training-state"


def claimed_state(folder: Path, set_id: uuid.UUID, job_id: uuid.UUID, lease: int) -> Path:
    """The state file of this claim (job `job_id`'s lease `lease`), holding the newest earlier claim's state
    (renamed) when there is one."""
    folder.mkdir(parents=True, exist_ok=True)
    mine = folder / f"{set_id}.{job_id}.{lease}.state"
    earlier = [p for p in _states(folder, set_id) if p != mine]
    if earlier and not mine.exists():
        newest = max(earlier, key=lambda p: p.stat().st_mtime)
        os.replace(newest, mine)
    return mine


def remove_states(folder: Path, set_id: uuid.UUID) -> None:
    """Every state file of the set (a claim succeeded: none is needed any more)."""
    for path in _states(folder, set_id):
        path.unlink(missing_ok=True)


def _states(folder: Path, set_id: uuid.UUID) -> list[Path]:
    # `<set>.state` (before files were per claim) and `<set>.<lease>.state` (before they named the job) are
    # still taken over, once.
    return [p for p in [*folder.glob(f"{set_id}.*.state"), folder / f"{set_id}.state"] if p.is_file()]
