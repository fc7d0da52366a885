"""bench.assist: the summary of what assisted annotation saves (the browser run itself is bench-only)."""

from __future__ import annotations

import pytest

from bench.assist import _summary


def _row(within: list[int], assisted: int, mre: float, saved: float, seconds: tuple[float, float]) -> dict:
    return {
        "landmarks": 10,
        "pre_placed_within_mm": dict(zip(["1.0", "1.5", "2.0", "3.0"], within, strict=True)),
        "actions_by_hand": 10,
        "actions_assisted": assisted,
        "pre_placed_mre_mm": mre,
        "saved_mre_mm": saved,
        "scripted_s": {"by_hand": seconds[0], "assisted": seconds[1]},
    }


def test_the_summary_pools_landmarks_and_averages_studies() -> None:
    rows = [_row([2, 5, 8, 10], 8, 1.0, 0.2, (5.0, 4.0)), _row([4, 6, 8, 9], 6, 2.0, 0.4, (7.0, 2.0))]
    s = _summary(rows)
    assert s["actions_per_study"] == {"by_hand": 10, "assisted": 7}
    assert s["pre_placed_within_mm"] == {"1.0": 0.3, "1.5": 0.55, "2.0": 0.8, "3.0": 0.95}
    assert s["pre_placed_mre_mm"] == pytest.approx(1.5) and s["saved_mre_mm_assisted"] == pytest.approx(0.3)
    assert s["scripted_s_median"] == {"by_hand": 6.0, "assisted": 3.0}
