"""bench.landmark_load: step 0 again with more landmarks, its step-0 landmarks beside the step-0 model's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench import ikl, landmark_load
from models.codec import HeatmapCodec
from models.config import CodecConfig
from models.datasets import load_protocol
from models.step_data import StepData


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
    assert record["rank"] == 19  # the tiny HRNet's 18 channels and the bias
    bound = record["rank_bound_l_gt"]
    assert bound["step0"] == pytest.approx(0.0, abs=1e-6) and bound["k24"] > 0  # 19 maps fit rank 19; 24 do not
    near = record["nearest_added"]
    added = load_protocol(data_root, "cld38-5step").landmarks[len(own) : 24]
    assert set(near) == set(own) and all(n["nearest"] in added and n["mm"] > 0 for n in near.values())
    # The smoke profile's 160-row input holds the 240 mm tall cephalogram in 40 heatmap rows (stride 4): 6 mm a pixel.
    assert all(n["heatmap_px"] == pytest.approx(n["mm"] / 6.0, rel=0.05) for n in near.values())
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


def _two_landmarks(second: tuple[float, float]) -> StepData:
    """One blank 64x64 image (letterboxed 1:1 into a 64x64 input) with a landmark at heatmap pixel (4, 4) and one
    at `second` (heatmap pixels; image pixel = 4 * heatmap pixel + 1.5 at stride 4)."""
    points = np.array([[[4 * 4 + 1.5] * 2, [4 * second[0] + 1.5, 4 * second[1] + 1.5]]])
    return StepData(images=[np.zeros((64, 64), np.uint8)], keypoints=points, codes=["a", "b"])


def test_rank_bound_is_the_energy_beyond_the_rank() -> None:
    codec = HeatmapCodec(CodecConfig(input_size=(64, 64), sigma=1.0))
    apart, together = _two_landmarks((11.0, 11.0)), _two_landmarks((4.0, 4.0))
    one_map = np.pi * 1.0**2 / (2 * 16 * 16) * 1000  # sum of a unit Gaussian's squares, over 2 maps of 16x16
    assert landmark_load.rank_bound(apart, codec, 2) == pytest.approx(0.0, abs=1e-9)
    assert landmark_load.rank_bound(apart, codec, 1) == pytest.approx(one_map, rel=1e-3)  # one map left out
    assert landmark_load.rank_bound(together, codec, 1) == pytest.approx(0.0, abs=1e-9)  # one map serves both
    assert landmark_load.rank_bound(apart, codec, 0) == pytest.approx(2 * one_map, rel=1e-3)
