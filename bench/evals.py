"""A protocol run's evaluation records: their file names, reading them back, and linking each arm's records into
the chains of models that grew from one another (bench/report.py builds the tables from these)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.datasets import Protocol
from models.metrics import IncrementalResult

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
        name: {t: {**mean_sd(list(v.values())), "seeds": dict(sorted(v.items()))} for t, v in sorted(by_step.items())}
        for name, by_step in sorted(lone.items(), key=lambda kv: arm_order(kv[0]))
    }


def record_errors(record: dict[str, Any]) -> dict[str, np.ndarray]:
    """Landmark code -> (N,) radial errors of one evaluation record over its test images (NaN: unlabelled)."""
    return {c: np.array([np.nan if v is None else v for v in vals]) for c, vals in record["errors"].items()}


def strategy_of(name: str) -> str:
    """The strategy of a table row's name: without its overrides (`@...`) and its " (first stage)" suffix."""
    return name.removesuffix(FIRST_STAGE).split("@")[0]


def arm_order(name: str) -> tuple[int, str]:
    """Strategies in the paper's order; an arm with overrides right after its strategy."""
    strategy = strategy_of(name)
    return (ORDER.index(strategy) if strategy in ORDER else len(ORDER), name)


def mean_sd(values: list[float | None]) -> dict[str, float | None]:
    """Mean, sample SD and count of the finite values (None and NaN left out)."""
    v = np.array([np.nan if x is None else x for x in values], dtype=float)
    v = v[np.isfinite(v)]
    if not len(v):
        return {"mean": None, "sd": None, "n": 0}
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "n": len(v)}
