"""The same model choice for every distilling strategy (bench/select.py), with the same budget of candidates.

    python -m bench.selection_plan --protocol cld38-5step --profile cpu-local-preact --step 1 --seed 0
    python -m bench.selection_plan ... --summary-only

Each strategy's distillation weight `alpha` over three decades (four values) at the default temperature, then
the temperature around its default at the alpha that won: six candidates per strategy (the defaults, alpha 1 at
T 0.1, among them), each scored by bench/select.py on a validation split of step t's own training images, never the test
images. CPR keeps its beta (chosen earlier, docs/benchmarks.md). The chosen values per strategy go to
bench/results/<protocol>-<profile>/selection/plan-step<t>-seed<s>.md, beside each strategy's own table.
Candidates already measured are skipped (bench/select.py resumes), so the plan resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from models.config import RefineTrainConfig, TrainConfig

from . import select
from .ikl import RESULTS
from .profiles import PROFILES, add_candidate_precision_argument, add_precision_argument

#: Strategies that distil from the previous model, i.e. that have an alpha to choose.
STRATEGIES = ("lwf", "cpr", "kamp_ksd_only", "kamp")
ALPHAS = (0.1, 1.0, 10.0, 100.0)
DEFAULT_ALPHA = TrainConfig().alpha
DEFAULT_TEMPERATURE = TrainConfig().temperature
TEMPERATURES = (DEFAULT_TEMPERATURE / 2, DEFAULT_TEMPERATURE, DEFAULT_TEMPERATURE * 2)
#: The local stage's weight every plan candidate trains with.
LOCAL_DEFAULT = float(RefineTrainConfig().alpha or DEFAULT_ALPHA)


def alpha_stage() -> list[str]:
    """bench.select --grid arguments of the first stage: alpha over three decades at the default temperature."""
    return [f"alpha={','.join(str(a) for a in ALPHAS)}", f"temperature={DEFAULT_TEMPERATURE}"]


def temperature_stage(alpha: float) -> list[str]:
    """The second stage: the temperatures around the default at the chosen alpha (the default's candidate is
    the first stage's, measured already)."""
    return [f"alpha={alpha}", f"temperature={','.join(str(t) for t in TEMPERATURES)}"]


def budget() -> int:
    """Candidates each strategy gets: the first stage's and the second's new ones."""
    return len(ALPHAS) + len(TEMPERATURES) - 1


def planned(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The record's candidates that are this plan's (the file may also hold other grids' for the strategy)."""
    return [
        c
        for c in record["candidates"]
        if set(c["overrides"]) == {"alpha", "temperature"}
        and c["overrides"]["alpha"] in ALPHAS
        and c["overrides"]["temperature"] in TEMPERATURES
    ]


def best(record: dict[str, Any], **fixed: float) -> dict[str, Any]:
    """The lowest-scoring of the plan's candidates in a bench.select record among those whose overrides hold
    `fixed`."""
    entries = [c for c in planned(record) if all(c["overrides"].get(k) == v for k, v in fixed.items())]
    if not entries:
        raise ValueError(f"no candidate with {fixed} in the record")
    return min(entries, key=lambda c: c["score"])


def local_weight(record: dict[str, Any], again: dict[str, Any] | None = None) -> float:
    """The local stage's distillation weight (`refine.alpha`) the record chose at the plan's chosen first-stage
    values: the best of the chosen candidate (at RefineTrainConfig's default weight) and those that add only a
    `refine.alpha` to its overrides (`bench.select ... --grid refine.alpha=...`, docs/benchmarks.md).

    `again`: a record of the chosen values trained again at each weight, the default's included, from another
    step-0 model than `record`'s (a record made before its step-0 model was retrained can take no candidate of
    the new one: bench.select compares only candidates grown from one model). Its candidates decide alone."""
    chosen = best(record)
    if again is not None:
        return _best_weight(chosen["overrides"], again["candidates"], {})
    return _best_weight(chosen["overrides"], record["candidates"], {LOCAL_DEFAULT: chosen["score"]})


def _best_weight(chosen: dict[str, Any], candidates: list[dict[str, Any]], scored: dict[float, float]) -> float:
    """The lowest-scoring local weight among `scored` and the `candidates` that add only a `refine.alpha` to the
    `chosen` first-stage overrides."""
    scored = dict(scored)
    for c in candidates:
        extra = {k: v for k, v in c["overrides"].items() if k not in chosen}
        if set(extra) == {"refine.alpha"} and all(c["overrides"].get(k) == v for k, v in chosen.items()):
            scored[float(extra["refine.alpha"])] = c["score"]
    if not scored:
        raise ValueError(f"no candidate at {chosen} with a refine.alpha")
    return min(scored, key=lambda weight: scored[weight])


def again_path(out: Path, strategy: str, step: int, seed: int) -> Path:
    """Where the chosen values trained again at each local weight are recorded (see local_weight)."""
    plan = select.record_path(out, strategy, step, seed)
    return plan.parent / "local-weight" / plan.name


def summary(out: Path, step: int, seed: int, strategies: tuple[str, ...] = STRATEGIES) -> str:
    """Markdown: per strategy the chosen alpha and temperature, their score and the defaults' score."""
    lines = [
        f"# Model choice per strategy, step {step}, seed {seed} ({budget()} candidates each: bench/selection_plan.py)",
        "",
        "| strategy | chosen alpha | chosen temperature | score | new MRE | old drift | defaults' score | candidates |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for strategy in strategies:
        path = select.record_path(out, strategy, step, seed)
        if not path.is_file():
            lines.append(f"| {strategy} | not run | | | | | | 0 |")
            continue
        record = json.loads(path.read_text())
        chosen = best(record)
        default = {"alpha": DEFAULT_ALPHA, "temperature": DEFAULT_TEMPERATURE}
        defaults = [c for c in planned(record) if c["overrides"] == default]
        default_score = f"{defaults[0]['score']:.3f}" if defaults else "not run"
        o = chosen["overrides"]
        ran = len(planned(record))
        so_far = "" if ran >= budget() else " (best so far)"  # the plan stopped part-way: not a choice yet
        lines.append(
            f"| {strategy} | {o.get('alpha')}{so_far} | {o.get('temperature')}{so_far} | {chosen['score']:.3f} | "
            f"{chosen['new_mre']:.3f} | {chosen['old_drift']:.3f} | {default_score} | {ran} of {budget()} |"
        )
    return "\n".join(lines) + "\n"


def run_strategy(common: list[str], out: Path, strategy: str, step: int, seed: int) -> int:
    """Both stages for one strategy; bench.select's exit status (0 when both ran)."""
    argv = [*common, "--strategy", strategy]
    status = select.main([*argv, *(a for g in alpha_stage() for a in ("--grid", g))])
    if status:
        return status
    record = json.loads(select.record_path(out, strategy, step, seed).read_text())
    alpha = best(record, temperature=DEFAULT_TEMPERATURE)["overrides"]["alpha"]
    return select.main([*argv, *(a for g in temperature_stage(alpha) for a in ("--grid", g))])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.selection_plan", description=__doc__.split("\n\n")[0])
    p.add_argument("--protocol", required=True)
    p.add_argument("--profile", choices=sorted(PROFILES), default="cpu-local-preact")
    p.add_argument("--step", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated, of " + ", ".join(STRATEGIES))
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--summary-only", action="store_true", help="only rewrite the summary table")
    add_precision_argument(p)
    add_candidate_precision_argument(p)
    args = p.parse_args(argv)
    strategies = tuple(s for s in args.strategies.split(",") if s)
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        print(f"bench.selection_plan: error: not a distilling strategy: {', '.join(unknown)}", file=sys.stderr)
        return 2
    out = args.out / f"{args.protocol}-{args.profile}"
    common = ["--protocol", args.protocol, "--profile", args.profile, "--step", str(args.step)]
    common += ["--seed", str(args.seed), "--out", str(args.out)]
    common += ["--precision", args.precision] if args.precision else []
    common += ["--candidate-precision", args.candidate_precision] if args.candidate_precision else []
    if not args.summary_only:
        for strategy in strategies:
            status = run_strategy(common, out, strategy, args.step, args.seed)
            if status:
                return status
    path = out / "selection" / f"plan-step{args.step}-seed{args.seed}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(summary(out, args.step, args.seed, strategies))
    print(path.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
