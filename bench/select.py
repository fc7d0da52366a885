"""Model choice on a validation split carved from one step's OWN training images (never the test images).

    python -m bench.select --protocol cld38-5step --profile cpu --step 1 --strategy kamp \\
        --grid alpha=0.3,1,3 --grid ka_weight=0.3,1

Each candidate (one point of the grid's cartesian product) trains step t from the benchmark's step t-1
checkpoint (bench/ikl.py must have made it) on the step's images minus a held-out share, then is measured on
the held-out images with what an IKL step really has there:
  - new landmarks: radial error against their labels;
  - old landmarks: radial distance from the previous model's predictions (their labels do not exist in IKL),
    i.e. drift. It cannot reward a real improvement of an old landmark, only penalise moving it.
The score is the mean over landmarks of both (each landmark counts once, as in A-MRE); lowest wins.
Results go to bench/results/<protocol>-<profile>/selection/<strategy>-step<t>-seed<s>.json (one entry per
candidate, written as each finishes, so a rerun resumes) and a markdown table beside it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from models.checkpoint import Checkpoint
from models.config import STRATEGIES, TrainConfig, from_dict, to_dict
from models.datasets import default_data_root, load_protocol
from models.evaluate import evaluate
from models.predictor import Predictor
from models.step_data import StepData
from models.trainer import train_step

from .arms import TRAIN_FIELDS, parse_value
from .ikl import RESULTS, Runner, step_data, train_config
from .profiles import PROFILES


def split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices) of n images: ceil(fraction * n) held out (at least 1, at most n-1),
    drawn with `seed`."""
    if n < 2:
        raise ValueError("a validation split needs at least 2 images")
    k = min(n - 1, max(1, math.ceil(fraction * n)))
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[k:]), np.sort(order[:k])


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """["alpha=0.3,1", "ksd_mode=marginal,rows"] -> {"alpha": [0.3, 1.0], "ksd_mode": ["marginal", "rows"]};
    every name must be a TrainConfig field."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        name, sep, values = item.partition("=")
        if not sep or not values:
            raise ValueError(f"--grid wants name=v1,v2,...; got {item!r}")
        if name not in TRAIN_FIELDS:
            raise ValueError(f"{name!r} is not a TrainConfig field")
        grid[name] = [parse_value(v) for v in values.split(",")]
    return grid


def candidates(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    names = list(grid)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*grid.values())] or [{}]


def drift_labels(previous: Checkpoint, data: StepData) -> StepData:
    """`data` with the old landmarks 'labelled' where the previous model puts them (image pixels)."""
    pts, _ = Predictor(previous).predict_arrays(data.images)
    return StepData(images=data.images, keypoints=pts, codes=previous.codes, spacing_mm=data.spacing_mm, ids=data.ids)


def measure(model: Checkpoint, val: StepData, reference: StepData) -> dict[str, Any]:
    """New landmarks against their labels, old ones against the previous model; per-landmark means."""
    new = evaluate(model, val.select([c for c in val.codes if c not in reference.codes]))
    old = evaluate(model, reference)
    per = {c: s.mre for c, s in {**old.landmarks, **new.landmarks}.items()}
    return {
        "new_mre": new.overall.mre,
        "old_drift": old.overall.mre,
        "score": float(np.mean(list(per.values()))),
        "per_landmark": per,
        "unit": new.unit,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.select", description=__doc__.split("\n\n")[0])
    p.add_argument("--protocol", required=True)
    p.add_argument("--profile", choices=sorted(PROFILES), default="cpu")
    p.add_argument("--step", type=int, default=1)
    p.add_argument("--strategy", choices=STRATEGIES, default="kamp")
    p.add_argument("--grid", action="append", default=[], help="TrainConfig field=v1,v2,... (repeatable)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--data-root", type=Path, default=None)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    try:
        grid = parse_grid(args.grid)
        return _run(args, grid)
    except (ValueError, FileNotFoundError) as exc:
        print(f"bench.select: error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, grid: dict[str, list[Any]]) -> int:
    if args.step < 1:
        raise ValueError("model choice is for incremental steps (1 and later)")
    root = args.data_root or default_data_root()
    protocol, profile = load_protocol(root, args.protocol), PROFILES[args.profile]
    runner = Runner(protocol, profile, root, args.out / f"{args.protocol}-{profile.name}", args.device)
    prev_path = runner.ckpt_path(args.strategy, args.seed, args.step - 1)
    if not prev_path.is_file():
        raise FileNotFoundError(f"{prev_path} is missing: run bench.ikl for step {args.step - 1} first")
    previous = Checkpoint.load(prev_path)
    data = step_data(protocol, runner.ds, args.strategy, args.step, profile.max_step_images)
    tr, va = split(len(data), args.val_fraction, args.seed)
    train, val = data.subset(tr), data.subset(va)
    reference = drift_labels(previous, val)
    out = runner.out / "selection" / f"{args.strategy}-step{args.step}-seed{args.seed}.json"
    record = json.loads(out.read_text()) if out.is_file() else {"val_ids": list(val.ids), "candidates": []}
    if record["val_ids"] != list(val.ids):
        raise ValueError(f"{out} was made with another validation split; move it away to start again")
    done = [c["overrides"] for c in record["candidates"]]
    for overrides in candidates(grid):
        if overrides in done:
            continue
        config = train_config(profile, args.seed, args.step, args.device)
        config = from_dict(TrainConfig, {**to_dict(config), **overrides})
        t0 = time.perf_counter()
        model, _ = train_step(previous, train, args.strategy, config)
        entry = {"overrides": overrides, "seconds": time.perf_counter() - t0, **measure(model, val, reference)}
        record["candidates"].append(entry)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=1))
        print(f"{overrides}: score {entry['score']:.3f} new {entry['new_mre']:.3f} old drift {entry['old_drift']:.3f}")
    out.with_suffix(".md").write_text(table(record, args, len(train)))
    print(out.with_suffix(".md").read_text())
    return 0


def table(record: dict[str, Any], args: argparse.Namespace, n_train: int) -> str:
    rows = sorted(record["candidates"], key=lambda c: c["score"])
    unit = rows[0]["unit"] if rows else ""
    lines = [
        f"# Model choice: {args.strategy}, step {args.step} of {args.protocol} (profile `{args.profile}`, seed "
        f"{args.seed})",
        "",
        f"Trained on {n_train} of the step's images, measured on the {len(record['val_ids'])} held out "
        f"({', '.join(record['val_ids'])}). New landmarks: error against their labels; old landmarks: drift from "
        f"the previous model's predictions (no labels exist for them in IKL). Score: mean over landmarks ({unit}).",
        "",
        "| overrides | score | new MRE | old drift | train s |",
        "|---|---|---|---|---|",
    ]
    for c in rows:
        o = ", ".join(f"{k}={v}" for k, v in c["overrides"].items()) or "(profile defaults)"
        lines.append(f"| {o} | {c['score']:.3f} | {c['new_mre']:.3f} | {c['old_drift']:.3f} | {c['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
