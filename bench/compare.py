"""Where does one arm beat another? Final errors of two arms, landmark group by landmark group.

    python -m bench.compare --protocol cld38-5step --profile cpu kamp kamp_ksd_only

Reads only the evaluations bench/ikl.py wrote (no training, no images). Over the seeds where both arms finished
every step, each landmark's test MRE after the last step is grouped by the step that learned it and by whether
the first arm anchored it (the old landmark of one of its KA triplets, at any step): the KA term acts on exactly
those, so a cost that falls on the others is interference through the shared features, not a bad association.
Writes bench/results/<protocol>-<profile>/diagnostics/compare-<a>-vs-<b>.md and prints it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from models.datasets import default_data_root, load_protocol

from .evals import EVAL, eval_name, record_errors
from .ikl import RESULTS
from .profiles import PROFILES


def landmark_mre(record: dict[str, Any]) -> dict[str, float]:
    """Per-landmark mean radial error of one evaluation record (unlabelled images skipped)."""
    return {c: float(np.nanmean(v)) for c, v in record_errors(record).items() if np.isfinite(v).any()}


def compare(evals: Path, a: str, b: str, landmark_step: dict[str, int], steps: int) -> dict[str, Any]:
    """Rows of (group, landmarks, MRE of a, MRE of b), group = (learned at step, anchored by a or not), means
    over the landmarks of the group and over the seeds both arms finished; plus the seeds used."""
    last = steps - 1

    def load(name: str, seed: int, t: int) -> dict[str, Any] | None:
        path = evals / eval_name(name, seed, t)
        return json.loads(path.read_text()) if path.is_file() else None

    matches = (EVAL.fullmatch(p.name) for p in evals.glob(f"{a}-seed*-step{last}.json"))
    seeds = sorted(int(m["seed"]) for m in matches if m is not None)
    seeds = [s for s in seeds if load(b, s, last) is not None]
    if not seeds:
        raise ValueError(f"no seed where both {a} and {b} reached step {last}")
    cells: dict[tuple[int, bool], dict[str, list[Any]]] = {}
    unit = "mm"
    for seed in seeds:
        anchored = {tr[0] for t in range(1, steps) for tr in (load(a, seed, t) or {}).get("triplets", [])}
        ra, rb = load(a, seed, last) or {}, load(b, seed, last) or {}
        ea, eb, unit = landmark_mre(ra), landmark_mre(rb), ra.get("unit", unit)
        for code in ea.keys() & eb.keys():
            cell = cells.setdefault((landmark_step[code], code in anchored), {"a": [], "b": [], "codes": []})
            cell["a"].append(ea[code])
            cell["b"].append(eb[code])
            cell["codes"].append(code)
    rows = [
        {
            "learned_at": step,
            "anchored": anchored,
            "landmarks": len(set(c["codes"])),
            a: float(np.mean(c["a"])),
            b: float(np.mean(c["b"])),
        }
        for (step, anchored), c in sorted(cells.items())
    ]
    total = {
        anchored: (
            float(np.mean([x for (_, an), c in cells.items() if an == anchored for x in c["a"]])),
            float(np.mean([x for (_, an), c in cells.items() if an == anchored for x in c["b"]])),
        )
        for anchored in (True, False)
        if any(an == anchored for _, an in cells)
    }
    return {"a": a, "b": b, "seeds": seeds, "unit": unit, "rows": rows, "totals": total}


def markdown(result: dict[str, Any], protocol: str) -> str:
    a, b, unit = result["a"], result["b"], result["unit"]
    lines = [
        f"# {a} against {b}, {protocol}: MRE after the last step ({unit})",
        "",
        f"Seeds where both finished: {', '.join(map(str, result['seeds']))} (means over landmarks and seeds). "
        f"Anchored: the old landmark of one of {a}'s KA triplets at some step.",
        "",
        f"| learned at step | anchored by {a} | landmarks | {a} | {b} | difference |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['learned_at']} | {'yes' if r['anchored'] else 'no'} | {r['landmarks']} | {r[a]:.2f} | "
            f"{r[b]:.2f} | {r[a] - r[b]:+.2f} |"
        )
    for anchored, (x, y) in result["totals"].items():
        lines.append(f"| all | {'yes' if anchored else 'no'} | | {x:.2f} | {y:.2f} | {x - y:+.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__.split("\n\n")[0])
    p.add_argument("--protocol", required=True)
    p.add_argument("--profile", default="cpu", choices=sorted(PROFILES))
    p.add_argument("--data-root", type=Path, default=None)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("a", help="the arm whose KA triplets define 'anchored' (e.g. kamp)")
    p.add_argument("b", help="the arm to compare with (e.g. kamp_ksd_only)")
    args = p.parse_args(argv)
    try:
        protocol = load_protocol(args.data_root or default_data_root(), args.protocol)
        out = args.out / f"{protocol.name}-{args.profile}"
        result = compare(out / "evals", args.a, args.b, protocol.landmark_step, protocol.num_steps)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = markdown(result, protocol.name)
    path = out / "diagnostics" / f"compare-{args.a}-vs-{args.b}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
