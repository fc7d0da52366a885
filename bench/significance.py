"""Are two strategies' final errors different? Paired Wilcoxon signed-rank tests on per-image errors.

    python -m bench.significance --protocol cld38-5step --profile cpu kamp kamp_ksd_only lwf joint

Reads only the evaluations bench/ikl.py wrote. For each pair of the named arms, over the seeds where both finished
the step (default: the protocol's last), each test image's error is the mean radial error of every landmark
learned so far on it (mm, or pixels for chest6), averaged over those seeds: the seeds are repeated measurements of
one image, not more images, so the test has one pair per test image. It is the two-sided Wilcoxon signed-rank test
on the differences (scipy), with Holm's correction over the pairs tested; each seed's own test (one pair per image
of that seed) is given beside it, uncorrected. Writes bench/results/<protocol>-<profile>/significance.{json,md}
(with `--name N`: significance-N.{json,md}, so that a second family of comparisons keeps the first) and prints
the table.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import wilcoxon

from models.datasets import default_data_root, load_protocol

from .evals import eval_name, record_errors
from .ikl import RESULTS
from .profiles import PROFILES


def recorded_unit(evals: Path) -> str:
    """The unit the evaluations under `evals` give errors in (mm, or px for images without a pixel spacing)."""
    units = {json.loads(f.read_text()).get("unit", "mm") for f in evals.glob("step0-*.json")}
    return units.pop() if len(units) == 1 else "mm/px"


def image_errors(record: dict[str, Any]) -> dict[str, float]:
    """image id -> the mean radial error of its labelled landmarks in one evaluation record."""
    errors = record_errors(record)  # code -> (images,) errors
    stacked = np.stack(list(errors.values()), axis=1)  # (images, landmarks)
    with np.errstate(invalid="ignore"):
        means = np.nanmean(stacked, axis=1)
    return {i: float(m) for i, m in zip(record["ids"], means, strict=True) if np.isfinite(m)}


def load_arm(evals: Path, arm: str, step: int, seeds: Sequence[int]) -> dict[int, dict[str, float]]:
    """seed -> image id -> error, for the seeds whose evaluation of `arm` at `step` exists."""
    out = {}
    for seed in seeds:
        path = evals / eval_name(arm, seed, step)
        if path.is_file():
            out[seed] = image_errors(json.loads(path.read_text()))
    return out


def paired(a: dict[int, dict[str, float]], b: dict[int, dict[str, float]]) -> dict[int, dict[str, tuple[float, float]]]:
    """seed -> image id -> (error of a, error of b), for the images both arms have at that seed."""
    return {
        seed: {i: (a[seed][i], b[seed][i]) for i in sorted(set(a[seed]) & set(b[seed]))}
        for seed in sorted(set(a) & set(b))
    }


def test_pair(pairs: dict[int, dict[str, tuple[float, float]]]) -> dict[str, Any]:
    """Means, the median difference and the Wilcoxon p-value over the images, each image's errors averaged over
    the seeds that have it; and each seed's own p-value."""
    ids = sorted({i for per_seed in pairs.values() for i in per_seed})
    if not ids:
        return {"n": 0}
    images = np.array([np.mean([p[i] for p in pairs.values() if i in p], axis=0) for i in ids])  # (images, 2)
    diff = images[:, 0] - images[:, 1]
    per_seed = {str(s): _p(np.array([x - y for x, y in p.values()])) for s, p in pairs.items()}
    return {
        "n": len(ids),
        "seeds": sorted(pairs),
        "mean_a": float(images[:, 0].mean()),
        "mean_b": float(images[:, 1].mean()),
        "median_difference": float(np.median(diff)),
        "a_better_share": float((diff < 0).mean()),
        "p": _p(diff),
        "p_per_seed": per_seed,
    }


def _p(diff: np.ndarray) -> float | None:
    if len(diff) < 6 or not np.any(diff):
        return None
    return float(wilcoxon(diff, alternative="two-sided").pvalue)


def holm(ps: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values (None stays None)."""
    known = sorted((p, i) for i, p in enumerate(ps) if p is not None)
    adjusted: list[float | None] = [None] * len(ps)
    running = 0.0
    for rank, (p, i) in enumerate(known):
        running = max(running, min(1.0, (len(known) - rank) * p))
        adjusted[i] = running
    return adjusted


def significance(evals: Path, arms: Sequence[str], step: int, seeds: Sequence[int]) -> list[dict[str, Any]]:
    """Every pair of `arms` at `step`, tested (test_pair), with Holm-adjusted p-values (p_holm)."""
    loaded = {arm: load_arm(evals, arm, step, seeds) for arm in arms}
    rows = [{"a": a, "b": b, **test_pair(paired(loaded[a], loaded[b]))} for a, b in itertools.combinations(arms, 2)]
    for row, adjusted in zip(rows, holm([r.get("p") for r in rows]), strict=True):
        row["p_holm"] = adjusted
    return rows


def markdown(rows: Sequence[dict[str, Any]], unit: str, step: int) -> str:
    """The table of `significance`'s rows."""
    head = (
        f"Step {step}, per-image MRE ({unit}) averaged over the seeds; one pair per test image; two-sided "
        "Wilcoxon signed-rank (p per seed: that seed's images alone, uncorrected).\n\n"
        "| a | b | seeds | images | mean a | mean b | median a - b | a better on | p | p (Holm) | p per seed |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        if not r["n"]:
            lines.append(f"| {r['a']} | {r['b']} | none in common | | | | | | | | |")
            continue
        per_seed = ", ".join(f"{s}: {fmt_p(p)}" for s, p in r["p_per_seed"].items())
        lines.append(
            f"| {r['a']} | {r['b']} | {len(r['seeds'])} | {r['n']} | {r['mean_a']:.2f} | {r['mean_b']:.2f} | "
            f"{r['median_difference']:+.2f} | {r['a_better_share']:.0%} | {fmt_p(r['p'])} | "
            f"{fmt_p(r['p_holm'])} | {per_seed} |"
        )
    return head + "\n".join(lines) + "\n"


def fmt_p(p: float | None) -> str:
    if p is None:
        return "n/a"
    return f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"


def main(argv: list[str] | None = None) -> int:
    """Test the named arms' final errors pairwise and write significance.{json,md}."""
    p = argparse.ArgumentParser(
        prog="python -m bench.significance", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--protocol", required=True)
    p.add_argument("--profile", default="cpu", choices=sorted(PROFILES))
    p.add_argument("arms", nargs="+", help="two or more arms (strategies) as bench.ikl names them")
    p.add_argument("--step", type=int, help="the step to compare (default: the protocol's last)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--data-root", type=Path, default=None)
    p.add_argument("--name", help="write significance-NAME.{json,md} (letters, digits, '-', '_')")
    args = p.parse_args(argv)
    if len(args.arms) < 2:
        p.error("name at least two arms")
    if args.name is not None and not re.fullmatch(r"[A-Za-z0-9_-]+", args.name):
        p.error(f"--name {args.name!r}: use letters, digits, '-' and '_' only")
    stem = "significance" if args.name is None else f"significance-{args.name}"
    protocol = load_protocol(args.data_root or default_data_root(), args.protocol)
    step = protocol.num_steps - 1 if args.step is None else args.step
    out = args.results / f"{protocol.name}-{args.profile}"
    if not (out / "evals").is_dir():
        p.error(f"no evaluations in {out}/evals: run bench.ikl first")
    rows = significance(out / "evals", args.arms, step, [int(s) for s in args.seeds.split(",")])
    unit = recorded_unit(out / "evals")
    text = markdown(rows, unit, step)
    (out / f"{stem}.md").write_text(text)
    (out / f"{stem}.json").write_text(json.dumps({"step": step, "unit": unit, "rows": rows}, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
