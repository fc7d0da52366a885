"""What each step of each strategy cost: its training seconds (bench.ikl records them per evaluation), as a
table and a plot beside the accuracy tables. An incremental strategy's step trains on that step's images only,
so its cost should not grow with the steps before it; the joint oracle's grows with every image so far."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from .evals import EVAL
from .report_plots import pyplot


def step_seconds(evals: Path) -> dict[str, list[float | None]]:
    """strategy -> mean training seconds of each step over the seeds that recorded them (None: none did; a step
    whose checkpoint was reused from an earlier run records none). Where the records were trained on more than
    one kind of machine (their `trained_on`), a strategy has a row per kind, named "strategy [kind]": times of
    different machines are not averaged. Records from before the field keep the plain name: they ran on more
    than one kind, which they do not say (docs/benchmarks.md names the machine of each run)."""
    seen: dict[tuple[str, str], dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for path in evals.glob("*.json"):
        match = EVAL.match(path.name)
        if match is None:
            continue
        record = json.loads(path.read_text())
        if record.get("train_seconds") is not None:
            kind = record.get("trained_on", "")
            seen[match["name"], kind][int(match["step"])].append(float(record["train_seconds"]))
    several = len({kind for _, kind in seen}) > 1
    out = {}
    for (name, kind), steps in seen.items():
        last = max(steps)
        row = f"{name} [{kind}]" if several and kind else name
        out[row] = [float(np.mean(steps[t])) if steps.get(t) else None for t in range(last + 1)]
    return out


def cost_table(seconds: dict[str, list[float | None]]) -> str:
    """Markdown: minutes of training per step, per strategy (mean over seeds)."""
    steps = max((len(v) for v in seconds.values()), default=0)
    head = "| strategy | " + " | ".join(f"step {t}" for t in range(steps)) + " |\n"
    head += "|---|" + "---|" * steps + "\n"
    rows = [
        f"| {name} | "
        + " | ".join("–" if s is None else f"{s / 60:.1f}" for s in values + [None] * (steps - len(values)))
        + " |"
        for name, values in sorted(seconds.items())
    ]
    return "Training minutes per step (mean over the seeds that trained it here):\n\n" + head + "\n".join(rows) + "\n"


def cost_plot(seconds: dict[str, list[float | None]], out: Path, title: str) -> bool:
    """Training minutes of steps >= 1 by step, a line per strategy; False where matplotlib is missing."""
    plt = pyplot()
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, values in sorted(seconds.items()):
        steps = [t for t, v in enumerate(values) if v is not None and t > 0]
        if steps:
            ax.plot(steps, [(values[t] or 0.0) / 60 for t in steps], marker="o", label=name)
    ax.set_xlabel("step t")
    ax.set_ylabel("training minutes")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return True
