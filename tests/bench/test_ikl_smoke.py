"""The IKL benchmark's smoke profile end to end on real images: train, evaluate, merge, report, resume."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from bench import ikl, ka_diagnostics, steps
from bench.profiles import PROFILES
from models.checkpoint import Checkpoint


@pytest.mark.slow
def test_smoke_profile_runs_reports_and_resumes(data_root: Path, tmp_path: Path) -> None:
    args = [
        "--protocol",
        "cld38-5step",
        "--profile",
        "smoke",
        "--strategies",
        "kamp,lwf",
        "--max-steps",
        "2",
        "--data-root",
        str(data_root),
        "--out",
        str(tmp_path),
    ]
    assert ikl.main(args) == 0
    out = tmp_path / "cld38-5step-smoke"
    results = json.loads((out / "results.json").read_text())
    assert results["unit"] == "mm"
    assert set(results["strategies"]) == {"kamp", "lwf"}
    for strategy, agg in results["strategies"].items():
        assert agg["steps"] == 2, strategy
        a_mre = [x["mean"] for x in agg["a_mre"]]
        assert all(v is not None and 0 < v < 500 for v in a_mre), (strategy, a_mre)
        # Step 0 is trained once per seed and shared: every strategy starts from the same A-MRE_0.
        assert a_mre[0] == results["strategies"]["kamp"]["a_mre"][0]["mean"]
        e = agg["E_mean"]
        assert e[0][1] is None and e[1][0] is not None and e[1][1] is not None
        assert agg["at"][1]["mean"] is not None
    table = (out / "table.md").read_text()
    assert "| kamp | 1 |" in table and "| lwf | 1 |" in table
    for plot in ("a_mre.png", "e_matrix.png", "per_landmark.png"):
        assert (out / plot).stat().st_size > 1000

    # A second invocation finds every step done: it trains nothing and reproduces the same evaluations.
    evals = {p.name: p.read_text() for p in (out / "evals").glob("*.json")}
    checkpoints = {p: p.stat().st_mtime_ns for p in (out / "checkpoints").rglob("*.safetensors")}
    assert ikl.main(args) == 0
    assert {p.name: p.read_text() for p in (out / "evals").glob("*.json")} == evals
    assert {p: p.stat().st_mtime_ns for p in (out / "checkpoints").rglob("*.safetensors")} == checkpoints
    assert len(json.loads((out / "runs.json").read_text())) == 2

    # A step retrained because its checkpoint was lost (a fresh checkout keeps evaluations, not checkpoints) is
    # evaluated again where its record names another model, as it would on another machine: training is not
    # bit-for-bit repeatable there. The chain then stays one line of models.
    (out / "checkpoints" / "seed0" / "lwf" / "step1.safetensors").unlink()
    first = out / "evals" / "lwf-seed0-step1.json"
    first.write_text(json.dumps({**json.loads(first.read_text()), "checkpoint_sha256": "0" * 64}))
    longer = [*args[:5], "lwf", "--max-steps", "3", *args[8:]]
    assert ikl.main(longer) == 0
    kept = Checkpoint.load(out / "checkpoints" / "seed0" / "lwf" / "step1.safetensors").sha256
    assert json.loads(first.read_text())["checkpoint_sha256"] == kept
    assert json.loads((out / "evals" / "lwf-seed0-step2.json").read_text())["parent_sha256"] == kept
    assert "Chains cut short" not in (out / "table.md").read_text()

    # The KA-Net diagnostic reads the same models: its teacher and student errors of each triplet's old landmark
    # are the step-0 and KAMP step-1 evaluations' errors of that landmark.
    common = ["--protocol", "cld38-5step", "--profile", "smoke", "--data-root", str(data_root), "--out", str(tmp_path)]
    assert ka_diagnostics.main(common) == 0
    diag = json.loads((out / "diagnostics" / "ka-kamp-seed0.json").read_text())
    [step] = diag["steps"]
    assert step["step"] == 1 and diag["unit"] == "mm" and step["triplets"]
    evals = {
        n: json.loads((out / "evals" / f"{n}-seed0-step{t}.json").read_text()) for n, t in (("step0", 0), ("kamp", 1))
    }
    for tr in step["triplets"]:
        old = tr["triplet"][0]
        assert tr["teacher"] == pytest.approx(np.nanmean(np.array(evals["step0"]["errors"][old], float)), abs=1e-3)
        assert tr["student"] == pytest.approx(np.nanmean(np.array(evals["kamp"]["errors"][old], float)), abs=1e-3)
        assert all(0 <= tr[w] < 500 for w in ka_diagnostics.WAYS)
    assert "| 1 |" in (out / "diagnostics" / "ka-kamp-seed0.md").read_text()
    assert ka_diagnostics.main([*common, "--seed", "7"]) == 2  # no models of that seed: a clear error
    assert ka_diagnostics.main([*common, "--strategy", "kamp@feature_weight=1"]) == 2  # an arm not run
    for bad in ("lwf", "kamp@alpha", "kamp@nope=1"):  # no KA-Net, misspelt arms: usage errors
        with pytest.raises(SystemExit):
            ka_diagnostics.main([*common, "--strategy", bad])


def test_joint_data_holds_every_label_and_partial_only_its_own(data_root: Path) -> None:
    from models.datasets import load_protocol

    protocol = load_protocol(data_root, "cld38-5step")
    ds = protocol.load_dataset(data_root)
    three = replace(PROFILES["smoke"], max_step_images=3)
    joint = steps.step_data(protocol, ds, "joint", 1, three)
    partial = steps.step_data(protocol, ds, "joint_partial", 1, three)
    ikl_step = steps.step_data(protocol, ds, "kamp", 1, three)
    assert len(joint) == len(partial) == 6 and len(ikl_step) == 3
    # A low-shot profile caps the incremental steps only; the oracle sees the same images.
    one = replace(PROFILES["lowshot-1"], max_step_images=3)
    assert len(steps.step_data(protocol, ds, "kamp", 1, one)) == 1
    assert len(steps.step_data(protocol, ds, "joint", 1, one)) == 4
    assert len(steps.step_data(protocol, ds, "finetune", 0, one)) == 3
    assert joint.codes == partial.codes == protocol.landmarks_up_to(1)
    assert joint.labelled.all()
    # joint_partial: step-0 images carry only step-0 labels, step-1 images only step-1 labels.
    n0 = len(protocol.steps[0].landmarks)
    assert partial.labelled[:3, :n0].all() and not partial.labelled[:3, n0:].any()
    assert partial.labelled[3:, n0:].all() and not partial.labelled[3:, :n0].any()
    assert ikl_step.codes == protocol.steps[1].landmarks


def test_resume_point_continues_from_the_last_kept_checkpoint(data_root: Path, tmp_path: Path) -> None:
    from bench.profiles import PROFILES
    from models.datasets import load_protocol

    runner = ikl.Runner(load_protocol(data_root, "cld38-5step"), PROFILES["smoke"], data_root, tmp_path, "cpu")

    def touch(path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")

    assert runner.resume_point("kamp", 0, 5) == 1  # nothing done
    for t in (1, 2):
        touch(runner.eval_path("kamp", 0, t))
    # Steps 1-2 evaluated but no checkpoint kept (a fresh checkout): the chain restarts at step 1.
    assert runner.resume_point("kamp", 0, 5) == 1
    touch(runner.ckpt_path("kamp", 0, 2))
    assert runner.resume_point("kamp", 0, 5) == 3  # continues from step 2's checkpoint
    for t in (3, 4):
        touch(runner.eval_path("kamp", 0, t))
    assert runner.resume_point("kamp", 0, 5) == 5  # complete: nothing to train, no checkpoint needed


def test_a_profile_takes_the_step_0_it_shares_and_refuses_another(data_root: Path, tmp_path: Path) -> None:
    from models.datasets import load_protocol

    protocol = load_protocol(data_root, "cld38-5step")
    base = tmp_path / "cld38-5step-smoke"
    ikl.Runner(protocol, PROFILES["smoke"], data_root, base, "cpu")  # writes the base folder's profile.json
    files = {"checkpoints/seed0/shared/step0.safetensors": b"model", "evals/step0-seed0-step0.json": b"{}"}
    for rel, content in files.items():
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        (base / rel).write_bytes(content)
    few = replace(PROFILES["smoke"], name="few", max_incremental_images=1, step_iterations=3, step0_of="smoke")
    runner = ikl.Runner(protocol, few, data_root, tmp_path / "cld38-5step-few", "cpu")
    assert not runner.adopt_step0(1)  # the base folder has no step 0 of seed 1: train it
    assert runner.adopt_step0(0)
    for rel, content in files.items():
        assert (runner.out / rel).read_bytes() == content
    assert not runner.adopt_step0(0)  # its own now: nothing to take
    # A fresh checkout keeps the evaluation (committed), not the model: the model is taken again, not retrained.
    runner.ckpt_path("step0", 0, 0).unlink()
    assert runner.adopt_step0(0) and runner.ckpt_path("step0", 0, 0).read_bytes() == b"model"
    # An evaluation of another model is not paired with this one.
    runner.ckpt_path("step0", 0, 0).unlink()
    runner.eval_path("step0", 0, 0).write_bytes(b'{"other": 1}')
    with pytest.raises(SystemExit, match="is not the evaluation of"):
        runner.adopt_step0(0)
    assert not runner.ckpt_path("step0", 0, 0).exists()

    other = replace(few, name="other", step0_iterations=5)
    runner = ikl.Runner(protocol, other, data_root, tmp_path / "cld38-5step-other", "cpu")
    with pytest.raises(SystemExit, match="step0_iterations"):
        runner.adopt_step0(0)
    assert not runner.ckpt_path("step0", 0, 0).exists()


@pytest.mark.slow
def test_a_from_scratch_step_runs_alone_and_only_for_scratch_arms(data_root: Path, tmp_path: Path) -> None:
    common = ["--protocol", "cld38-5step", "--profile", "smoke", "--data-root", str(data_root), "--out", str(tmp_path)]
    assert ikl.main([*common, "--strategies", "joint@budget=scratch", "--steps", "2"]) == 0
    out = tmp_path / "cld38-5step-smoke"
    assert sorted(p.name for p in (out / "evals").glob("*.json")) == ["joint@budget=scratch-seed0-step2.json"]
    record = json.loads((out / "evals" / "joint@budget=scratch-seed0-step2.json").read_text())
    assert record["parent_sha256"] is None  # trained from nothing
    assert "| joint@budget=scratch | 1 | – |" in (out / "table.md").read_text()
    mtime = (out / "evals" / "joint@budget=scratch-seed0-step2.json").stat().st_mtime_ns
    assert ikl.main([*common, "--strategies", "joint@budget=scratch", "--steps", "2"]) == 0  # evaluated: skipped
    assert (out / "evals" / "joint@budget=scratch-seed0-step2.json").stat().st_mtime_ns == mtime
    for bad in (["joint@budget=grow", "2"], ["kamp", "1"], ["joint@budget=scratch", "5"]):
        with pytest.raises(SystemExit):  # a chained arm, or no such incremental step: a usage error
            ikl.main([*common, "--strategies", bad[0], "--steps", bad[1]])
