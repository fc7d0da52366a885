"""bench.analyses: the junior-vs-senior anchor on a few real ISBI test1 images (no model)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench import analyses
from models.datasets import load_dataset

ISBI_EIGHT = ["ANB", "SNB", "SNA", "ODI", "APDI", "FHI", "FMA", "MW"]


def test_the_anchor_on_a_few_test1_images_is_finite_and_close(data_root: Path) -> None:
    ds = load_dataset(data_root / "isbi2015")
    result = analyses.isbi_split(ds, "test1", None, None, limit=5)
    rows = result["measurements"]
    assert result["images"] == 5 and "target" not in result  # no model: nothing to count
    assert [r["code"] for r in rows.values() if r["analysis"] == "isbi2015"] == ISBI_EIGHT
    for key, r in rows.items():
        assert r["n"] == r["n_junior"] == 5, key
        assert math.isfinite(r["mae_junior"]) and r["mae_junior"] >= 0, key
        assert r["acc_junior"] is None or 0 <= r["acc_junior"] <= 1, key
        assert r["n_model"] == 0 and r["mae_model"] is None and r["acc_model"] is None, key
    assert rows["isbi2015/SNA"]["mae_junior"] < 5.0  # degrees: two annotators of one image roughly agree
    assert rows["isbi2015/SNA"]["unit"] == "deg" and rows["isbi2015/FHI"]["unit"] == "ratio"
    assert rows["steiner/U1-NA-mm"]["acc_junior"] is None  # a measurement without classes


def test_the_model_is_judged_against_the_junior_on_both_figures() -> None:
    row = {"mae_junior": 2.0, "acc_junior": 0.8, "mae_model": 1.5, "acc_model": 0.8}
    assert analyses.at_least_junior(row)
    assert not analyses.at_least_junior(row | {"acc_model": 0.7})
    assert not analyses.at_least_junior(row | {"mae_model": 2.1})
    assert analyses.at_least_junior(row | {"mae_model": None, "acc_model": None}) is None  # lacks landmarks
    assert analyses.at_least_junior(row | {"acc_junior": None, "acc_model": None})  # no classes: MAE alone


def test_main_without_a_checkpoint_writes_the_anchor(
    data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "analyses.json"
    assert analyses.main(["--data-root", str(data_root), "--limit", "3", "--threads", "1", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["checkpoint"] is None and record["machine"]["threads"] == 1 and record["date"]
    assert sorted(record["splits"]) == ["isbi2015/test1", "isbi2015/test2"]
    assert "| isbi2015/SNA | deg | 3 |" in capsys.readouterr().out


def test_range_coverage_grows_with_the_landmark_errors(data_root: Path) -> None:
    ds = load_dataset(data_root / "isbi2015")
    ids = ds.splits["test1"][:5]
    junior = analyses.annotated_points(ds, ids, "junior")  # stands for a model's points
    senior = analyses.annotated_points(ds, ids, "senior")
    errors = analyses.landmark_mre(junior, senior, 0.2)
    assert set(errors) == set(senior[ids[0]]) and all(0 < e < 10 for e in errors.values())  # mm
    reference = analyses.measured(senior, 0.2)
    tiny = analyses.range_coverage(junior, reference, {c: 1e-6 for c in errors}, 0.2)
    wide = analyses.range_coverage(junior, reference, {c: 50.0 for c in errors}, 0.2)
    assert tiny["isbi2015/SNA"] == 0.0 and wide["isbi2015/SNA"] == 1.0
