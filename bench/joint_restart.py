"""Why a joint model grown from the previous one can fall behind: one joint step again at other settings.

    python -m bench.joint_restart --protocol cld38-5step --profile cpu-local-preact --arm 'joint@budget=grow' \\
        --step 2 --seed 0 --set lr=0.0005

Trains step t of the oracle from the arm's step t-1 checkpoint (bench/ikl.py must have made it) on every image so
far with every landmark so far, at the arm's iterations with `--set` TrainConfig overrides on top, and reports
the first stage's test error (the local stage gets a token budget: the question is about the shared network)
beside the arm's own step t, per landmark group (the steps that added them). A diagnosis of the oracle's
training, not a model choice: nothing here feeds a benchmark row. Writes
bench/results/<protocol>-<profile>/diagnostics/joint-restart-<arm>-step<t>-seed<s>-<set>.json.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.checkpoint import Checkpoint
from models.evaluate import evaluate
from models.predictor import Predictor
from models.trainer import train_step

from .arms import parse_arm, parse_value
from .ikl import RESULTS, Runner
from .profiles import PROFILES
from .steps import apply_overrides, joint_budget, step_data, train_config


def group_mre(errors: Mapping[str, Sequence[float | None]], groups: list[list[str]]) -> list[float]:
    """Mean radial error of each landmark group: the mean over its landmarks of each one's mean over images."""
    per = {c: float(np.nanmean(np.array(v, dtype=float))) for c, v in errors.items()}
    return [float(np.mean([per[c] for c in g])) for g in groups]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.joint_restart", description=__doc__.split("\n\n")[0])
    p.add_argument("--protocol", required=True)
    p.add_argument("--profile", choices=sorted(PROFILES), default="cpu-local-preact")
    p.add_argument("--arm", default="joint@budget=grow", help="a joint arm whose chain bench.ikl has run")
    p.add_argument("--step", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="TrainConfig override")
    p.add_argument("--data-root", type=Path, default=None, help="default: models.datasets.default_data_root()")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    arm = parse_arm(args.arm)
    if arm.strategy != "joint" or arm.budget == "scratch" or args.step < 1:
        p.error("--arm must be a joint arm grown from its previous model (not budget=scratch), --step at least 1")
    from models.datasets import default_data_root, load_protocol

    profile = PROFILES[args.profile]
    root = args.data_root or default_data_root()
    protocol = load_protocol(root, args.protocol)
    out = args.out / f"{args.protocol}-{args.profile}"
    runner = Runner(protocol, profile, root, out, "cpu")
    previous = Checkpoint.load(runner.ckpt_path(arm.name, args.seed, args.step - 1))  # step 0: the shared one
    own = json.loads(runner.eval_path(arm.name, args.seed, args.step).read_text())
    overrides = {k: parse_value(v) for k, v in (s.split("=", 1) for s in args.set)}
    config = train_config(profile, args.seed, args.step, "cpu", arm.train_overrides)
    joint_budget(config, profile, arm.budget, args.step, runner.step_sizes(args.step))
    config = apply_overrides(config, overrides)  # last: an override of the budget's iterations holds too
    config.refine.iterations = 1
    data = step_data(protocol, runner.ds, "joint", args.step, profile)
    model, report = train_step(previous, data, "joint", config)
    test = runner.test.select(protocol.landmarks_up_to(args.step))
    result = evaluate(Predictor(model, precision=profile.precision, local=False), test)
    errors = {c: [float(x) for x in result.errors[:, j]] for j, c in enumerate(result.codes)}
    groups = [protocol.steps[s].landmarks for s in range(args.step + 1)]
    record: dict[str, Any] = {
        "arm": arm.name,
        "step": args.step,
        "seed": args.seed,
        "iterations": config.iterations,
        "overrides": overrides,
        "train_seconds": report.seconds,
        "final_loss": report.loss_history[-1] if report.loss_history else None,
        "arm_final_loss": Checkpoint.load(runner.ckpt_path(arm.name, args.seed, args.step)).report["loss_history"][-1],
        "first_stage_by_step": group_mre(errors, groups),
        "arm_first_stage_by_step": group_mre(own.get("errors_global", own["errors"]), groups),
        "errors_global": errors,
    }
    tag = "_".join(f"{k}={v}" for k, v in sorted(overrides.items())) or "same"
    path = out / "diagnostics" / f"joint-restart-{arm.name}-step{args.step}-seed{args.seed}-{tag}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1))
    print(json.dumps({k: v for k, v in record.items() if k != "errors_global"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
