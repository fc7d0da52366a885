"""bench.cost: training seconds per step from hand-made evaluation records."""

from __future__ import annotations

import json
from pathlib import Path

from bench.cost import cost_table, step_seconds
from bench.evals import eval_name


def test_seconds_per_step_are_averaged_over_seeds_and_reused_steps_skipped(tmp_path: Path) -> None:
    def write(name: str, seed: int, t: int, seconds: float | None) -> None:
        (tmp_path / eval_name(name, seed, t)).write_text(json.dumps({"train_seconds": seconds}))

    write("step0", 0, 0, 600.0)
    write("kamp", 0, 1, 60.0)
    write("kamp", 1, 1, 120.0)
    write("kamp", 0, 2, None)  # its checkpoint came from an earlier run: no time recorded
    write("joint@budget=scratch", 0, 1, 300.0)
    seconds = step_seconds(tmp_path)
    assert seconds == {"step0": [600.0], "kamp": [None, 90.0], "joint@budget=scratch": [None, 300.0]}
    table = cost_table(seconds)
    assert "| kamp | – | 1.5 |" in table and "| step0 | 10.0 | – |" in table


def test_times_of_different_machines_are_not_averaged(tmp_path: Path) -> None:
    def write(seed: int, seconds: float, kind: str | None) -> None:
        record = {"train_seconds": seconds} | ({"trained_on": kind} if kind else {})
        (tmp_path / eval_name("lwf", seed, 1)).write_text(json.dumps(record))

    write(0, 60.0, None)  # written before records named their machine
    write(2, 90.0, "cpu amx x2")
    write(3, 120.0, "cpu amx x2")
    write(1, 200.0, "cpu avx512-bf16 x2")
    assert step_seconds(tmp_path) == {
        "lwf": [None, 60.0],
        "lwf [cpu amx x2]": [None, 105.0],
        "lwf [cpu avx512-bf16 x2]": [None, 200.0],
    }
