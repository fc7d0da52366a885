"""Merge a protocol run's evaluations (all strategies and seeds) into results.json, table.md and plots."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
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
ORDER = ["finetune", "lwf", "cpr", "kamp_ksd_only", "kamp_random", "kamp", "joint_partial", "joint"]
# An arm's name is its strategy, maybe with overrides (bench/arms.py): kamp@ka_mode=pseudo_label.
EVAL = re.compile(
    r"(?P<name>[a-z_0-9]+(?:@[A-Za-z_0-9.]+=[A-Za-z_0-9.+-]+)*)-seed(?P<seed>\d+)-step(?P<step>\d+)\.json"
)


#: Suffix of the arm that reads a two-stage run's first stage alone (its records' `errors_global`), so tables show
#: the local stage's gain side by side on the very same models.
FIRST_STAGE = " (first stage)"


def eval_name(name: str, seed: int, t: int) -> str:
    """File name of one evaluation under evals/ (step 0 is shared: name 'step0'); EVAL parses it back."""
    return f"{'step0' if t == 0 else name}-seed{seed}-step{t}.json"


#: (arm, seed, step) -> evaluation record (read_evals).
Evals = dict[tuple[str, int, int], dict[str, Any]]


@dataclass
class ChainFlaws:
    """Chains whose records do not all describe one line of models (training is not bit-for-bit repeatable, so
    a model retrained after its checkpoint was lost differs from the one evaluated), named under table.md.

    regrown: (arm, seed) whose step 1 grew from another step-0 model than the evaluated one; kept in the table,
    whose A-MRE_0 and AT then refer to the evaluated step 0.
    broken: (arm, seed, step) whose step's model grew from another model than the one evaluated at the step
    before; the chain ends before it (its later figures would compare two runs)."""

    regrown: list[tuple[str, int]] = field(default_factory=list)
    broken: list[tuple[str, int, int]] = field(default_factory=list)


def grew_from(record: dict[str, Any], previous: dict[str, Any]) -> bool:
    """Whether `record`'s model grew from `previous`'s, as far as the records tell: a model trained from nothing
    (parent None) or a record without the hashes (older runs) counts as linked."""
    parent, sha = record.get("parent_sha256"), previous.get("checkpoint_sha256")
    return parent is None or sha is None or parent == sha


def trained_alone(record: dict[str, Any]) -> bool:
    """Whether the record's model was trained from nothing (its parent recorded as none; records made before
    the field name no parent and count as grown)."""
    return "parent_sha256" in record and record["parent_sha256"] is None


def load_results(
    evals: Evals, protocol: Protocol, flaws: ChainFlaws | None = None
) -> dict[str, dict[int, IncrementalResult]]:
    """strategy -> seed -> IncrementalResult over the contiguous, linked steps of `evals` (read_evals; step 0
    shared). `flaws` (if given) receives the chains that did not grow from the evaluated models (ChainFlaws)."""
    flaws = ChainFlaws() if flaws is None else flaws
    results: dict[str, dict[int, IncrementalResult]] = {}
    strategies = sorted({k[0] for k in evals if k[0] not in ("step0", "step0" + FIRST_STAGE)}, key=arm_order)
    seeds = sorted({k[1] for k in evals})
    for strategy in strategies:
        for seed in seeds:
            base = evals.get(("step0" + (FIRST_STAGE if strategy.endswith(FIRST_STAGE) else ""), seed, 0))
            if base is None:
                continue
            chain = [base]
            while (strategy, seed, len(chain)) in evals:
                record = evals[(strategy, seed, len(chain))]
                if len(chain) > 1 and not grew_from(record, chain[-1]):
                    flaws.broken.append((strategy, seed, len(chain)))
                    break
                chain.append(record)
            if len(chain) > 1:
                if not grew_from(chain[1], base):
                    flaws.regrown.append((strategy, seed))
                steps = {c: s for c, s in protocol.landmark_step.items() if s < len(chain)}
                errors = [record_errors(r) for r in chain]
                results.setdefault(strategy, {})[seed] = IncrementalResult(landmark_step=steps, errors=errors)
        _longest_scratch_chains(results, strategy, evals)
    return results


def _longest_scratch_chains(results: dict[str, dict[int, IncrementalResult]], strategy: str, evals: Evals) -> None:
    """Keep only the longest of a from-scratch arm's chains (every step trained from nothing, `bench.ikl
    --steps`): its steps do not depend on each other, so a seed that has run fewer of them must not cut the
    row of the others short (aggregate keeps the steps every seed reached); its steps stay in lone_steps."""
    by_seed = results.get(strategy, {})
    scratch = all(
        trained_alone(evals[(strategy, seed, t)]) for seed, r in by_seed.items() for t in range(1, r.num_steps)
    )
    if not by_seed or not scratch:
        return
    longest = max(r.num_steps for r in by_seed.values())
    results[strategy] = {seed: r for seed, r in by_seed.items() if r.num_steps == longest}


def read_evals(out: Path) -> Evals:
    """(arm, seed, step) -> evaluation record under out/evals; a two-stage model's first stage as its own arm."""
    evals: Evals = {}
    for path in sorted((out / "evals").glob("*.json")):
        m = EVAL.fullmatch(path.name)
        if m:
            record = json.loads(path.read_text())
            key = (m["name"], int(m["seed"]), int(m["step"]))
            evals[key] = record
            if "errors_global" in record:
                evals[(key[0] + FIRST_STAGE, *key[1:])] = {**record, "errors": record["errors_global"]}
    return evals


#: arm -> step -> A-MRE over seeds ("mean", "sd", "n") and per seed ("seeds": seed -> A-MRE), of lone_steps.
LoneSteps = dict[str, dict[int, dict[str, Any]]]


def lone_steps(evals: Evals) -> LoneSteps:
    """arm -> step -> A-MRE (mean ± SD over seeds, and each seed's) of the steps in `evals` whose model was trained
    from nothing: steps of a from-scratch oracle, run alone (`bench.ikl --steps`) or in a row, every seed that ran
    each step (load_results' chains hold some of them too). Each such model saw every landmark up to its step, so its
    A-MRE is the pooled mean of its own record's errors."""
    lone: dict[str, dict[int, dict[int, float]]] = {}
    for (name, seed, t), record in evals.items():
        if t == 0 or name.removesuffix(FIRST_STAGE) == "step0":
            continue
        if not trained_alone(record):
            continue  # grown from an earlier model: a step after a gap or a broken link, or an older record
        pooled = np.concatenate(list(record_errors(record).values()))
        lone.setdefault(name, {}).setdefault(t, {})[seed] = float(np.nanmean(pooled))
    return {
        name: {t: {**_mean_sd(list(v.values())), "seeds": dict(sorted(v.items()))} for t, v in sorted(by_step.items())}
        for name, by_step in sorted(lone.items(), key=lambda kv: arm_order(kv[0]))
    }


def record_errors(record: dict[str, Any]) -> dict[str, np.ndarray]:
    """Landmark code -> (N,) radial errors of one evaluation record over its test images (NaN: unlabelled)."""
    return {c: np.array([np.nan if v is None else v for v in vals]) for c, vals in record["errors"].items()}


def _strategy(name: str) -> str:
    """The strategy of a table row's name: without its overrides (`@...`) and its " (first stage)" suffix."""
    return name.removesuffix(FIRST_STAGE).split("@")[0]


def arm_order(name: str) -> tuple[int, str]:
    """Strategies in the paper's order; an arm with overrides right after its strategy."""
    strategy = _strategy(name)
    return (ORDER.index(strategy) if strategy in ORDER else len(ORDER), name)


def _mean_sd(values: list[float | None]) -> dict[str, float | None]:
    v = np.array([np.nan if x is None else x for x in values], dtype=float)
    v = v[np.isfinite(v)]
    if not len(v):
        return {"mean": None, "sd": None, "n": 0}
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "n": len(v)}


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
            "a_mre": [_mean_sd([per_seed[s]["a_mre"][t] for s in seeds]) for t in range(steps)],
            "at": [_mean_sd([per_seed[s]["at_mt"][t][0] for s in seeds]) for t in range(steps)],
            "mt": [_mean_sd([per_seed[s]["at_mt"][t][1] for s in seeds]) for t in range(steps)],
            "E_mean": _nanmean_matrix(e_stack),
            "final_sdr": {
                k: _mean_sd([per_seed[s]["final_summary"]["sdr"][k] for s in seeds])
                for k in per_seed[seeds[0]]["final_summary"]["sdr"]
            },
            "final_per_landmark": {
                c: _mean_sd([per_seed[s]["final_per_landmark"].get(c) for s in seeds])
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


def _seed_a_mre(agg: dict[str, Any], lone: LoneSteps | None) -> dict[str, dict[int, dict[int, float]]]:
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


def _like_for_like(oracle: dict[int, float], other: dict[int, float]) -> tuple[float, float, str] | None:
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
    values = _seed_a_mre(agg, lone)
    lines: list[str] = []
    for oracle, o in values.items():
        if _strategy(oracle) != "joint":
            continue
        first_stage = oracle.endswith(FIRST_STAGE)
        beaten, narrowed = [], set()
        for name, by_step in values.items():
            if _strategy(name) in ("joint", "joint_partial") or name.endswith(FIRST_STAGE) != first_stage:
                continue
            for t in sorted(set(o) & set(by_step)):
                pair = _like_for_like(o[t], by_step[t])
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
