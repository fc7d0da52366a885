"""bench.significance on hand-made evaluation records: pairing, the test and Holm's correction."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench.evals import eval_name
from bench.significance import holm, significance


def _write(evals: Path, arm: str, seed: int, errors: np.ndarray) -> None:
    ids = [f"{i:03d}" for i in range(len(errors))]
    record = {"ids": ids, "errors": {"S": [float(e) for e in errors], "N": [None] * len(errors)}}
    (evals / eval_name(arm, seed, 1)).write_text(json.dumps(record))


def test_a_consistent_difference_is_significant_and_noise_is_not(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    base = rng.uniform(1, 3, size=40)
    for seed in (0, 1):
        _write(tmp_path, "good", seed, base)
        _write(tmp_path, "worse", seed, base + 0.3 + rng.normal(0, 0.05, 40))
        _write(tmp_path, "same", seed, base + rng.normal(0, 0.3, 40))
    rows = {(r["a"], r["b"]): r for r in significance(tmp_path, ["good", "worse", "same"], 1, [0, 1, 2])}
    worse = rows[("good", "worse")]
    assert worse["n"] == 40 and worse["seeds"] == [0, 1] and worse["a_better_share"] == 1.0  # images, not pairs
    assert set(worse["p_per_seed"]) == {"0", "1"} and worse["p_per_seed"]["0"] < 1e-6
    assert worse["median_difference"] == pytest.approx(-0.3, abs=0.05) and worse["p"] < 1e-10
    assert rows[("good", "same")]["p"] > 0.01  # unlabelled landmarks (None) are left out, not counted as 0


def test_holm_adjusts_in_rank_order_and_keeps_missing() -> None:
    assert holm([0.01, None, 0.04, 0.03]) == pytest.approx([0.03, None, 0.06, 0.06])


def test_a_named_comparison_keeps_the_unnamed_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--name writes significance-NAME.{json,md} beside significance.{json,md}; a name that is not a plain word
    is refused before anything is written."""
    from bench.significance import main

    evals = tmp_path / "cld38-5step-smoke" / "evals"
    evals.mkdir(parents=True)
    rng = np.random.default_rng(1)
    base = rng.uniform(1, 3, size=20)
    for arm, shift in (("a", 0.0), ("b", 0.5), ("c", 1.0)):
        for seed in (0, 1):
            record = {"ids": [f"{i:03d}" for i in range(20)], "errors": {"S": [float(e) for e in base + shift]}}
            (evals / eval_name(arm, seed, 4)).write_text(json.dumps(record))
    common = ["--protocol", "cld38-5step", "--profile", "smoke", "--results", str(tmp_path), "--seeds", "0,1"]
    assert main([*common, "a", "b"]) == 0
    assert main([*common, "--name", "local-300", "a", "c"]) == 0
    out = tmp_path / "cld38-5step-smoke"
    first = json.loads((out / "significance.json").read_text())["rows"]
    named = json.loads((out / "significance-local-300.json").read_text())["rows"]
    assert [(r["a"], r["b"]) for r in first] == [("a", "b")] and [(r["a"], r["b"]) for r in named] == [("a", "c")]
    assert "| a | c |" in (out / "significance-local-300.md").read_text()
    written = sorted(tmp_path.rglob("*"))
    with pytest.raises(SystemExit):
        main([*common, "--name", "../x", "a", "b"])
    assert "use letters, digits" in capsys.readouterr().err and sorted(tmp_path.rglob("*")) == written
