"""Model choice on a validation split carved from one step's OWN training images (never the test images).

    python -m bench.select --protocol cld38-5step --profile cpu --step 1 --strategy kamp \\
        --grid alpha=0.3,1,3 --grid ka_weight=0.3,1
    python -m bench.select --protocol cld38-5step --profile cpu --step 1 --through 3 --grid alpha=1,3,10

Each candidate (one point of the grid's cartesian product) trains step t from the benchmark's step t-1
checkpoint (bench/ikl.py must have made it) on the step's images minus a held-out share, then is measured on
the held-out images with what an IKL step really has there:
  - new landmarks: radial error against their labels;
  - old landmarks: radial distance from the previous model's predictions (their labels do not exist in IKL),
    i.e. drift. It cannot reward a real improvement of an old landmark, only penalise moving it.
The score is the mean over landmarks of both (each landmark counts once, as in A-MRE); lowest wins.

With --through T the candidate goes on through steps t+1..T, each trained on that step's images minus its own
held-out share, and is measured after step T: the landmarks of every step t..T against their labels on that
step's held-out images (images the clinic annotated and kept aside, never trained on), the landmarks older
than step t by drift on step t's held-out images, as above. This sees what one step cannot: a setting that
keeps old landmarks still at step t may cost the landmarks of step t when steps t+1.. come (forgetting
measured against real labels), and a setting that moves them may be right. The score is then the mean over
the labelled landmarks only (steps t..T: old ones by their forgetting, the last step's by how well they were
learned); the drift of the older ones is reported beside it (`score_with_drift`, the one-step score's
definition) but not scored, since it rewards a model for not moving whether or not moving was right.

With --previous-arm ARM, step t-1's model is that arm's chain's (e.g. `kamp@alpha=10@refine.alpha=300`, as
bench/ikl.py trained it) instead of the bare strategy's: how a chain at its chosen values would have fared at a
later step under other settings (the record is then <strategy>-after-<ARM>-step<t>...; the grid gives every
override, the arm's are not added).

Results go to bench/results/<protocol>-<profile>/selection/<strategy>-step<t>[-T]-seed<s>.json (one entry per
candidate, written as each finishes, so a rerun resumes; a multi-step candidate also keeps each step's model
under selection/checkpoints/ to resume mid-chain) and a markdown table beside it.
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
from models.config import Precision, TrainConfig
from models.datasets import default_data_root, load_protocol
from models.evaluate import evaluate
from models.predictor import Predictor
from models.registry import STRATEGIES
from models.step_data import StepData
from models.trainer import train_step

from .arms import is_override_name, parse_arm, parse_value
from .compute import compute_kind
from .ikl import RESULTS, Runner
from .jsonio import write_json
from .profiles import (
    PROFILES,
    add_candidate_precision_argument,
    add_precision_argument,
    checked_profile,
    with_precision,
)
from .steps import step_data, train_config


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
        if not is_override_name(name):
            raise ValueError(f"{name!r} is not a TrainConfig field (nor refine.<RefineTrainConfig field>)")
        grid[name] = [parse_value(v) for v in values.split(",")]
    return grid


def record_path(out: Path, strategy: str, span: str | int, seed: int) -> Path:
    """Where a strategy's candidates for step `span` ("1", or "1-3" with --through) and `seed` are recorded."""
    return out / "selection" / f"{strategy}-step{span}-seed{seed}.json"


def candidates(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    names = list(grid)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*grid.values())] or [{}]


def drift_labels(previous: Checkpoint, data: StepData, precision: Precision = "auto") -> StepData:
    """`data` with the old landmarks 'labelled' where the previous model puts them (image pixels)."""
    pts, _ = Predictor(previous, precision=precision).predict_arrays(data.images, spacing_mm=data.spacing_mm)
    return StepData(images=data.images, keypoints=pts, codes=previous.codes, spacing_mm=data.spacing_mm, ids=data.ids)


def measure(
    model: Checkpoint, vals: dict[int, StepData], reference: StepData, precision: Precision = "auto"
) -> dict[str, Any]:
    """Per-landmark means after the last selected step, predicted in `precision`.

    Args:
        vals: step -> its held-out images, labelled with the landmarks that step taught (and only those).
        reference: the first selected step's held-out images, 'labelled' with the landmarks older than it where
            the model before it put them (drift_labels).
    Returns new_mre (the last step's landmarks), old_drift (the older ones), learned_mre (the landmarks of the
    selected steps before the last, against their labels; None for one step), by_step, per_landmark,
    score_with_drift (the mean over every landmark) and score: that mean for one step, the mean over the labelled
    landmarks (every selected step's) for more than one.
    """
    old = evaluate(model, reference, precision=precision)
    per = {c: s.mre for c, s in old.landmarks.items()}
    by_step: dict[str, float] = {}
    unit = old.unit
    for t, val in vals.items():
        result = evaluate(model, val, precision=precision)
        by_step[str(t)] = result.overall.mre
        per.update({c: s.mre for c, s in result.landmarks.items()})
        unit = result.unit
    last = max(vals)
    learned = [per[c] for t, val in vals.items() if t != last for c in val.codes]
    with_drift = float(np.mean(list(per.values())))
    return {
        "new_mre": by_step[str(last)],
        "old_drift": old.overall.mre,
        "learned_mre": float(np.mean(learned)) if learned else None,
        "by_step": by_step,
        "score": labelled_mean(per, vals) if len(vals) > 1 else with_drift,
        "score_with_drift": with_drift,
        "per_landmark": per,
        "unit": unit,
    }


def rescore(entry: dict[str, Any], vals: dict[int, StepData]) -> dict[str, Any]:
    """An entry written before multi-step candidates were scored on their labelled landmarks only, scored so
    (from its per-landmark means); a current entry is returned as it is."""
    if "score_with_drift" in entry or len(vals) < 2:
        return entry
    return {**entry, "score_with_drift": entry["score"], "score": labelled_mean(entry["per_landmark"], vals)}


def labelled_mean(per_landmark: dict[str, float], vals: dict[int, StepData]) -> float:
    """The multi-step score: mean over the landmarks the selected steps taught, each against its labels."""
    return float(np.mean([per_landmark[c] for val in vals.values() for c in val.codes]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.select", description=__doc__.split("\n\n")[0])
    p.add_argument("--protocol", required=True)
    p.add_argument("--profile", choices=sorted(PROFILES), default="cpu")
    p.add_argument("--step", type=int, default=1)
    p.add_argument("--through", type=int, default=None, help="chain each candidate on through this step")
    p.add_argument("--strategy", choices=STRATEGIES, default="kamp")
    p.add_argument("--previous-arm", default=None, help="take step t-1's model from this bench.ikl arm's chain")
    p.add_argument("--grid", action="append", default=[], help="TrainConfig field=v1,v2,... (repeatable)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--data-root", type=Path, default=None)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--device", default="auto")
    add_precision_argument(p)
    add_candidate_precision_argument(p)
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
    through = args.step if args.through is None else args.through
    root = args.data_root or default_data_root()
    protocol = load_protocol(root, args.protocol)
    profile = with_precision(PROFILES[args.profile], args.precision)
    if not args.step <= through < len(protocol.steps):
        raise ValueError(
            f"--through must be a step of {args.protocol} from --step ({args.step}) to "
            f"{len(protocol.steps) - 1}; got {through}"
        )
    runner = Runner(protocol, profile, root, args.out / f"{args.protocol}-{profile.name}", args.device)
    # The folder's precision binds its chains; a candidate may train in another (recorded with it), e.g. fp32 on
    # a CPU whose bf16 is emulated: docs/benchmarks.md measures what the precision moves a score.
    profile = with_precision(profile, args.candidate_precision)
    chain = args.strategy if args.previous_arm is None else parse_arm(args.previous_arm).name
    prev_path = runner.ckpt_path(chain, args.seed, args.step - 1)
    if not prev_path.is_file():
        raise FileNotFoundError(f"{prev_path} is missing: run bench.ikl for step {args.step - 1} first")
    previous = Checkpoint.load(prev_path)
    steps = list(range(args.step, through + 1))
    trains: dict[int, StepData] = {}
    vals: dict[int, StepData] = {}
    for t in steps:
        data = step_data(protocol, runner.ds, args.strategy, t, profile)
        tr, va = split(len(data), args.val_fraction, args.seed)
        trains[t] = data.subset(tr.tolist())
        vals[t] = data.subset(va.tolist()).select(protocol.steps[t].landmarks)
    precision = checked_profile(profile, args.device)["precision"]
    reference = drift_labels(previous, vals[args.step], precision)
    span = f"{args.step}" if through == args.step else f"{args.step}-{through}"
    named = args.strategy if args.previous_arm is None else f"{args.strategy}-after-{chain}"
    out = record_path(runner.out, named, span, args.seed)
    val_ids = {str(t): list(vals[t].ids) for t in steps}
    fresh: dict[str, Any] = {"val_ids": val_ids[str(args.step)], "candidates": []}
    if len(steps) > 1:
        fresh["val_ids_by_step"] = val_ids
    record = json.loads(out.read_text()) if out.is_file() else fresh
    if record["val_ids"] != fresh["val_ids"] or record.get("val_ids_by_step") != fresh.get("val_ids_by_step"):
        raise ValueError(f"{out} was made with other validation splits; move it away to start again")
    # Candidates ranked in one table must grow from one model (retrained, it would differ: training is not
    # bit-for-bit repeatable) and have their old landmarks' drift measured from it. Older records lack the hash.
    if record.setdefault("previous_sha256", previous.sha256) != previous.sha256:
        raise ValueError(f"{out} was made from another step-{args.step - 1} model; move it away to start again")
    record["candidates"] = [rescore(c, vals) for c in record["candidates"]]
    done = [c["overrides"] for c in record["candidates"]]
    for overrides in candidates(grid):
        if overrides in done:
            continue
        t0 = time.perf_counter()
        model = previous
        for t in steps:
            config = train_config(profile, args.seed, t, args.device, overrides)
            model = _chain_step(model, trains[t], args.strategy, config, out, overrides, t, last=t == through)
        scores = measure(model, vals, reference, precision)
        seconds = time.perf_counter() - t0
        machine = {"trained_on": compute_kind(args.device), "precision": precision}
        entry = {"overrides": overrides, "seconds": seconds, **machine, **scores}
        record["candidates"].append(entry)
        write_json(out, record)  # atomic: the record of every finished candidate survives a run killed here
        learned = "" if entry["learned_mre"] is None else f" learned {entry['learned_mre']:.3f}"
        print(
            f"{overrides}: score {entry['score']:.3f} new {entry['new_mre']:.3f}{learned} "
            f"old drift {entry['old_drift']:.3f}"
        )
    out.with_suffix(".md").write_text(table(record, args, {t: len(d) for t, d in trains.items()}))
    print(out.with_suffix(".md").read_text())
    return 0


def _chain_step(
    previous: Checkpoint,
    train: StepData,
    strategy: str,
    config: TrainConfig,
    out: Path,
    overrides: dict[str, Any],
    t: int,
    last: bool,
) -> Checkpoint:
    """One step of a candidate's chain. The models before the chain's last step are kept (gitignored, under
    selection/checkpoints/, named after the model they grew from) so that an interrupted multi-step candidate
    resumes where it stopped, and never from a model grown from another parent."""
    if last:
        return train_step(previous, train, strategy, config)[0]
    key = "_".join(f"{k}={v}" for k, v in sorted(overrides.items())) or "defaults"
    path = out.parent / "checkpoints" / out.stem / key / f"step{t}-from-{previous.sha256[:12]}.safetensors"
    if path.is_file():
        return Checkpoint.load(path)
    model, _ = train_step(previous, train, strategy, config)
    model.save(path)
    return model


def table(record: dict[str, Any], args: argparse.Namespace, n_train: dict[int, int]) -> str:
    rows = sorted(record["candidates"], key=lambda c: c["score"])
    unit = rows[0]["unit"] if rows else ""
    steps = sorted(n_train)
    if len(steps) == 1:
        return _table_one(rows, record, args, n_train[steps[0]], unit)
    first, last = steps[0], steps[-1]
    learned = f"step {first}" if last - 1 == first else f"steps {first}-{last - 1}"
    held = ", ".join(f"step {t}: {len(ids)}" for t, ids in record["val_ids_by_step"].items())
    trained = ", ".join(f"step {t}: {n}" for t, n in n_train.items())
    lines = [
        f"# Model choice: {args.strategy}, steps {first}-{last} of {args.protocol} (profile `{args.profile}`, "
        f"seed {args.seed})",
        "",
        f"{_grown_from(args)}Each candidate is chained from the benchmark's step-{first - 1} model through "
        f"steps {first}-{last}, each "
        f"step trained on its images minus a held-out share (trained on {trained}; held out {held}), and measured "
        f"after step {last}: the landmarks of {learned} ('learned') and of step {last} ('new') "
        f"against their labels on their own step's held-out images; the landmarks older than step {first} by drift "
        f"from the step-{first - 1} model on step {first}'s held-out images. Score: mean over the labelled landmarks "
        f"(steps {first}-{last}; {unit}); 'with drift': mean over every landmark, the one-step score, not used here "
        "because drift rewards not moving.",
        "",
        f"| overrides | score | new (step {last}) | learned ({learned}) | old drift | with drift | train s |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in rows:
        lines.append(
            f"| {_overrides(c)} | {c['score']:.3f} | {c['new_mre']:.3f} | {c['learned_mre']:.3f} | "
            f"{c['old_drift']:.3f} | {c['score_with_drift']:.3f} | {_seconds(c)} |"
        )
    return "\n".join(lines) + "\n"


def _grown_from(args: argparse.Namespace) -> str:
    """The table's note of which chain's step t-1 model the candidates grew from, where it is not the strategy's."""
    if args.previous_arm is None:
        return ""
    return f"Every candidate grows from the step-{args.step - 1} model of the chain `{args.previous_arm}`. "


def _overrides(candidate: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in candidate["overrides"].items()) or "(profile defaults)"


def _seconds(candidate: dict[str, Any]) -> str:
    """A candidate's training seconds with the kind of machine and the precision that trained it, where recorded
    (candidates of one table may come from different sessions' machines, whose speeds differ)."""
    made = ", ".join(str(candidate[k]) for k in ("trained_on", "precision") if candidate.get(k))
    return f"{candidate['seconds']:.0f}" + (f" ({made})" if made else "")


def _table_one(
    rows: list[dict[str, Any]], record: dict[str, Any], args: argparse.Namespace, n_train: int, unit: str
) -> str:
    lines = [
        f"# Model choice: {args.strategy}, step {args.step} of {args.protocol} (profile `{args.profile}`, seed "
        f"{args.seed})",
        "",
        f"{_grown_from(args)}Trained on {n_train} of the step's images, measured on the "
        f"{len(record['val_ids'])} held out "
        f"({', '.join(record['val_ids'])}). New landmarks: error against their labels; old landmarks: drift from "
        f"the previous model's predictions (no labels exist for them in IKL). Score: mean over landmarks ({unit}).",
        "",
        "| overrides | score | new MRE | old drift | train s |",
        "|---|---|---|---|---|",
    ]
    for c in rows:
        lines.append(
            f"| {_overrides(c)} | {c['score']:.3f} | {c['new_mre']:.3f} | {c['old_drift']:.3f} | {_seconds(c)} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
