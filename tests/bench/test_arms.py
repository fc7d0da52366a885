"""bench.arms: a strategy with TrainConfig overrides, measured as an arm of its own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import evals, ikl, steps
from bench.arms import Arm, parse_arm, parse_value
from models.checkpoint import Checkpoint


def test_parse_arm_reads_typed_overrides() -> None:
    assert parse_arm("kamp") == Arm("kamp", "kamp", {})
    arm = parse_arm("kamp@ka_mode=pseudo_label@ka_weight=3@lr=1e-3")
    assert arm.strategy == "kamp" and arm.name == "kamp@ka_mode=pseudo_label@ka_weight=3@lr=1e-3"
    assert arm.overrides == {"ka_mode": "pseudo_label", "ka_weight": 3, "lr": 0.001}
    assert [parse_value(v) for v in ("3", "0.5", "2e-3", "rows")] == [3, 0.5, 0.002, "rows"]
    assert parse_arm("kamp_ksd_only@refine.alpha=30").overrides == {"refine.alpha": 30}


@pytest.mark.parametrize(
    "spec",
    [
        "kampp",
        "kamp@alpha",
        "kamp@alpha=",
        "kamp@=1",
        "kamp@no_such_field=1",
        "kamp@alpha=1@alpha=2",
        "kamp@refine.nope=1",
    ],
)
def test_parse_arm_refuses_bad_spellings(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_arm(spec)


def test_report_reads_arm_names_and_orders_them_after_their_strategy() -> None:
    m = evals.EVAL.fullmatch("kamp@ka_mode=pseudo_label@lr=1e-3-seed2-step4.json")
    assert m and (m["name"], m["seed"], m["step"]) == ("kamp@ka_mode=pseudo_label@lr=1e-3", "2", "4")
    assert evals.eval_name("kamp@ka_mode=pseudo_label@lr=1e-3", 2, 4) == m.string  # written as it is read
    dotted = evals.EVAL.fullmatch("kamp_ksd_only@refine.alpha=30-seed0-step1.json")
    assert dotted and dotted["name"] == "kamp_ksd_only@refine.alpha=30"
    assert evals.eval_name("kamp", 1, 0) == "step0-seed1-step0.json"  # step 0 is shared
    names = ["joint", "kamp@ka_weight=0", "lwf", "kamp"]
    assert sorted(names, key=evals.arm_order) == ["lwf", "kamp", "kamp@ka_weight=0", "joint"]


def test_arm_overrides_apply_from_step_one_only() -> None:
    from bench.profiles import PROFILES

    profile = PROFILES["smoke"]
    assert steps.train_config(profile, 0, 0, "cpu", {"alpha": 0.25}).alpha == 1.0  # step 0 is shared
    assert steps.train_config(profile, 0, 1, "cpu", {"alpha": 0.25}).alpha == 0.25
    tuned = steps.train_config(profile, 0, 1, "cpu", {"lr": 1e-4, "iterations": 7})  # fields the profile sets
    assert (tuned.lr, tuned.iterations) == (1e-4, 7) and tuned.batch_size == profile.batch_size


@pytest.mark.slow
def test_smoke_arm_is_trained_with_its_overrides_beside_the_plain_strategy(data_root: Path, tmp_path: Path) -> None:
    args = ["--protocol", "cld38-5step", "--profile", "smoke", "--max-steps", "2", "--data-root", str(data_root)]
    assert ikl.main([*args, "--out", str(tmp_path), "--strategies", "lwf,lwf@alpha=0.25"]) == 0
    out = tmp_path / "cld38-5step-smoke"
    record = json.loads((out / "evals" / "lwf@alpha=0.25-seed0-step1.json").read_text())
    assert record["strategy"] == "lwf@alpha=0.25" and record["base_strategy"] == "lwf"
    assert record["overrides"] == {"alpha": 0.25} and record["train_config"]["alpha"] == 0.25
    assert "overrides" not in json.loads((out / "evals" / "lwf-seed0-step1.json").read_text())
    arm = Checkpoint.load(out / "checkpoints" / "seed0" / "lwf@alpha=0.25" / "step1.safetensors")
    plain = Checkpoint.load(out / "checkpoints" / "seed0" / "lwf" / "step1.safetensors")
    assert arm.strategy == plain.strategy == "lwf"
    assert (arm.train_config["alpha"], plain.train_config["alpha"]) == (0.25, 1.0)
    assert arm.parent_sha256 == plain.parent_sha256  # both grew from the one shared step-0 model
    results = json.loads((out / "results.json").read_text())
    assert list(results["strategies"]) == ["lwf", "lwf@alpha=0.25"]
    assert "| lwf@alpha=0.25 | 1 |" in (out / "table.md").read_text()
    with pytest.raises(SystemExit):  # a misspelt arm is a usage error, not a traceback
        ikl.main([*args, "--out", str(tmp_path), "--strategies", "lwf@alpha"])

    # Every chain records the step-0 model it grew from; a chain grown from another step-0 model than the one
    # evaluated (step 0 retrained after its checkpoint was lost) is named under the table.
    step0 = out / "evals" / "step0-seed0-step0.json"
    assert record["parent_sha256"] == json.loads(step0.read_text())["checkpoint_sha256"]
    assert "retrained" not in (out / "table.md").read_text()
    first = out / "evals" / "lwf-seed0-step1.json"
    first.write_text(json.dumps({**json.loads(first.read_text()), "parent_sha256": "0" * 64}))
    assert ikl.main([*args, "--out", str(tmp_path), "--report-only"]) == 0
    assert json.loads((out / "results.json").read_text())["regrown_from_retrained_step0"] == [
        {"strategy": "lwf", "seed": 0}
    ]
    assert "retrained step-0 model of the same seed" in (out / "table.md").read_text()
    assert "lwf seed 0." in (out / "table.md").read_text()


def test_a_joint_budget_is_a_bench_setting_not_a_train_field() -> None:
    from bench.profiles import PROFILES
    from bench.steps import joint_budget, train_config

    arm = parse_arm("joint@budget=scratch")
    assert arm.budget == "scratch" and arm.train_overrides == {}
    for bad in ("kamp@budget=scratch", "joint@budget=forever"):
        with pytest.raises(ValueError, match="budget"):
            parse_arm(bad)
    profile = PROFILES["cpu-local"]
    sizes = [40, 40, 38]  # images of steps 0, 1, 2
    config = train_config(profile, 0, 2, "cpu", arm.train_overrides)
    assert joint_budget(config, profile, "scratch", 2, sizes) is True  # trained from nothing
    assert config.iterations == round(1000 * 118 / 40) and config.refine.iterations == round(1000 * 118 / 40)
    config = train_config(profile, 0, 2, "cpu")
    assert joint_budget(config, profile, "grow", 2, sizes) is False  # from the previous joint model
    assert config.iterations == round(250 * 118 / 38) and config.refine.iterations == round(500 * 118 / 38)
    config = train_config(profile, 0, 2, "cpu")
    assert joint_budget(config, profile, None, 2, sizes) is False and config.iterations == 250


def _arm(a_mre: list[float]) -> dict:
    per_seed = {str(seed): {"a_mre": a_mre} for seed in range(3)}
    return {"steps": len(a_mre), "a_mre": [{"mean": v, "sd": 0.0, "n": 3} for v in a_mre], "per_seed": per_seed}


def test_the_oracle_check_names_each_step_an_incremental_strategy_beats_joint() -> None:
    from bench.report import oracle_check

    agg = {
        "kamp": _arm([2.0, 2.1, 2.3]),
        "kamp_ksd_only": _arm([2.0, 1.9, 2.2]),
        "joint_partial": _arm([2.0, 1.0, 1.0]),  # not an upper bound, and not compared with one
        "joint": _arm([2.0, 2.0, 2.1]),
        "joint@budget=scratch": _arm([2.0, 1.8, 1.9]),
        # A first stage is compared with the oracle's first stage, never with a two-stage row.
        "kamp (first stage)": _arm([2.5, 1.95, 2.6]),  # under joint's 2.00, over its first stage's 1.90
        "joint (first stage)": _arm([2.5, 1.9, 2.5]),
    }
    lines = [line for line in oracle_check(agg) if line]
    assert lines == [
        "Oracle check, joint: beaten at step 1: kamp_ksd_only 1.90 < 2.00.",
        "Oracle check, joint@budget=scratch: at least as good as every incremental strategy.",
        "Oracle check, joint (first stage): at least as good as every incremental strategy.",
    ]
