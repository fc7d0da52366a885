"""bench.selection_plan: the same two-stage choice, with the same budget, for every distilling strategy."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench import select, selection_plan


def test_every_strategy_gets_the_same_candidates_over_three_decades_of_alpha() -> None:
    first = select.candidates(select.parse_grid(selection_plan.alpha_stage()))
    second = select.candidates(select.parse_grid(selection_plan.temperature_stage(10.0)))
    assert math.log10(max(selection_plan.ALPHAS) / min(selection_plan.ALPHAS)) >= 3
    assert {"alpha": 1.0, "temperature": 0.1} in first  # the defaults are a candidate
    assert {"alpha": 10.0, "temperature": 0.1} in second  # measured in the first stage: not trained twice
    assert len(first) + len([c for c in second if c not in first]) == selection_plan.budget() == 6


def _entry(alpha: float, temperature: float, score: float) -> dict:
    return {
        "overrides": {"alpha": alpha, "temperature": temperature},
        "score": score,
        "new_mre": score + 1,
        "old_drift": score - 1,
    }


def test_the_plan_takes_the_first_stages_alpha_into_the_second(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scores = {(0.1, 0.1): 3.0, (1.0, 0.1): 2.0, (10.0, 0.1): 1.5, (100.0, 0.1): 4.0}
    scores |= {(10.0, 0.05): 1.2, (10.0, 0.2): 1.9}
    calls: list[list[str]] = []

    def fake_select(argv: list[str]) -> int:
        calls.append(argv)
        strategy = argv[argv.index("--strategy") + 1]
        grid = select.parse_grid([argv[i + 1] for i, a in enumerate(argv) if a == "--grid"])
        path = select.record_path(tmp_path / "cld38-5step-smoke", strategy, 1, 0)
        record = json.loads(path.read_text()) if path.is_file() else {"candidates": []}
        for o in select.candidates(grid):
            if o not in [c["overrides"] for c in record["candidates"]]:
                record["candidates"].append(_entry(o["alpha"], o["temperature"], scores[o["alpha"], o["temperature"]]))
        path.write_text(json.dumps(record))
        return 0

    # The strategy's record already holds another grid's candidate, better scored: not this plan's, not chosen.
    other = {"overrides": {"refine.alpha": 30}, "score": 0.1, "new_mre": 0.1, "old_drift": 0.1}
    path = select.record_path(tmp_path / "cld38-5step-smoke", "lwf", 1, 0)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"candidates": [other]}))
    monkeypatch.setattr(select, "main", fake_select)
    args = ["--protocol", "cld38-5step", "--profile", "smoke", "--strategies", "lwf", "--out", str(tmp_path)]
    assert selection_plan.main(args) == 0
    assert calls[1][-4:] == ["--grid", "alpha=10.0", "--grid", "temperature=0.05,0.1,0.2"]
    table = (tmp_path / "cld38-5step-smoke" / "selection" / "plan-step1-seed0.md").read_text()
    assert "| lwf | 10.0 | 0.05 | 1.200 | 2.200 | 0.200 | 2.000 | 6 of 6 |" in table
    record = json.loads(path.read_text())
    record["candidates"] = [c for c in record["candidates"] if c["overrides"].get("temperature") != 0.2]
    path.write_text(json.dumps(record))  # the plan stopped before its last candidate
    partial = selection_plan.summary(tmp_path / "cld38-5step-smoke", 1, 0, ("lwf",))
    assert "| lwf | 10.0 (best so far) | 0.05 (best so far) | 1.200 |" in partial and "| 5 of 6 |" in partial
    assert "| kamp | not run |" not in table  # only the strategies asked for
    assert "--precision" not in calls[0]  # the profile's own precision where none is asked for

    calls.clear()
    assert selection_plan.main([*args, "--precision", "bf16"]) == 0
    assert calls and all(c[c.index("--precision") + 1] == "bf16" for c in calls)  # a folder's runs keep one


def test_an_unknown_strategy_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert selection_plan.main(["--protocol", "cld38-5step", "--strategies", "joint"]) == 2
    assert "not a distilling strategy: joint" in capsys.readouterr().err


#: The protocol whose committed model choice each modality's validated settings are (the network new projects
#: train: cld38's with the hidden head, chest6's without, docs/benchmarks.md).
EVIDENCE = {"cephalometric": "cld38-5step-cpu-local-preact", "chest": "chest6-2step-cpu-local-preact"}


@pytest.mark.parametrize("modality", sorted(EVIDENCE))
def test_the_services_validated_settings_are_the_committed_plans_choice(modality: str) -> None:
    """models.registry's validated settings for a modality are what the plan chose on its protocol (step 1,
    seed 0), written as the fields that differ from TrainConfig's defaults, and the local stage's weight the
    record chose at those values under "refine" where it differs from RefineTrainConfig's."""
    from models.config import TrainConfig
    from models.registry import DEFAULT_STRATEGY, strategy

    out = selection_plan.RESULTS / EVIDENCE[modality]
    complete = []
    for name in selection_plan.STRATEGIES:
        path = select.record_path(out, name, 1, 0)
        record = json.loads(path.read_text()) if path.is_file() else {"candidates": []}
        if len(selection_plan.planned(record)) < selection_plan.budget():
            continue  # the plan has not finished this strategy: nothing validated yet
        chosen = selection_plan.best(record)["overrides"]
        differ: dict[str, object] = {k: v for k, v in chosen.items() if v != getattr(TrainConfig(), k)}
        again = selection_plan.again_path(out, name, 1, 0)
        weight = selection_plan.local_weight(record, json.loads(again.read_text()) if again.is_file() else None)
        if weight != selection_plan.LOCAL_DEFAULT:
            differ["refine"] = {"alpha": weight}
        assert dict(strategy(name).validated[modality]) == differ, name
        complete.append(name)
    assert DEFAULT_STRATEGY in complete


def test_the_local_weight_is_the_best_candidate_at_the_chosen_values() -> None:
    """Known answer: the chosen candidate scores 0.7 at the default weight; 300 beats it, 3000 does not, and a
    candidate at other first-stage values (0.1) is not the plan's to compare."""
    default = selection_plan.LOCAL_DEFAULT
    record = {
        "candidates": [
            {"overrides": {"alpha": a, "temperature": 0.1}, "score": 0.7 + a / 1000} for a in (0.1, 1.0, 10.0, 100.0)
        ]
    }
    record["candidates"] += [
        {"overrides": {"alpha": 0.1, "temperature": 0.1, "refine.alpha": 300}, "score": 0.69},
        {"overrides": {"alpha": 0.1, "temperature": 0.1, "refine.alpha": 3000}, "score": 0.75},
        {"overrides": {"alpha": 1.0, "temperature": 0.1, "refine.alpha": 30}, "score": 0.1},
    ]
    assert selection_plan.local_weight(record) == 300.0
    record["candidates"][4]["score"] = 0.8
    assert selection_plan.local_weight(record) == default
    # Trained again from another step-0 model, at both weights: that record alone decides.
    chosen = {"alpha": 0.1, "temperature": 0.1}
    again = {
        "candidates": [
            {"overrides": {**chosen, "refine.alpha": default}, "score": 0.9},
            {"overrides": {**chosen, "refine.alpha": 300}, "score": 0.85},
            {"overrides": {"alpha": 1.0, "temperature": 0.1, "refine.alpha": 3000}, "score": 0.1},
        ]
    }
    assert selection_plan.local_weight(record, again) == 300.0
    again["candidates"][1]["score"] = 0.95
    assert selection_plan.local_weight(record, again) == default
    with pytest.raises(ValueError, match="no candidate at"):
        selection_plan.local_weight(record, {"candidates": []})
