"""The figures of a protocol run's report: A-MRE after each step, the step matrix E and per-landmark MRE."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from models.datasets import Protocol


def pyplot() -> Any | None:
    """matplotlib.pyplot on the headless Agg backend, or None where matplotlib is not installed (the benchmark
    extra): every figure of bench/ is optional."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def plots(out: Path, protocol: Protocol, agg: dict[str, Any], unit: str) -> list[str]:
    """Writes a_mre.png, e_matrix.png and per_landmark.png under `out` from `agg` (report.aggregate); the names
    written, none where matplotlib is missing."""
    plt = pyplot()
    if plt is None:
        return []
    written = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for strategy, a in agg.items():
        m = [x["mean"] for x in a["a_mre"]]
        sd = [x["sd"] or 0 for x in a["a_mre"]]
        ax.errorbar(range(len(m)), m, yerr=sd, marker="o", capsize=3, label=strategy)
    ax.set_xlabel("step t")
    ax.set_ylabel(f"A-MRE_t ({unit})")
    ax.set_yscale("log")
    ax.set_title(f"{protocol.name}: average MRE after each step")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "a_mre.png", dpi=120)
    written.append("a_mre.png")
    plt.close(fig)

    k = len(agg)
    fig, axes = plt.subplots(1, k, figsize=(3.2 * k, 3.2), squeeze=False)
    for ax, (strategy, a) in zip(axes[0], agg.items(), strict=True):
        e = np.array([[np.nan if v is None else v for v in row] for row in a["E_mean"]], dtype=float)
        im = ax.imshow(e, cmap="viridis_r")
        for (i, j), v in np.ndenumerate(e):
            if np.isfinite(v):
                ax.text(
                    j,
                    i,
                    f"{v:.1f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="k",
                    bbox={"facecolor": "w", "alpha": 0.6, "linewidth": 0, "pad": 1},
                )
        ax.set_xticks(range(e.shape[1]))
        ax.set_yticks(range(e.shape[0]))
        ax.set_title(strategy, fontsize=9)
        ax.set_xlabel("landmarks of step s")
        ax.set_ylabel("after step t")
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(out / "e_matrix.png", dpi=120)
    written.append("e_matrix.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(max(6, 0.3 * len(protocol.landmarks)), 4))
    for strategy, a in agg.items():
        codes = list(a["final_per_landmark"])
        ax.plot(codes, [a["final_per_landmark"][c]["mean"] for c in codes], marker=".", label=strategy)
    ax.set_ylabel(f"MRE ({unit}) after the last step")
    ax.set_yscale("log")
    ax.tick_params(axis="x", rotation=90, labelsize=7)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "per_landmark.png", dpi=120)
    written.append("per_landmark.png")
    plt.close(fig)
    return written
