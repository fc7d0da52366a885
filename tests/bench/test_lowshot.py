"""bench.lowshot on hand-made results.json files: which folder a column reads, chains and steps run alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.evals import mean_sd
from bench.lowshot import lowshot_table, markdown, plot, source
from models.datasets import Protocol, ProtocolStep

# Step 0 with 3 images, then steps of 4 and 2: a cap of 5 leaves every incremental step all of its images.
PROTOCOL = Protocol(
    name="toy-3step",
    dataset="toy",
    annotator="a",
    description="",
    steps=[
        ProtocolStep(["S"], ["1", "2", "3"]),
        ProtocolStep(["N"], ["4", "5", "6", "7"]),
        ProtocolStep(["A"], ["8", "9"]),
    ],
    test_images=["t1"],
)


def _chain(per_seed: dict[int, list[float]], at: float) -> dict[str, Any]:
    """A chain of results.json: each seed's A-MRE per step (the same length), their cells and AT."""
    steps = len(next(iter(per_seed.values())))
    cells = [mean_sd([v[t] for v in per_seed.values()]) for t in range(steps)]
    return {
        "seeds": sorted(per_seed),
        "steps": steps,
        "a_mre": cells,
        "at": [{"mean": at, "sd": 0.0, "n": len(per_seed)}] * steps,
        "per_seed": {str(s): {"a_mre": v} for s, v in per_seed.items()},
    }


def _write(root: Path, profile: str, strategies: dict[str, Any], alone: dict[str, Any] | None = None) -> None:
    folder = root / f"toy-3step-{profile}"
    folder.mkdir(parents=True)
    results = {"unit": "mm", "strategies": strategies, "steps_run_alone": alone or {}}
    (folder / "results.json").write_text(json.dumps(results))


def test_a_cap_that_leaves_every_step_whole_reads_the_base_profile() -> None:
    folder, note = source(PROTOCOL, 1, Path("r"))
    assert folder == Path("r/toy-3step-lowshot-1") and note is None
    folder, note = source(PROTOCOL, 5, Path("r"))
    assert folder == Path("r/toy-3step-cpu-local-preact-head") and note is not None and "4 images" in note


def test_cells_come_from_finished_chains_and_steps_run_alone(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "lowshot-1",
        {
            "kamp@alpha=10": _chain({0: [1.0, 3.0, 3.9], 1: [1.0, 3.0, 4.1]}, -0.5),
            "kamp@alpha=10 (first stage)": _chain({0: [1.0, 5.0, 6.0]}, 0.0),
            "lwf": _chain({0: [1.0, 9.0]}, -2.0),  # stopped after step 1: no cell
        },
        {"joint@budget=scratch": {"2": {"mean": 2.5, "sd": 0.0, "n": 1, "seeds": {"0": 2.5}}}},
    )
    head = {0: [1.0, 2.0, 2.1], 1: [1.0, 2.0, 2.2], 2: [1.0, 2.0, 2.3]}
    _write(tmp_path, "cpu-local-preact-head", {"kamp@alpha=10": _chain(head, 0.1)})
    table = lowshot_table(PROTOCOL, tmp_path, (1, 5, 10))
    kamp = table["arms"]["kamp@alpha=10"]
    assert kamp["1"] == {
        "mean": pytest.approx(4.0),
        "sd": pytest.approx(0.1414, abs=1e-4),
        "n": 2,
        "at": -0.5,
        "seeds": [0, 1],
    }
    assert kamp["5"] is not None and kamp["5"]["mean"] == pytest.approx(2.2) and kamp["10"] == kamp["5"]
    assert table["arms"]["lwf"] == {"1": None, "5": None, "10": None}
    assert table["arms"]["joint@budget=scratch"]["1"] == {"mean": 2.5, "sd": 0.0, "n": 1, "at": None, "seeds": [0]}
    assert not any("first stage" in arm for arm in table["arms"])
    text = markdown(table)
    assert "| kamp@alpha=10 | 4.00 ± 0.14 (2) | 2.20 ± 0.10 (3) | 2.20 ± 0.10 (3) |" in text
    assert "| lwf | – | – | – |" in text and "cpu-local-preact-head" in text


def test_missing_folders_give_empty_columns_and_no_plot(tmp_path: Path) -> None:
    table = lowshot_table(PROTOCOL, tmp_path)
    assert table["arms"] == {} and list(table["columns"]) == ["1", "5", "10", "50"]
    pytest.importorskip("matplotlib")
    assert plot(table, tmp_path / "lowshot.png") is False and not (tmp_path / "lowshot.png").exists()


def test_the_plot_is_written_where_there_are_cells(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    _write(tmp_path, "lowshot-1", {"kamp": _chain({0: [1.0, 3.0, 4.0]}, 0.0)})
    assert plot(lowshot_table(PROTOCOL, tmp_path, (1,)), tmp_path / "lowshot.png")
    assert (tmp_path / "lowshot.png").stat().st_size > 0
