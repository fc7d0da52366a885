"""bench.fair on hand-made results folders: each target read from the figures, seeds compared like for like,
and the entries' arms held to the values the service stores."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.arms import parse_arm
from bench.evals import eval_name
from bench.fair import ENTRIES, Entry, main, oracle_status, summarize_entry, summary_markdown
from models.config import RefineTrainConfig, TrainConfig, to_dict
from models.registry import strategy

ARMS = {"kamp": "kamp", "kamp_ksd_only": "kamp_ksd_only", "lwf": "lwf", "cpr": "cpr", "joint": "joint"}
ENTRY = Entry("toy-3step", "p", ARMS)
DEFAULTS = to_dict(TrainConfig()) | {f"refine.{k}": v for k, v in to_dict(RefineTrainConfig()).items()}


def _chain(per_seed: dict[int, list[float]], at: float) -> dict[str, Any]:
    """A results.json strategy: per seed its A-MRE at steps 0..2; AT at every step."""
    steps = len(next(iter(per_seed.values())))
    return {
        "seeds": sorted(per_seed),
        "steps": steps,
        "at": [{"mean": at, "sd": 0.0, "n": len(per_seed)}] * steps,
        "per_seed": {str(s): {"a_mre": v} for s, v in per_seed.items()},
    }


def _folder(root: Path, strategies: dict[str, Any], alone: dict[str, Any] | None = None) -> Path:
    folder = root / "toy-3step-p"
    (folder / "evals").mkdir(parents=True)
    results = {"unit": "mm", "strategies": strategies, "steps_run_alone": alone or {}}
    (folder / "results.json").write_text(json.dumps(results))
    return folder


def _eval(folder: Path, arm: str, seed: int, errors: np.ndarray, seconds: float) -> None:
    record = {"ids": [f"i{k}" for k in range(len(errors))], "errors": {"S": errors.tolist()}, "train_seconds": seconds}
    (folder / "evals" / eval_name(arm, seed, 2)).write_text(json.dumps(record))


def test_targets_are_read_from_the_figures(tmp_path: Path) -> None:
    """KSD beats the oracle at step 1 on seed 0, the one seed both ran (joint's seed 1 is not counted against it);
    KAMP / joint and LwF / KAMP are ratios over shared seeds; the best incremental role's AT decides the AT target;
    every cell short of three seeds is named."""
    three = {0: [2.0, 1.5, 1.8], 1: [2.0, 1.6, 1.9], 2: [2.0, 1.7, 2.0]}
    folder = _folder(
        tmp_path,
        {
            "kamp": _chain(three, -0.1),
            "kamp_ksd_only": _chain({0: [2.0, 1.2, 1.5]}, 0.2),
            "lwf": _chain({s: [2.0, v[1] * 2, v[2] * 2] for s, v in three.items()}, -1.0),
            "joint": _chain({0: [2.0, 1.3, 1.2], 1: [2.0, 1.0, 1.2]}, 0.5),
        },
    )
    rng = np.random.default_rng(0)
    base = rng.uniform(1, 3, size=30)
    for seed in (0, 1, 2):
        _eval(folder, "kamp", seed, base, 60.0)
        _eval(folder, "lwf", seed, base * 2, 30.0)
    summary = summarize_entry(ENTRY, tmp_path)
    assert summary is not None and summary["last_step"] == 2
    t = summary["targets"]
    assert t["oracle"]["status"] == "missed"
    assert t["oracle"]["beaten"] == ["step 1: kamp_ksd_only 1.20 < 1.30 (seeds 0)"]
    assert t["kamp_over_joint"] == pytest.approx(np.mean([1.8, 1.9]) / 1.2)  # seeds 0 and 1 only
    assert t["kamp_within"] == "missed" and t["lwf_over_kamp"] == pytest.approx(2.0)
    assert t["best"] == "kamp_ksd_only" and t["best_at"] == 0.2 and t["best_at_status"] == "met"
    assert "cpr step 1 (0)" in t["short_of_seeds"] and "kamp step 1 (3)" not in " ".join(t["short_of_seeds"])
    kamp_last = summary["cells"]["kamp"]["2"]
    assert kamp_last == {"mean": pytest.approx(1.9), "sd": pytest.approx(0.1), "n": 3, "seeds": [0, 1, 2]}
    pairs = {(r["a"], r["b"]): r for r in summary["significance"]}
    assert pairs[("kamp", "lwf")]["a_better_share"] == 1.0 and pairs[("kamp", "lwf")]["p_holm"] < 1e-4
    assert summary["minutes"] == {"kamp": [None, None, 60.0], "lwf": [None, None, 30.0]}


def test_a_low_shot_entry_reads_its_last_step_and_a_lone_oracle(tmp_path: Path) -> None:
    """Low-shot: the last step makes the cells and ratios, and a from-scratch oracle run alone at it is the joint
    cell; the oracle target reads the steps the oracle ran."""
    entry = Entry("toy-3step", "p", {"kamp": "kamp", "joint": "joint@budget=scratch"}, last_only=True)
    _folder(
        tmp_path,
        {"kamp": _chain({0: [2.0, 9.0, 1.5]}, 0.1)},
        {"joint@budget=scratch": {"2": {"mean": 1.4, "sd": 0.0, "n": 1, "seeds": {"0": 1.4}}}},
    )
    summary = summarize_entry(entry, tmp_path)
    assert summary is not None
    t = summary["targets"]
    assert t["oracle"] == {"status": "met", "beaten": [], "compared": 1, "steps": [2], "of": 2}
    assert oracle_status(t["oracle"]) == "met at step 2 (1 of 2 not run)"
    assert t["kamp_over_joint"] == pytest.approx(1.5 / 1.4) and t["cells"] == 2
    assert t["short_of_seeds"] == ["kamp step 2 (1)", "joint step 2 (1)"]


def test_a_low_shot_oracle_run_at_its_first_steps_is_held_to_them(tmp_path: Path) -> None:
    """Low-shot oracle steps run before the last one count for "at every step": beaten at step 1 here, while
    its last step is not run yet (no KAMP / joint ratio)."""
    entry = Entry("toy-3step", "p", {"kamp": "kamp", "joint": "joint@budget=scratch"}, last_only=True)
    _folder(
        tmp_path,
        {"kamp": _chain({0: [2.0, 1.5, 1.6], 1: [2.0, 1.7, 1.8]}, 0.1)},
        {"joint@budget=scratch": {"1": {"mean": 1.65, "sd": 0.05, "n": 2, "seeds": {"0": 1.6, "1": 1.7}}}},
    )
    summary = summarize_entry(entry, tmp_path)
    assert summary is not None
    o = summary["targets"]["oracle"]
    assert o["beaten"] == ["step 1: kamp 1.60 < 1.65"] and o["steps"] == [1] and o["of"] == 2
    assert oracle_status(o) == "missed at step 1 (1 of 2 not run)"
    assert summary["targets"]["kamp_over_joint"] is None and summary["targets"]["kamp_within"] == "not run"
    assert "missed at step 1 (1 of 2 not run)" in summary_markdown([summary])


def test_main_names_the_folders_not_yet_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A folder without results.json, or whose results hold step 0 alone (a low-shot folder that only took its
    step-0 model), is named as not run."""
    step0_only = tmp_path / "cld38-5step-lowshot-5"
    step0_only.mkdir()
    (step0_only / "results.json").write_text(json.dumps({"strategies": {}, "steps_run_alone": {}}))
    assert main(["--results", str(tmp_path)]) == 0
    written = json.loads((tmp_path / "fair-benchmark.json").read_text())
    assert written["entries"] == [] and len(written["not_run"]) == len(ENTRIES)
    assert "Not run yet" in (tmp_path / "fair-benchmark.md").read_text() and "Not run yet" in capsys.readouterr().out


@pytest.mark.parametrize(("protocol", "modality"), [("cld38-5step", "cephalometric"), ("chest6-2step", "chest")])
def test_entry_arms_are_the_values_the_service_stores(protocol: str, modality: str) -> None:
    """The benchmark's arms on cld38 and chest6 are the per-modality values models.registry validates (isbi19
    keeps its own choice, docs/benchmarks.md)."""
    entry = next(e for e in ENTRIES if e.protocol == protocol and not e.last_only)
    for role in ("kamp", "kamp_ksd_only", "lwf", "cpr"):
        arm = parse_arm(entry.arms[role])
        assert arm.strategy == role
        stored = dict(strategy(role).validated_for(modality))
        local = stored.pop("refine", {})
        expected = stored | {f"refine.{k}": v for k, v in local.items()}
        assert set(expected) <= set(arm.overrides), entry.arms[role]
        for name, value in arm.overrides.items():  # an override the registry leaves out is at its default
            assert value == expected.get(name, DEFAULTS[name]), (entry.arms[role], name)
