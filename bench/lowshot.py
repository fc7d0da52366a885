"""The low-shot table: each arm's A-MRE after a protocol's last step against how many images every incremental
step trains on (profiles lowshot-1, -5, -10, -50).

    python -m bench.lowshot --protocol cld38-5step

Reads only the results.json that `bench.ikl` wrote in bench/results/<protocol>-lowshot-<N>/ (rebuild one with
`bench.ikl ... --report-only`). A profile whose cap is at least the image count of every incremental step trains
exactly what the profile it takes step 0 from (Profile.step0_of) trains, so its column is read from that profile's
folder and the table says so (on cld38-5step no step holds more than 40 images: lowshot-50 is
cpu-local-preact-head). Writes bench/results/<protocol>-lowshot.{json,md} and <protocol>-lowshot.png.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from models.datasets import Protocol, default_data_root, load_protocol

from .evals import FIRST_STAGE, arm_order
from .ikl import RESULTS
from .jsonio import write_json
from .profiles import PROFILES, step_cap
from .report import arms_seed_a_mre, last_at, seed_cell
from .report_plots import pyplot

SHOTS = (1, 5, 10, 50)


def source(protocol: Protocol, shots: int, root: Path) -> tuple[Path, str | None]:
    """The results folder holding lowshot-`shots` runs of `protocol`, and a note where it is another profile's:
    that of Profile.step0_of when the cap leaves every incremental step all of its images."""
    profile = PROFILES[f"lowshot-{shots}"]
    caps = [step_cap(profile, s) for s in range(1, protocol.num_steps)]
    whole = all(c is None or c >= len(step.images) for c, step in zip(caps, protocol.steps[1:], strict=True))
    if profile.step0_of is not None and whole:
        largest = max(len(step.images) for step in protocol.steps[1:])
        note = f"no incremental step holds more than {largest} images: the runs of {profile.step0_of}"
        return root / f"{protocol.name}-{profile.step0_of}", note
    return root / f"{protocol.name}-{profile.name}", None


def final_cell(results: dict[str, Any], arm: str, last: int) -> dict[str, Any] | None:
    """A-MRE after step `last` of `arm` in one results.json (mean, sd, n and which seeds: its chains that
    reached that step, and that step trained alone for the other seeds, as bench.fair reads them) and its chains'
    AT there; None where neither ran."""
    by_seed = arms_seed_a_mre(results, {arm}).get(arm, {}).get(last, {})
    return {**seed_cell(by_seed), "at": last_at(results, arm, last)} if by_seed else None


def arms_of(results: dict[str, Any]) -> list[str]:
    """The arms of one results.json, two-stage runs' first-stage rows left out."""
    names = set(results["strategies"]) | set(results.get("steps_run_alone", {}))
    return [n for n in names if not n.endswith(FIRST_STAGE)]


def lowshot_table(protocol: Protocol, root: Path, shots: tuple[int, ...] = SHOTS) -> dict[str, Any]:
    """{"unit", "last_step", "columns": shots -> {"folder", "note"}, "arms": arm -> shots -> final_cell or None}
    over the low-shot folders of `protocol` under `root`; a folder without results.json gives an empty column."""
    last = protocol.num_steps - 1
    columns: dict[str, dict[str, Any]] = {}
    cells: dict[str, dict[str, Any]] = {}
    units = set()
    for n in shots:
        folder, note = source(protocol, n, root)
        columns[str(n)] = {"folder": folder.name, "note": note}
        path = folder / "results.json"
        if not path.is_file():
            continue
        results = json.loads(path.read_text())
        units.add(results.get("unit", "mm"))
        for arm in arms_of(results):
            cells.setdefault(arm, {})[str(n)] = final_cell(results, arm, last)
    arms = {arm: {str(n): cells[arm].get(str(n)) for n in shots} for arm in sorted(cells, key=arm_order)}
    return {
        "protocol": protocol.name,
        "unit": "/".join(sorted(units)) or "mm",
        "last_step": last,
        "columns": columns,
        "arms": arms,
    }


def _cell_text(cell: dict[str, Any] | None) -> str:
    if cell is None:
        return "–"
    sd = f" ± {cell['sd']:.2f}" if cell["n"] > 1 else ""
    return f"{cell['mean']:.2f}{sd} ({cell['n']})"


def markdown(table: dict[str, Any]) -> str:
    """The table as markdown: one row per arm, one column per shot count, A-MRE (seeds) after the last step."""
    shots = list(table["columns"])
    head = "| arm | " + " | ".join(f"{n} {'image' if n == '1' else 'images'} a step" for n in shots) + " |"
    lines = [
        f"{table['protocol']}: A-MRE after step {table['last_step']} ({table['unit']}, mean ± SD over the seeds,"
        " their number in brackets)",
        "",
        head,
        "|---" * (len(shots) + 1) + "|",
    ]
    lines += [f"| {arm} | {' | '.join(_cell_text(c) for c in row.values())} |" for arm, row in table["arms"].items()]
    notes = [f"- {n} images a step: {c['note']} (`{c['folder']}`)" for n, c in table["columns"].items() if c["note"]]
    return "\n".join(lines + (["", *notes] if notes else [])) + "\n"


def plot(table: dict[str, Any], path: Path) -> bool:
    """A-MRE after the last step against images per step (log axis), one line per arm; whether it was written
    (False without matplotlib or without any cell)."""
    plt = pyplot()
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    drawn = False
    for arm, row in table["arms"].items():
        points = [(int(n), c["mean"], c["sd"] or 0.0) for n, c in row.items() if c is not None]
        if points:
            x, y, sd = zip(*points, strict=True)
            ax.errorbar(x, y, yerr=sd, marker="o", capsize=3, label=arm)
            drawn = True
    if drawn:
        ax.set_xscale("log")
        ax.set_xticks([int(n) for n in table["columns"]], [str(n) for n in table["columns"]])
        ax.set_xlabel("training images per incremental step")
        ax.set_ylabel(f"A-MRE after step {table['last_step']} ({table['unit']})")
        ax.set_title(f"{table['protocol']}: low-shot incremental steps")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    plt.close(fig)
    return drawn


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.lowshot", description=__doc__.split("\n\n")[0])
    p.add_argument("--protocol", default="cld38-5step")
    p.add_argument("--data-root", type=Path, default=None)
    p.add_argument("--out", type=Path, default=RESULTS, help="results root (default bench/results)")
    args = p.parse_args(argv)
    try:
        protocol = load_protocol(args.data_root or default_data_root(), args.protocol)
    except ValueError as exc:
        p.error(str(exc))
    table = lowshot_table(protocol, args.out)
    stem = args.out / f"{protocol.name}-lowshot"
    write_json(stem.with_suffix(".json"), table)
    text = markdown(table)
    stem.with_suffix(".md").write_text(text)
    plot(table, stem.with_suffix(".png"))
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
