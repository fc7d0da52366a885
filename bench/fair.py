"""The fair benchmark at a glance (issue 18): for each protocol and profile in ENTRIES, KAMP, KSD alone, LwF and
CPR at the values each chose on its own held-out images and the joint oracle, with their A-MRE per step over the
seeds, the paired p-values of the main comparisons at the last step, each step's training minutes, and each
target of the benchmark, met or missed, from the figures.

    python -m bench.fair

Reads each folder's results.json (rebuild one with `bench.ikl ... --report-only`) and evals/; writes
bench/results/fair-benchmark.{json,md}. A folder or an arm not yet run leaves its cells empty and says so.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .cost import cost_table, step_seconds
from .evals import mean_sd
from .ikl import RESULTS
from .jsonio import write_json
from .report import arms_seed_a_mre, last_at, like_for_like, seed_cell
from .significance import fmt_p, significance

#: The roles of a comparison, in table order; the oracle last.
ROLES = ("kamp", "kamp_ksd_only", "lwf", "cpr", "joint")
#: The comparisons the issue asks p-values for (every pair of these roles).
MAIN = ("kamp", "kamp_ksd_only", "lwf", "joint")
INCREMENTAL = ("kamp", "kamp_ksd_only", "lwf", "cpr")
KAMP_OVER_JOINT = 1.10
SEEDS = (0, 1, 2)
#: The paper's LwF / KAMP at the last step (Head-2023), quoted beside ours.
PAPER_LWF_OVER_KAMP = 1.86


@dataclass(frozen=True)
class Entry:
    """One comparison: `arms` maps a role to the arm that plays it (its chosen values); `last_only` for the
    low-shot profiles, whose table (bench.lowshot), ratios and seed counts read the last step alone; the oracle
    target reads every step the oracle ran, and says how many it has not."""

    protocol: str
    profile: str
    arms: Mapping[str, str]
    last_only: bool = False

    @property
    def folder(self) -> str:
        return f"{self.protocol}-{self.profile}"


_CLD38 = {
    "kamp": "kamp@alpha=10@refine.alpha=300",
    "kamp_ksd_only": "kamp_ksd_only@alpha=10@refine.alpha=300",
    "lwf": "lwf@alpha=100@temperature=0.05@refine.alpha=300",
    "cpr": "cpr@alpha=10@temperature=0.05@refine.alpha=300",
    "joint": "joint@budget=scratch",
}
_LOWSHOT = {role: arm for role, arm in _CLD38.items() if role != "cpr"}
ENTRIES = (
    Entry("cld38-5step", "cpu-local-preact-head", _CLD38),
    Entry(
        "isbi19-5step",
        "cpu-local-preact",
        {
            "kamp": "kamp@alpha=10@refine.alpha=300",
            "kamp_ksd_only": "kamp_ksd_only@alpha=100@refine.alpha=300",
            "lwf": "lwf@alpha=10@temperature=0.05@refine.alpha=3000",
            "cpr": "cpr@alpha=100@temperature=0.05@refine.alpha=300",
            "joint": "joint",
        },
    ),
    Entry(
        "chest6-2step",
        "cpu-local-preact",
        {
            "kamp": "kamp@alpha=1@temperature=0.1",
            "kamp_ksd_only": "kamp_ksd_only@alpha=1@temperature=0.1",
            "lwf": "lwf@alpha=10@temperature=0.05@refine.alpha=300",
            "cpr": "cpr@alpha=100@temperature=0.05@refine.alpha=300",
            "joint": "joint@budget=scratch",
        },
    ),
    *(Entry("cld38-5step", f"lowshot-{n}", _LOWSHOT, last_only=True) for n in (1, 5, 10)),
)


def role_values(results: dict[str, Any], entry: Entry) -> dict[str, dict[int, dict[int, float]]]:
    """role -> step >= 1 -> seed -> A-MRE_t, from the arm's chains and its steps run alone (report.seed_a_mre)."""
    values = arms_seed_a_mre(results, set(entry.arms.values()))
    return {role: values.get(arm, {}) for role, arm in entry.arms.items()}


def oracle_target(values: dict[str, dict[int, dict[int, float]]], steps: list[int]) -> dict[str, Any]:
    """Whether the oracle's mean A-MRE is at most every incremental role's at every step of `steps` it ran, each
    pair compared over the seeds both ran (report.like_for_like); `beaten` lists where it is not, `steps` the
    steps the oracle ran and `of` how many it should (a low-shot oracle is trained one step at a time)."""
    oracle = values.get("joint", {})
    ran = [t for t in steps if oracle.get(t)]
    if not ran:
        return {"status": "not run", "beaten": [], "compared": 0, "steps": [], "of": len(steps)}
    beaten, compared = [], 0
    for role in INCREMENTAL:
        for t in ran:
            pair = like_for_like(oracle.get(t, {}), values.get(role, {}).get(t, {}))
            if pair is None:
                continue
            compared += 1
            mine, theirs, note = pair
            if theirs < mine:
                beaten.append(f"step {t}: {role} {theirs:.2f} < {mine:.2f}{note}")
    status = "missed" if beaten else "met"
    return {"status": status, "beaten": beaten, "compared": compared, "steps": ran, "of": len(steps)}


def oracle_status(o: dict[str, Any]) -> str:
    """The oracle target in a few words: "met", "missed", "not run", or e.g. "met at step 1 (3 of 4 not run)"."""
    if o["status"] == "not run" or len(o["steps"]) == o["of"]:
        return str(o["status"])
    ran, plural = ", ".join(str(t) for t in o["steps"]), "s" if len(o["steps"]) > 1 else ""
    return f"{o['status']} at step{plural} {ran} ({o['of'] - len(o['steps'])} of {o['of']} not run)"


def _mean(values: dict[str, dict[int, dict[int, float]]], role: str, t: int) -> float | None:
    by_seed = values.get(role, {}).get(t, {})
    mean: float | None = mean_sd(list(by_seed.values()))["mean"]
    return mean


def ratio(values: dict[str, dict[int, dict[int, float]]], a: str, b: str, t: int) -> float | None:
    """Mean A-MRE_t of role `a` over that of role `b`, over the seeds both ran (report.like_for_like)."""
    pair = like_for_like(values.get(b, {}).get(t, {}), values.get(a, {}).get(t, {}))
    return None if pair is None or pair[0] == 0 else pair[1] / pair[0]


def targets(
    entry: Entry, results: dict[str, Any], values: dict[str, dict[int, dict[int, float]]], last: int
) -> dict[str, Any]:
    """Each target of the issue on one entry, from its figures: the oracle an upper bound, LwF / KAMP (reported),
    KAMP within 10% of joint, AT at the last step of the best incremental role >= 0, and every cell 3 seeds;
    `values` is role_values(results, entry)."""
    steps = [last] if entry.last_only else list(range(1, last + 1))  # the cells of the table
    kamp_over_joint = ratio(values, "kamp", "joint", last)
    finals = {r: _mean(values, r, last) for r in INCREMENTAL if r in entry.arms}
    ran = {r: m for r, m in finals.items() if m is not None}
    best = min(ran, key=lambda r: ran[r]) if ran else None
    best_at = None if best is None else last_at(results, entry.arms[best], last)
    short = [
        f"{role} step {t} ({len(values[role].get(t, {}))})"
        for role in entry.arms
        for t in steps
        if len(values[role].get(t, {})) < len(SEEDS)
    ]
    return {
        "oracle": oracle_target(values, list(range(1, last + 1))),  # "at every step", low-shot too
        "lwf_over_kamp": ratio(values, "lwf", "kamp", last),
        "kamp_over_joint": kamp_over_joint,
        "kamp_within": _status(kamp_over_joint, lambda r: r <= KAMP_OVER_JOINT),
        "best": best,
        "best_at": best_at,
        "best_at_status": _status(best_at, lambda a: a >= 0),
        "cells": len(entry.arms) * len(steps),
        "short_of_seeds": short,
    }


def _status(value: float | None, holds: Callable[[float], bool]) -> str:
    return "not run" if value is None else ("met" if holds(value) else "missed")


def summarize_entry(entry: Entry, root: Path) -> dict[str, Any] | None:
    """One entry's cells (role -> step -> cell), AT at the last step, p-values, minutes and targets; None where
    its folder has no results.json yet, or results of step 0 alone."""
    folder = root / entry.folder
    if not (folder / "results.json").is_file():
        return None
    results = json.loads((folder / "results.json").read_text())
    last = _last_step(results)
    if last == 0:
        return None  # step 0 alone: no incremental step to compare yet
    values = role_values(results, entry)
    main = [entry.arms[r] for r in MAIN if r in entry.arms]
    seconds = step_seconds(folder / "evals")
    return {
        "protocol": entry.protocol,
        "profile": entry.profile,
        "unit": results.get("unit", "mm"),
        "last_step": last,
        "arms": dict(entry.arms),
        "cells": {role: {str(t): seed_cell(values[role].get(t, {})) for t in range(1, last + 1)} for role in values},
        "at_last": {role: last_at(results, arm, last) for role, arm in entry.arms.items()},
        "significance": significance(folder / "evals", main, last, SEEDS),
        "minutes": {name: s for name, s in seconds.items() if _arm_of_row(name) in entry.arms.values()},
        "targets": targets(entry, results, values, last),
    }


def _last_step(results: dict[str, Any]) -> int:
    """The protocol's last step, as far as its results tell (the longest chain or step run alone)."""
    chains = [s["steps"] - 1 for s in results["strategies"].values()]
    alone = [int(t) for steps in results.get("steps_run_alone", {}).values() for t in steps]
    return max(chains + alone, default=0)


def _arm_of_row(name: str) -> str:
    """A cost row's arm: bench.cost names a row "arm [machine kind]" where several kinds trained a folder."""
    return name.split(" [")[0]


def _cell_text(c: dict[str, Any]) -> str:
    if not c["n"]:
        return "–"
    sd = f" ± {c['sd']:.2f}" if c["n"] > 1 else ""
    return f"{c['mean']:.2f}{sd} ({c['n']})"


def _num(x: float | None, fmt: str = "{:.2f}") -> str:
    return "–" if x is None else fmt.format(x)


def entry_markdown(s: dict[str, Any]) -> str:
    """One entry: A-MRE per step (mean ± SD (seeds)), AT at the last step, p-values, minutes, targets."""
    last, steps = s["last_step"], range(1, s["last_step"] + 1)
    lines = [
        f"### {s['protocol']}, `{s['profile']}` ({s['unit']}; `bench/results/{s['protocol']}-{s['profile']}/`)",
        "",
        "| role | arm | " + " | ".join(f"A-MRE_{t}" for t in steps) + f" | AT_{last} |",
        "|---|---|" + "---|" * (len(steps) + 1),
    ]
    for role, arm in s["arms"].items():
        cells = " | ".join(_cell_text(s["cells"][role][str(t)]) for t in steps)
        lines.append(f"| {role} | `{arm}` | {cells} | {_num(s['at_last'][role], '{:+.2f}')} |")
    lines += ["", _targets_text(s["targets"], last, s["unit"]), "", _p_text(s["significance"], last)]
    if s["minutes"]:
        lines += ["", cost_table(s["minutes"])]
    return "\n".join(lines) + "\n"


def _targets_text(t: dict[str, Any], last: int, unit: str) -> str:
    o = t["oracle"]
    beaten = f": {'; '.join(o['beaten'])}" if o["beaten"] else f" ({o['compared']} comparisons)"
    status = oracle_status(o)
    short = ", ".join(t["short_of_seeds"]) or "none"
    done = t["cells"] - len(t["short_of_seeds"])
    return "\n".join(
        [
            f"- joint at most every incremental strategy at every step: **{status}**{beaten}",
            f"- LwF / KAMP at step {last}: {_num(t['lwf_over_kamp'])} (the paper's {PAPER_LWF_OVER_KAMP}); "
            "ratios over the seeds both arms ran",
            f"- KAMP / joint at step {last}: {_num(t['kamp_over_joint'])} (at most {KAMP_OVER_JOINT:.2f}: "
            f"**{t['kamp_within']}**)",
            f"- AT_{last} of the best incremental strategy ({t['best'] or '–'}): {_num(t['best_at'], '{:+.2f}')} "
            f"{unit} (at least 0: **{t['best_at_status']}**)",
            f"- cells with {len(SEEDS)} seeds: {done} of {t['cells']} (short: {short})",
        ]
    )


def _p_text(rows: list[dict[str, Any]], last: int) -> str:
    head = (
        f"Paired at step {last} (per-image MRE averaged over the seeds both ran, Wilcoxon signed rank, Holm over "
        "the pairs; bench.significance):\n\n"
        "| a | b | seeds | images | a better on | p (Holm) |\n|---|---|---|---|---|---|"
    )
    body = [
        f"| {r['a']} | {r['b']} | "
        + (
            f"{len(r['seeds'])} | {r['n']} | {r['a_better_share']:.0%} | {fmt_p(r['p_holm'])} |"
            if r["n"]
            else "none in common | | | |"
        )
        for r in rows
    ]
    return "\n".join([head, *body])


def summary_markdown(summaries: list[dict[str, Any]]) -> str:
    """The targets of every entry in one table, then each entry's own section."""
    lines = [
        "| protocol | profile | joint an upper bound | LwF / KAMP | KAMP / joint <= 1.10 | AT of the best >= 0 | "
        "cells with 3 seeds |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        t = s["targets"]
        lines.append(
            f"| {s['protocol']} | {s['profile']} | {oracle_status(t['oracle'])} | {_num(t['lwf_over_kamp'])} | "
            f"{_num(t['kamp_over_joint'])} ({t['kamp_within']}) | {_num(t['best_at'], '{:+.2f}')} "
            f"({t['best_at_status']}) | {t['cells'] - len(t['short_of_seeds'])} / {t['cells']} |"
        )
    return "\n".join(lines) + "\n\n" + "\n".join(entry_markdown(s) for s in summaries)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.fair", description=__doc__.split("\n\n")[0])
    p.add_argument("--results", type=Path, default=RESULTS, help="results root (default bench/results)")
    args = p.parse_args(argv)
    summaries, missing = [], []
    for entry in ENTRIES:
        s = summarize_entry(entry, args.results)
        if s is None:
            missing.append(entry.folder)
        else:
            summaries.append(s)
    text = summary_markdown(summaries)
    if missing:
        text += "\nNot run yet (no incremental step in results.json): " + ", ".join(f"`{m}`" for m in missing) + "\n"
    write_json(args.results / "fair-benchmark.json", {"entries": summaries, "not_run": missing})
    (args.results / "fair-benchmark.md").write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
