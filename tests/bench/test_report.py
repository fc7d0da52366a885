"""The report's merge of evaluations: steps of a from-scratch oracle evaluated alone, outside a chain; chains
whose records do not describe one line of models; rows that stopped early."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import report
from bench.evals import FIRST_STAGE, ChainFlaws, eval_name, load_results, lone_steps, read_evals
from models.datasets import load_protocol


def _write(
    out: Path,
    name: str,
    seed: int,
    t: int,
    codes: list[str],
    error: float,
    first: float | None = None,
    parent: str | None = None,
) -> None:
    record: dict[str, object] = {"checkpoint_sha256": f"{name}{seed}{t}", "parent_sha256": parent, "unit": "mm"}
    record["errors"] = {c: [error, error] for c in codes}
    if first is not None:
        record["errors_global"] = {c: [first, first] for c in codes}
    path = out / "evals" / eval_name(name, seed, t)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))


def test_steps_run_alone_are_reported_and_checked_as_the_oracles_steps(data_root: Path, tmp_path: Path) -> None:
    protocol = load_protocol(data_root, "cld38-5step")
    upto = protocol.landmarks_up_to
    _write(tmp_path, "step0", 0, 0, upto(0), 2.0, first=2.5)
    _write(tmp_path, "kamp", 0, 1, upto(1), 1.5, parent="step000")
    _write(tmp_path, "kamp", 0, 2, upto(2), 1.2, parent="kamp01")
    scratch = "joint@budget=scratch"
    _write(tmp_path, scratch, 0, 2, upto(2), 1.0, first=3.0)  # step 2 alone: no step 1 before it
    _write(tmp_path, scratch, 1, 2, upto(2), 1.1)  # a second seed whose step 0 was never evaluated
    _write(tmp_path, "joint", 0, 3, upto(3), 9.0)  # a lone step of no scratch arm is reported as well

    evals = read_evals(tmp_path)
    results = load_results(evals, protocol)
    assert set(results) == {"kamp"}  # no contiguous chain of the oracle
    lone = lone_steps(evals)
    assert lone[scratch][2]["mean"] == pytest.approx(1.05) and lone[scratch][2]["n"] == 2
    assert lone[scratch + FIRST_STAGE][2]["mean"] == pytest.approx(3.0)
    assert set(lone[scratch]) == {2} and "kamp" not in lone  # kamp's steps are its chain's

    agg = report.aggregate(results)
    lines = report.oracle_check(agg, lone)
    narrowed = "at least as good as every incremental strategy, compared over the seeds both ran (seeds 0)."
    assert f"Oracle check, {scratch}: {narrowed}" in "\n".join(lines)  # kamp ran seed 0 alone
    table = report.table(protocol, agg, "mm", {"name": "t"}, None, lone)
    assert "Steps run alone" in table
    assert f"| {scratch} | 2 | – | 1.05 ± 0.07 | – | – |" in table

    # With its step 1 too, seed 0's oracle is a chain of its own; a step-1 oracle worse than kamp is caught.
    _write(tmp_path, scratch, 0, 1, upto(1), 1.6)
    evals = read_evals(tmp_path)
    results = load_results(evals, protocol)
    assert results[scratch][0].num_steps == 3
    agg = report.aggregate(results)
    lone = lone_steps(evals)
    assert set(lone[scratch]) == {1, 2} and lone[scratch][2]["n"] == 2  # every seed that ran a step
    text = "\n".join(report.oracle_check(agg, lone))
    assert f"Oracle check, {scratch}: beaten at step 1: kamp 1.50 < 1.60." in text


def test_the_oracle_check_compares_the_seeds_both_arms_ran(data_root: Path, tmp_path: Path) -> None:
    protocol = load_protocol(data_root, "cld38-5step")
    upto = protocol.landmarks_up_to
    for seed, e in ((0, 1.5), (1, 1.9), (2, 1.9)):  # mean 1.77, over the oracle's 1.6; seed 0 alone under it
        _write(tmp_path, "step0", seed, 0, upto(0), 2.0)
        _write(tmp_path, "kamp", seed, 1, upto(1), e)
        _write(tmp_path, "lwf", seed, 1, upto(1), 1.8)
    scratch = "joint@budget=scratch"
    _write(tmp_path, scratch, 0, 1, upto(1), 1.6)
    _write(tmp_path, scratch, 1, 2, upto(2), 1.0)  # seed 1 ran step 2 alone: nothing to compare it with
    _write(tmp_path, scratch, 2, 2, upto(2), 1.1)

    evals = read_evals(tmp_path)
    results = load_results(evals, protocol)
    lone = lone_steps(evals)
    assert lone[scratch][2]["seeds"] == {1: pytest.approx(1.0), 2: pytest.approx(1.1)}
    text = "\n".join(report.oracle_check(report.aggregate(results), lone))
    assert f"Oracle check, {scratch}: beaten at step 1: kamp 1.50 < 1.60 (seeds 0)." in text

    _write(tmp_path, "kamp", 0, 1, upto(1), 1.7)
    evals = read_evals(tmp_path)
    results = load_results(evals, protocol)
    text = "\n".join(report.oracle_check(report.aggregate(results), lone_steps(evals)))
    expected = "at least as good as every incremental strategy, compared over the seeds both ran (seeds 0)."
    assert f"Oracle check, {scratch}: {expected}" in text


def test_a_step_grown_from_another_model_than_the_evaluated_one_ends_its_chain(data_root: Path, tmp_path: Path) -> None:
    protocol = load_protocol(data_root, "cld38-5step")
    upto = protocol.landmarks_up_to
    _write(tmp_path, "step0", 0, 0, upto(0), 2.0)
    _write(tmp_path, "kamp", 0, 1, upto(1), 1.5, parent="step000")
    _write(tmp_path, "kamp", 0, 2, upto(2), 1.6, parent="kamp01")
    _write(tmp_path, "kamp", 0, 3, upto(3), 9.0, parent="a retrained kamp02")  # its figures would mix two runs
    _write(tmp_path, "lwf", 0, 1, upto(1), 1.7, parent="a retrained step 0")

    evals = read_evals(tmp_path)
    flaws = ChainFlaws()
    results = load_results(evals, protocol, flaws)
    assert results["kamp"][0].num_steps == 3 and results["lwf"][0].num_steps == 2
    assert flaws.broken == [("kamp", 0, 3)] and flaws.regrown == [("lwf", 0)]
    assert lone_steps(evals) == {}  # grown from a model, so not a step trained alone
    table = report.table(protocol, report.aggregate(results), "mm", {"name": "t"}, flaws)
    assert "Chains cut short" in table and "kamp seed 0 from step 3." in table
    assert "retrained step-0 model of the same seed" in table and "lwf seed 0." in table


def test_a_row_that_stopped_early_gives_its_sdr_and_transfer_at_the_step_all_its_seeds_reached(
    data_root: Path, tmp_path: Path
) -> None:
    protocol = load_protocol(data_root, "cld38-5step")
    upto = protocol.landmarks_up_to
    for seed in (0, 1):
        _write(tmp_path, "step0", seed, 0, upto(0), 1.0)
        _write(tmp_path, "kamp", seed, 1, upto(1), 1.5, parent=f"step0{seed}0")
    _write(tmp_path, "kamp", 0, 2, upto(2), 3.0, parent="kamp01")  # seed 0 went one step further, every error > 2 mm

    agg = report.aggregate(load_results(read_evals(tmp_path), protocol))
    assert agg["kamp"]["steps"] == 2
    assert agg["kamp"]["final_sdr"]["2.0"]["mean"] == pytest.approx(1.0)  # both seeds at step 1, not 0.5
    table = report.table(protocol, agg, "mm", {"name": "t"})
    assert (
        "| kamp | 2 | 1.00 ± 0.00 | 1.50 ± 0.00 | … | … | … | -0.50 ± 0.00 (step 1) | -0.50 ± 0.00 (step 1) "
        "| 100.0% (step 1) |"
    ) in table


def test_a_seed_of_fewer_scratch_steps_does_not_cut_the_oracles_row_short(data_root: Path, tmp_path: Path) -> None:
    """A from-scratch oracle's seed 1 has run step 1 only: its row stays seed 0's steps 1-3, and the steps run
    alone count every seed that ran each step (step 1: both)."""
    protocol = load_protocol(data_root, "cld38-5step")
    upto = protocol.landmarks_up_to
    scratch = "joint@budget=scratch"
    for seed in (0, 1):
        _write(tmp_path, "step0", seed, 0, upto(0), 2.0)
    for t, e in ((1, 1.6), (2, 1.7), (3, 1.6)):
        _write(tmp_path, scratch, 0, t, upto(t), e)
    _write(tmp_path, scratch, 1, 1, upto(1), 1.8)

    evals = read_evals(tmp_path)
    results = load_results(evals, protocol)
    assert list(results[scratch]) == [0] and results[scratch][0].num_steps == 4
    agg = report.aggregate(results)
    assert agg[scratch]["steps"] == 4 and agg[scratch]["a_mre"][3]["mean"] == pytest.approx(1.6)
    lone = lone_steps(evals)
    assert lone[scratch][1]["seeds"] == {0: pytest.approx(1.6), 1: pytest.approx(1.8)}
    assert lone[scratch][3]["n"] == 1
    # A chain that grew from its parent is no oracle's: a shorter seed still ends the row where all reached.
    _write(tmp_path, "kamp", 0, 1, upto(1), 1.5, parent="step000")
    _write(tmp_path, "kamp", 0, 2, upto(2), 1.5, parent="kamp01")
    _write(tmp_path, "kamp", 1, 1, upto(1), 1.5, parent="step010")
    results = load_results(read_evals(tmp_path), protocol)
    assert sorted(results["kamp"]) == [0, 1] and report.aggregate(results)["kamp"]["steps"] == 2
