"""bench.landmark_load: step 0 again with more landmarks, its step-0 landmarks beside the step-0 model's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench import ikl, landmark_load
from models.datasets import load_protocol


@pytest.mark.slow
def test_step_0_again_with_every_landmark(data_root: Path, tmp_path: Path) -> None:
    common = ["--protocol", "cld38-5step", "--profile", "smoke", "--data-root", str(data_root), "--out", str(tmp_path)]
    with pytest.raises(SystemExit):  # no step-0 model yet: a usage error naming what to run
        landmark_load.main([*common, "--landmarks", "24"])
    assert ikl.main([*common, "--strategies", "kamp", "--max-steps", "1"]) == 0
    for bad in ("19", "39"):  # step 0's own count, or more than the protocol has
        with pytest.raises(SystemExit):
            landmark_load.main([*common, "--landmarks", bad])
    assert landmark_load.main([*common, "--landmarks", "24"]) == 0
    out = tmp_path / "cld38-5step-smoke"
    record = json.loads((out / "diagnostics" / "landmark-load-seed0-k24.json").read_text())
    own = load_protocol(data_root, "cld38-5step").landmarks_up_to(0)
    assert record["landmarks"] == 24 and record["step0_landmarks"] == len(own) and record["loss_history"]
    rows = record["first_stage_step0_landmarks"]
    for name in ("step0", "k24"):
        for split in ("train", "test"):
            assert set(rows[name][split]["per_landmark"]) == set(own)  # step 0's landmarks only, for both models
            assert 0 < rows[name][split]["mre"] < 500
    # The step-0 model's test row is its own evaluation's first stage, recomputed.
    evaluated = json.loads((out / "evals" / "step0-seed0-step0.json").read_text())
    first = evaluated.get("errors_global", evaluated["errors"])
    for code in own:
        assert rows["step0"]["test"]["per_landmark"][code] == pytest.approx(
            np.nanmean(np.array(first[code], float)), abs=2e-3
        )
