"""bench.joint_restart: one joint step again from the arm's previous model, beside the arm's own step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import ikl, joint_restart


def test_group_mre_averages_each_landmark_once() -> None:
    errors = {"A": [1.0, 3.0], "B": [4.0, None], "C": [0.0, 0.0]}
    assert joint_restart.group_mre(errors, [["A", "B"], ["C"]]) == [3.0, 0.0]


@pytest.mark.slow
def test_a_joint_step_again_at_another_learning_rate(data_root: Path, tmp_path: Path) -> None:
    common = ["--protocol", "cld38-5step", "--profile", "smoke", "--data-root", str(data_root), "--out", str(tmp_path)]
    assert ikl.main([*common, "--strategies", "joint@budget=grow", "--max-steps", "2"]) == 0
    assert joint_restart.main([*common, "--arm", "joint@budget=grow", "--step", "1", "--set", "lr=0.0005"]) == 0
    out = tmp_path / "cld38-5step-smoke" / "diagnostics" / "joint-restart-joint@budget=grow-step1-seed0-lr=0.0005.json"
    record = json.loads(out.read_text())
    own = json.loads((tmp_path / "cld38-5step-smoke" / "evals" / "joint@budget=grow-seed0-step1.json").read_text())
    assert record["overrides"] == {"lr": 0.0005} and record["iterations"] > 0
    from models.datasets import load_protocol

    steps = load_protocol(data_root, "cld38-5step").steps
    groups = [steps[0].landmarks, steps[1].landmarks]
    assert record["arm_first_stage_by_step"] == joint_restart.group_mre(own["errors"], groups)  # one stage
    assert len(record["first_stage_by_step"]) == 2 and all(v > 0 for v in record["first_stage_by_step"])
