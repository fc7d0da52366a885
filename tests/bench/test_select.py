"""bench.select: model choice on a split of the step's own images, on the smoke profile with real images."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from bench import ikl, select


def test_split_holds_out_a_fixed_share_and_never_everything() -> None:
    tr, va = select.split(40, 0.2, seed=0)
    assert len(va) == 8 and len(tr) == 32 and not set(tr) & set(va)
    assert np.array_equal(va, select.split(40, 0.2, seed=0)[1])  # the same seed, the same split
    assert len(select.split(2, 0.9, seed=0)[0]) == 1  # at least one image stays for training
    with pytest.raises(ValueError):
        select.split(1, 0.2, seed=0)


def test_grid_parses_typed_values_and_refuses_unknown_fields() -> None:
    grid = select.parse_grid(["alpha=0.3,1", "ksd_mode=marginal,rows"])
    assert grid == {"alpha": [0.3, 1], "ksd_mode": ["marginal", "rows"]}
    assert len(select.candidates(grid)) == 4 and select.candidates({}) == [{}]
    for bad in ("alpha", "alpha=", "no_such_field=1"):
        with pytest.raises(ValueError):
            select.parse_grid([bad])


@pytest.mark.slow
def test_smoke_selection_measures_new_error_and_old_drift(data_root: Path, tmp_path: Path) -> None:
    common = ["--protocol", "cld38-5step", "--profile", "smoke", "--data-root", str(data_root), "--out", str(tmp_path)]
    assert select.main([*common, "--step", "1", "--strategy", "lwf"]) == 2  # no step-0 model yet: a clear error
    assert ikl.main([*common, "--strategies", "lwf", "--max-steps", "2"]) == 0
    args = [*common, "--step", "1", "--strategy", "lwf", "--grid", "alpha=0.5,2"]
    assert select.main(args) == 0
    out = tmp_path / "cld38-5step-smoke" / "selection" / "lwf-step1-seed0.json"
    record = json.loads(out.read_text())
    assert len(record["val_ids"]) == 2  # 20% of the smoke profile's 8 step images, rounded up
    assert [c["overrides"] for c in record["candidates"]] == [{"alpha": 0.5}, {"alpha": 2}]
    for c in record["candidates"]:
        assert c["unit"] == "mm" and all(math.isfinite(c[k]) and c[k] > 0 for k in ("score", "new_mre", "old_drift"))
        assert len(c["per_landmark"]) == 24  # 19 old (drift) + 5 new (error)
        assert c["score"] == pytest.approx(np.mean(list(c["per_landmark"].values())))
    assert "| alpha=" in out.with_suffix(".md").read_text()
    # A rerun finds every candidate done and trains nothing.
    assert select.main(args) == 0
    assert json.loads(out.read_text()) == record
