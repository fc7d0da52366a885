"""bench.compare: final errors of two arms grouped by learning step and by KA anchoring, known answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import compare


def _write(evals: Path, name: str, seed: int, step: int, errors: dict, triplets: list | None = None) -> None:
    evals.mkdir(parents=True, exist_ok=True)
    record = {"strategy": name, "seed": seed, "step": step, "unit": "mm", "triplets": triplets or [], "errors": errors}
    (evals / f"{name}-seed{seed}-step{step}.json").write_text(json.dumps(record))


def test_groups_by_step_and_anchoring_over_the_seeds_both_finished(tmp_path: Path) -> None:
    evals = tmp_path / "evals"
    steps = {"S": 0, "N": 0, "B": 1}
    # Seed 0: both finished; kamp anchored N at step 1. Seed 1: only kamp finished, so it is left out.
    _write(evals, "kamp", 0, 1, {}, triplets=[["N", "B", "B"]])
    _write(evals, "kamp", 0, 2, {"S": [1.0, 3.0], "N": [2.0, None], "B": [4.0, 4.0]})
    _write(evals, "ksd", 0, 2, {"S": [1.0, 1.0], "N": [3.0, 3.0], "B": [5.0, 3.0]})
    _write(evals, "kamp", 1, 2, {"S": [9.0], "N": [9.0], "B": [9.0]})
    result = compare.compare(evals, "kamp", "ksd", steps, steps=3)
    assert result["seeds"] == [0]
    rows = {(r["learned_at"], r["anchored"]): (r["kamp"], r["ksd"], r["landmarks"]) for r in result["rows"]}
    assert rows == {(0, False): (2.0, 1.0, 1), (0, True): (2.0, 3.0, 1), (1, False): (4.0, 4.0, 1)}
    assert result["totals"] == {True: (2.0, 3.0), False: (3.0, 2.5)}
    text = compare.markdown(result, "p")
    assert "| 0 | yes | 1 | 2.00 | 3.00 | -1.00 |" in text and "| all | no | | 3.00 | 2.50 | +0.50 |" in text


def test_no_common_seed_is_a_clear_error(tmp_path: Path) -> None:
    _write(tmp_path, "kamp", 0, 1, {"S": [1.0]})
    with pytest.raises(ValueError, match="no seed where both"):
        compare.compare(tmp_path, "kamp", "ksd", {"S": 0}, steps=2)
