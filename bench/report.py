"""Merge a protocol run's evaluations (all strategies and seeds) into results.json, table.md and plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from models.datasets import Protocol
from models.metrics import (
    IncrementalResult,
    a_mre,
    per_landmark_mre,
    step_matrix,
    summarize,
    transfer,
)

from .cost import cost_plot, cost_table, step_seconds
from .evals import (
    FIRST_STAGE,
    ChainFlaws,
    LoneSteps,
    load_results,
    lone_steps,
    mean_sd,
    read_evals,
    strategy_of,
)
from .jsonio import write_json
from .report_plots import plots

#: A-MRE at the last step in the KAMP paper (CVPR 2025), for the protocols we run an analogue of.
PAPER = {
    "cld38-5step": (
        "Head-2023 5-step (mm)",
        {"kamp": 2.32, "lwf": 4.31, "cpr": 3.71, "finetune": 51.3, "joint": 2.12},
    ),
    "chest6-2step": (
        "Chest 2-step (px)",
        {"kamp": 5.67, "lwf": 6.35, "cpr": 6.17, "finetune": 43.1, "joint": 5.43},
    ),
}


def aggregate(results: dict[str, dict[int, IncrementalResult]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for strategy, by_seed in results.items():
        steps = min(r.num_steps for r in by_seed.values())
        last = steps - 1
        per_seed: dict[int, dict[str, Any]] = {}
        for seed, r in by_seed.items():
            per_seed[seed] = {
                "E": step_matrix(r),
                "a_mre": [a_mre(r, t) for t in range(r.num_steps)],
                "at_mt": [transfer(r, t) for t in range(r.num_steps)],
                "final_per_landmark": per_landmark_mre(r, last),
                "final_summary": summarize(r.pooled(last, r.landmarks_up_to(last))).to_dict(),
            }
        seeds = list(per_seed)
        e_stack = np.array(
            [[[np.nan if v is None else v for v in row[:steps]] for row in per_seed[s]["E"][:steps]] for s in seeds],
            dtype=float,
        )
        out[strategy] = {
            "seeds": seeds,
            "steps": steps,
            "a_mre": [mean_sd([per_seed[s]["a_mre"][t] for s in seeds]) for t in range(steps)],
            "at": [mean_sd([per_seed[s]["at_mt"][t][0] for s in seeds]) for t in range(steps)],
            "mt": [mean_sd([per_seed[s]["at_mt"][t][1] for s in seeds]) for t in range(steps)],
            "E_mean": _nanmean_matrix(e_stack),
            "final_sdr": {
                k: mean_sd([per_seed[s]["final_summary"]["sdr"][k] for s in seeds])
                for k in per_seed[seeds[0]]["final_summary"]["sdr"]
            },
            "final_per_landmark": {
                c: mean_sd([per_seed[s]["final_per_landmark"].get(c) for s in seeds])
                for c in per_seed[seeds[0]]["final_per_landmark"]
            },
            "per_seed": {str(s): v for s, v in per_seed.items()},
            "complete": steps,
            "last_step": last,
        }
    return out


def _nanmean_matrix(stack: np.ndarray) -> list[list[float | None]]:
    """Mean over seeds of (seeds, T, T) matrices whose upper triangle is NaN (not yet learned)."""
    count = np.isfinite(stack).sum(axis=0)
    total = np.nansum(stack, axis=0)
    return [
        [float(s / c) if c else None for s, c in zip(rs, rc, strict=True)] for rs, rc in zip(total, count, strict=True)
    ]


def _fmt(ms: dict[str, Any], digits: int = 2) -> str:
    if ms["mean"] is None:
        return "–"
    if ms["n"] > 1:
        return f"{ms['mean']:.{digits}f} ± {ms['sd']:.{digits}f}"
    return f"{ms['mean']:.{digits}f}"


def table(
    protocol: Protocol,
    agg: dict[str, Any],
    unit: str,
    profile: dict[str, Any],
    flaws: ChainFlaws | None = None,
    lone: LoneSteps | None = None,
) -> str:
    lone = lone or {}
    flaws = flaws or ChainFlaws()
    n = protocol.num_steps
    n_test = len(protocol.test_images[: profile.get("max_test_images")])
    lines = [
        f"# {protocol.name}, profile `{profile['name']}`",
        "",
        f"A-MRE_t ({unit}) on {n_test} test images after each step t (mean ± SD over "
        f"seeds; n = seeds); AT, MT (positive: old landmarks improved) and SDR at step {n - 1}, or at the last step "
        "of a row that stopped earlier, marked (step t).",
        "",
        "| strategy | seeds | " + " | ".join(f"A-MRE_{t}" for t in range(n)) + f" | AT | MT | SDR 2 {unit} |",
        "|---|---|" + "---|" * n + "---|---|---|",
    ]
    for strategy, a in agg.items():
        cells = [_fmt(a["a_mre"][t]) if t < a["steps"] else "…" for t in range(n)]
        last = a["steps"] - 1
        sdr = a["final_sdr"].get("2.0") or a["final_sdr"].get(2.0)
        sdr_s = "–" if sdr is None or sdr["mean"] is None else f"{100 * sdr['mean']:.1f}%"
        at_step = "" if last == n - 1 else f" (step {last})"
        ends = [_fmt(a["at"][last]), _fmt(a["mt"][last]), sdr_s]
        lines.append(
            f"| {strategy} | {len(a['seeds'])} | "
            + " | ".join(cells + [e if e == "–" else e + at_step for e in ends])
            + " |"
        )
    if flaws.regrown:
        lines += [
            "",
            "Grown from a retrained step-0 model of the same seed (training is not bit-for-bit repeatable; the "
            "table's A-MRE_0 and AT use the evaluated one): "
            + ", ".join(f"{s} seed {seed}" for s, seed in flaws.regrown)
            + ".",
        ]
    if flaws.broken:
        lines += [
            "",
            "Chains cut short: the model of the step named grew from another model than the one evaluated at the "
            "step before (retrained after its checkpoint was lost, and not re-evaluated), so it and the steps after "
            "it are left out: " + ", ".join(f"{s} seed {seed} from step {t}" for s, seed, t in flaws.broken) + ".",
        ]
    if lone:
        lines += [
            "",
            "Steps run alone (`bench.ikl --steps`: each trained from nothing on every image and label so far, "
            f"needing no step before it), A-MRE_t ({unit}; – not run):",
            "",
            "| strategy | seeds | " + " | ".join(f"A-MRE_{t}" for t in range(1, n)) + " |",
            "|---|---|" + "---|" * (n - 1),
        ]
        for name, by_step in lone.items():
            seeds = max(int(ms["n"] or 0) for ms in by_step.values())
            cells = [_fmt(by_step[t]) if t in by_step else "–" for t in range(1, n)]
            lines.append(f"| {name} | {seeds} | " + " | ".join(cells) + " |")
    lines += oracle_check(agg, lone)
    if protocol.name in PAPER:
        title, ref = PAPER[protocol.name]
        lines += [
            "",
            f"The paper (KAMP, CVPR 2025), {title}, A-MRE at the last step: "
            + ", ".join(f"{k} {v}" for k, v in ref.items())
            + ".",
        ]
    lines += ["", "Profile: " + json.dumps(profile)]
    return "\n".join(lines) + "\n"


def seed_a_mre(agg: dict[str, Any], lone: LoneSteps | None) -> dict[str, dict[int, dict[int, float]]]:
    """arm -> step >= 1 -> seed -> A-MRE_t: its chains' steps, and its steps run alone (`lone`) for the seeds
    whose chains do not reach them."""
    values: dict[str, dict[int, dict[int, float]]] = {}
    for name, a in agg.items():
        values[name] = {
            t: {int(s): v["a_mre"][t] for s, v in a["per_seed"].items() if v["a_mre"][t] is not None}
            for t in range(1, a["steps"])
        }
    for name, by_step in (lone or {}).items():
        for t, ms in by_step.items():
            reached = values.setdefault(name, {}).setdefault(t, {})
            reached.update({s: v for s, v in ms["seeds"].items() if s not in reached})
    return values


def lone_of(results: dict[str, Any]) -> LoneSteps:
    """results.json's `steps_run_alone` with integer steps and seeds (bench.evals.LoneSteps)."""
    return {
        arm: {int(t): {**ms, "seeds": {int(s): v for s, v in ms["seeds"].items()}} for t, ms in steps.items()}
        for arm, steps in results.get("steps_run_alone", {}).items()
    }


def arms_seed_a_mre(results: dict[str, Any], arms: set[str]) -> dict[str, dict[int, dict[int, float]]]:
    """seed_a_mre of `arms` read from one results.json: arm -> step >= 1 -> seed -> A-MRE_t, from the arm's
    chains and its steps run alone."""
    lone = lone_of(results)
    return seed_a_mre(
        {a: s for a, s in results["strategies"].items() if a in arms},
        {a: s for a, s in lone.items() if a in arms},
    )


def seed_cell(by_seed: dict[int, float]) -> dict[str, Any]:
    """Mean, SD and count over the seeds (bench.evals.mean_sd), and which seeds."""
    return {**mean_sd(list(by_seed.values())), "seeds": sorted(by_seed)}


def last_at(results: dict[str, Any], arm: str, last: int) -> float | None:
    """AT at step `last` of `arm`'s chains in one results.json (mean over seeds), None where none reached it."""
    chain = results["strategies"].get(arm)
    if chain is None or chain["steps"] <= last:
        return None
    mean: float | None = chain["at"][last]["mean"]
    return mean


def like_for_like(oracle: dict[int, float], other: dict[int, float]) -> tuple[float, float, str] | None:
    """Mean A-MRE of the oracle and of another arm at one step over the seeds both ran (a seed's model is
    compared with the model of the same step-0 model and split), with a note naming those seeds where either arm
    ran others; over all their seeds, so noted, where they share none. None where either has no value."""
    if not oracle or not other:
        return None
    shared = sorted(set(oracle) & set(other))
    if not shared:
        return float(np.mean(list(oracle.values()))), float(np.mean(list(other.values()))), " (no seed in common)"
    note = "" if set(oracle) == set(other) else " (seeds " + ", ".join(map(str, shared)) + ")"
    return float(np.mean([oracle[s] for s in shared])), float(np.mean([other[s] for s in shared])), note


def oracle_check(agg: dict[str, Any], lone: LoneSteps | None = None) -> list[str]:
    """Lines saying, per oracle arm (`joint` and its arms: every image so far with every label), where an
    incremental strategy's mean A-MRE_t beats it (steps >= 1, steps both reached, over the seeds both ran), or
    that none does: an oracle that loses is under-trained, not an upper bound. joint_partial, which sees only each
    image's own step's labels, is neither. A first-stage row is compared with the oracle's first stage only. An
    oracle's steps run alone (`lone`, see lone_steps) count as its steps where its chains do not reach them."""
    values = seed_a_mre(agg, lone)
    lines: list[str] = []
    for oracle, o in values.items():
        if strategy_of(oracle) != "joint":
            continue
        first_stage = oracle.endswith(FIRST_STAGE)
        beaten, narrowed = [], set()
        for name, by_step in values.items():
            if strategy_of(name) in ("joint", "joint_partial") or name.endswith(FIRST_STAGE) != first_stage:
                continue
            for t in sorted(set(o) & set(by_step)):
                pair = like_for_like(o[t], by_step[t])
                if pair is None:
                    continue
                mine, theirs, note = pair
                narrowed |= {note} - {""}
                if theirs < mine:
                    beaten.append(f"step {t}: {name} {theirs:.2f} < {mine:.2f}{note}")
        verdict = "beaten at " + "; ".join(beaten) if beaten else "at least as good as every incremental strategy"
        if narrowed and not beaten:
            verdict += (
                ", compared over the seeds both ran (" + "; ".join(n.strip(" ()") for n in sorted(narrowed)) + ")"
            )
        lines += ["", f"Oracle check, {oracle}: {verdict}."]
    return lines


def write_report(out: Path, protocol: Protocol, profile: dict[str, Any]) -> dict[str, Any]:
    flaws = ChainFlaws()
    evals = read_evals(out)
    results = load_results(evals, protocol, flaws)
    agg = aggregate(results)
    lone = lone_steps(evals)
    units = {record.get("unit", "mm") for record in evals.values()}
    unit = units.pop() if len(units) == 1 else "mm/px"
    runs = json.loads((out / "runs.json").read_text()) if (out / "runs.json").is_file() else []
    data = {
        "protocol": protocol.name,
        "profile": profile,
        "unit": unit,
        "strategies": agg,
        "regrown_from_retrained_step0": [{"strategy": s, "seed": seed} for s, seed in flaws.regrown],
        "chains_cut_short": [{"strategy": s, "seed": seed, "step": t} for s, seed, t in flaws.broken],
        "steps_run_alone": {name: {str(t): ms for t, ms in by_step.items()} for name, by_step in lone.items()},
        "runs": runs,
    }
    write_json(out / "results.json", data)
    seconds = step_seconds(out / "evals")
    (out / "table.md").write_text(table(protocol, agg, unit, profile, flaws, lone) + "\n" + cost_table(seconds))
    if agg:
        plots(out, protocol, agg, unit)
        cost_plot(seconds, out / "cost.png", f"{protocol.name}: training time per step")
    return data
