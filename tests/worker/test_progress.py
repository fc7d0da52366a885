"""A training job's overall fraction and ETA across its stages, on a clock the test controls."""

from __future__ import annotations

import pytest

from models.config import TrainConfig, from_dict
from models.step_report import Progress, StepTimer
from worker.progress import CURVE_POINTS, JobProgress, Stage, planned_stages, stage_iterations, stage_rates

CONFIG = from_dict(
    TrainConfig, {"iterations": 100, "batch_size": 8, "kanet": {"iterations": 20}, "refine": {"iterations": 40}}
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_planned_stages_follow_the_strategy_the_parent_and_the_local_stage() -> None:
    names = [s.name for s in planned_stages(CONFIG, "kamp", True, True, 6)]
    assert names == ["kanet", "train", "refine", "validation"]
    assert [s.name for s in planned_stages(CONFIG, "kamp", False, False, 6)] == ["train", "validation"]
    assert [s.name for s in planned_stages(CONFIG, "kamp_ksd_only", True, False, 6)] == ["train", "validation"]
    validation = planned_stages(CONFIG, "finetune", False, False, 6)[-1]
    assert validation.iterations == pytest.approx(2 * 6 / (3 * 8))  # two models forward, in training iterations


def test_a_train_report_prices_each_stage_for_the_next_job() -> None:
    report = {"iterations": 100, "seconds": 50.0, "kanet_seconds": 10.0, "refine_seconds": 8.0}
    report["stage_iterations"] = stage_iterations(CONFIG)
    assert stage_rates(report) == {"train": 0.5, "kanet": 0.5, "refine": 0.2}
    assert stage_rates({"iterations": 100, "seconds": 50.0}) == {"train": 0.5}
    assert stage_rates({}) == {}
    stages = planned_stages(CONFIG, "kamp", True, True, 0, report)
    assert [s.prior_s for s in stages] == [0.5, 0.5, 0.2, None]


def test_overall_fraction_and_eta_from_the_first_iteration() -> None:
    clock = Clock()
    tracker = JobProgress([Stage("train", 100), Stage("refine", 50)], clock=clock)
    clock.now = 10.0  # loading the data took 10 s, then the first iteration
    first = tracker.update("train", 1, 100, {"gt": 1.0})
    # 10 s per iteration so far: 99 more, then 50 of the local stage at the same rate
    assert first["overall_eta_s"] == pytest.approx(99 * 10 + 50 * 10)
    assert first["overall"] == pytest.approx(10 / (10 + 1490), abs=1e-4)
    clock.now = 11.0
    second = tracker.update("train", 2, 100, {"gt": 0.9})
    # from the first report on, 1 s per iteration: the data's 10 s is not an iteration's
    assert second["overall_eta_s"] == pytest.approx(98 + 50)
    clock.now = 109.0
    tracker.update("train", 100, 100, {"gt": 0.1})
    clock.now = 114.0
    refine = tracker.update("refine", 10, 50, {"crop": 0.5})
    assert refine["overall_eta_s"] == pytest.approx(40 * 0.5)
    assert refine["overall"] == pytest.approx(114 / (114 + 20), abs=1e-4)
    assert set(refine["curve"]) == {"train", "refine"}


def test_priors_answer_before_the_first_stage_and_validation_uses_the_training_rate() -> None:
    clock = Clock()
    stages = [Stage("train", 100, prior_s=0.5), Stage("validation", 10)]
    tracker = JobProgress(stages, clock=clock)
    start = tracker.update("preparing", 0, 0, {})
    assert start == {"overall": 0.0, "overall_eta_s": 55.0, "curve": {}}  # 100 x 0.5 s, 10 x 0.5 s
    assert JobProgress([Stage("train", 100)], clock=clock).update("preparing", 0, 0, {})["overall_eta_s"] is None
    clock.now = 2.0
    tracker.update("train", 1, 100, {})
    clock.now = 52.0
    tracker.update("train", 100, 100, {})
    clock.now = 53.0
    # validation is priced at the measured training rate (52 s for 100 iterations, loading included) until it
    # reports a study of its own
    assert tracker.update("validation", 0, 6, {})["overall_eta_s"] == pytest.approx(10 * 0.52)


def test_a_loss_curve_stays_short_and_keeps_its_ends() -> None:
    tracker = JobProgress([Stage("train", 10_000)], clock=Clock())
    for i in range(1, 1001):
        curve = tracker.update("train", i, 10_000, {"gt": 1.0 / i})["curve"]["train"]
    assert len(curve) <= CURVE_POINTS and curve[0][0] == 1 and curve[-1][0] == 1000


def test_the_trainers_first_eta_is_not_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr("models.step_report.time.perf_counter", clock)
    seen: list[Progress] = []
    timer = StepTimer(seen.append)
    clock.now = 4.0
    timer.report("train", 1, 100, 1, {})
    assert seen[-1].eta_s == pytest.approx(4.0 * 99)
    for i in range(2, 21):
        clock.now += 2.0
        timer.report("train", i, 100, i, {})
    assert seen[-1].eta_s == pytest.approx(2.0 * 80)  # past the warm-up, the rate since iteration 10
