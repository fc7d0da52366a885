"""Known-answer tests of models.metrics (all expected values computed by hand in the comments)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from models.metrics import (
    SDR_THRESHOLDS_MM,
    IncrementalResult,
    a_mre,
    incremental_report,
    per_landmark,
    per_landmark_mre,
    radial_errors,
    step_matrix,
    summarize,
    transfer,
)

NAN = math.nan


def _one(pred_xy: tuple[float, float], gt_xy: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """A single image with a single landmark: (1, 1, 2) pred and gt."""
    return np.array([[pred_xy]], dtype=float), np.array([[gt_xy]], dtype=float)


def test_radial_error_3_4_5_triangle() -> None:
    pred, gt = _one((13.0, 24.0), (10.0, 20.0))  # dx = 3, dy = 4
    assert radial_errors(pred, gt, np.array([[NAN, NAN]]))[0, 0] == pytest.approx(5.0)  # pixels
    assert radial_errors(pred, gt, np.array([[0.1, 0.1]]))[0, 0] == pytest.approx(0.5)  # 5 px * 0.1 mm
    assert radial_errors(pred, gt, np.array([0.1]))[0, 0] == pytest.approx(0.5)  # (N,) isotropic
    assert radial_errors(pred, gt, 0.1)[0, 0] == pytest.approx(0.5)  # scalar
    assert radial_errors(pred, gt, None)[0, 0] == pytest.approx(5.0)  # unknown -> pixels


def test_radial_error_anisotropic_spacing() -> None:
    # dx = 6 px at 0.5 mm/px = 3 mm, dy = 2 px at 2 mm/px = 4 mm -> 5 mm.
    pred, gt = _one((6.0, 2.0), (0.0, 0.0))
    assert radial_errors(pred, gt, np.array([[0.5, 2.0]]))[0, 0] == pytest.approx(5.0)
    # Swapped spacing: dx 6 * 2 = 12 mm, dy 2 * 0.5 = 1 mm -> sqrt(145).
    assert radial_errors(pred, gt, np.array([[2.0, 0.5]]))[0, 0] == pytest.approx(math.sqrt(145.0))


def test_radial_error_nan_spacing_per_image_and_nan_labels() -> None:
    # Two images, two landmarks; image 0 at 0.1 mm/px, image 1 spacing unknown (pixels).
    gt = np.array([[[0.0, 0.0], [NAN, NAN]], [[0.0, 0.0], [1.0, 1.0]]])
    pred = np.array([[[3.0, 4.0], [5.0, 5.0]], [[3.0, 4.0], [NAN, NAN]]])
    errors = radial_errors(pred, gt, np.array([[0.1, 0.1], [NAN, NAN]]))
    assert errors.shape == (2, 2)
    assert errors[0, 0] == pytest.approx(0.5)  # mm
    assert errors[1, 0] == pytest.approx(5.0)  # pixels
    assert np.isnan(errors[0, 1])  # gt not labelled
    assert np.isnan(errors[1, 1])  # no prediction


def test_radial_errors_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError):
        radial_errors(np.zeros((2, 3, 2)), np.zeros((2, 4, 2)), None)
    with pytest.raises(ValueError):
        radial_errors(np.zeros((2, 3, 2)), np.zeros((2, 3, 2)), np.ones((3, 2)))


def test_summarize_hand_list() -> None:
    # Errors 1, 2, 2.5, 3, 5 (and a NaN that must be ignored, not counted as 0): n = 5.
    s = summarize(np.array([1.0, 2.0, 2.5, NAN, 3.0, 5.0]))
    assert s.n == 5
    assert s.mre == pytest.approx(13.5 / 5)  # 2.7
    assert s.median == pytest.approx(2.5)
    # Deviations from 2.7: -1.7 -0.7 -0.2 0.3 2.3; squares sum to 8.8; sample variance 8.8 / 4 = 2.2.
    assert s.sd == pytest.approx(math.sqrt(2.2))
    # <= 2.0: {1, 2} -> 2/5; <= 2.5: 3/5 (inclusive); <= 3.0: 4/5; <= 4.0: 4/5.
    assert s.sdr == pytest.approx({2.0: 0.4, 2.5: 0.6, 3.0: 0.8, 4.0: 0.8})
    assert tuple(s.sdr) == SDR_THRESHOLDS_MM


def test_summarize_edge_cases() -> None:
    empty = summarize(np.full((3, 2), NAN))
    assert empty.n == 0 and math.isnan(empty.mre) and math.isnan(empty.sd)
    assert all(math.isnan(v) for v in empty.sdr.values())
    single = summarize([1.5])
    assert (single.n, single.mre, single.sd, single.median) == (1, 1.5, 0.0, 1.5)
    assert summarize([1.0, 10.0], thresholds=(5.0,)).sdr == {5.0: 0.5}


def test_error_summary_to_dict_is_strict_json() -> None:
    d = summarize([1.0, 3.0]).to_dict()
    assert d["mre"] == 2.0 and d["n"] == 2 and d["sdr"]["2.0"] == 0.5
    empty = summarize([]).to_dict()
    assert empty["mre"] is None and empty["sdr"]["4.0"] is None
    json.dumps([d, empty], allow_nan=False)


def test_per_landmark() -> None:
    errors = np.array([[1.0, NAN], [3.0, 4.0]])
    out = per_landmark(errors, ["S", "N"])
    assert list(out) == ["S", "N"]
    assert out["S"].mre == pytest.approx(2.0) and out["S"].n == 2
    assert out["N"].mre == pytest.approx(4.0) and out["N"].n == 1
    with pytest.raises(ValueError):
        per_landmark(errors, ["S"])


def _toy_result() -> IncrementalResult:
    """3 steps, 2 test images; a and b learned at step 0, c at step 1, d at step 2.

    after step 0: a = [1, 3], b = [2, 2]                 (c is predicted too but not learned yet: ignored)
    after step 1: a = [2, 2], b = [1, 1], c = [4, 6]
    after step 2: a = [3, 3], b = [1, NaN], c = [3, 5], d = [2, 4]
    """
    return IncrementalResult(
        landmark_step={"a": 0, "b": 0, "c": 1, "d": 2},
        errors=[
            {"a": np.array([1.0, 3.0]), "b": np.array([2.0, 2.0]), "c": np.array([99.0, 99.0])},
            {"a": np.array([2.0, 2.0]), "b": np.array([1.0, 1.0]), "c": np.array([4.0, 6.0])},
            {"a": [3.0, 3.0], "b": [1.0, NAN], "c": [3.0, 5.0], "d": [2.0, 4.0]},
        ],
    )


def test_step_matrix_toy() -> None:
    # E[0][0] = mean(1, 3, 2, 2) = 2
    # E[1][0] = mean(2, 2, 1, 1) = 1.5;  E[1][1] = mean(4, 6) = 5
    # E[2][0] = mean(3, 3, 1) = 7/3 (NaN skipped);  E[2][1] = mean(3, 5) = 4;  E[2][2] = mean(2, 4) = 3
    e = step_matrix(_toy_result())
    assert e[0][1] is None and e[0][2] is None and e[1][2] is None
    assert e[0][0] == pytest.approx(2.0)
    assert e[1][:2] == pytest.approx([1.5, 5.0])
    assert e[2] == pytest.approx([7 / 3, 4.0, 3.0])


def test_a_mre_toy_is_pooled() -> None:
    r = _toy_result()
    assert a_mre(r, 0) == pytest.approx(2.0)  # (1 + 3 + 2 + 2) / 4
    assert a_mre(r, 1) == pytest.approx(16 / 6)  # (2 + 2 + 1 + 1 + 4 + 6) / 6
    # (3 + 3 + 1 + 3 + 5 + 2 + 4) / 7 = 3 (a mean of per-landmark means would give 2.75)
    assert a_mre(r, 2) == pytest.approx(3.0)
    with pytest.raises(IndexError):
        a_mre(r, 3)


def test_transfer_toy() -> None:
    r = _toy_result()
    assert transfer(r, 0) == (None, None)
    # t = 1, old a, b: MRE when learned (step 0) a = 2, b = 2; after step 1 a = 2, b = 1.
    # d_a = 0, d_b = 1 -> AT = 0.5, MT = 1.
    assert transfer(r, 1) == pytest.approx((0.5, 1.0))
    # t = 2, old a, b, c: d_a = 2 - 3 = -1, d_b = 2 - 1 = 1, d_c = 5 (after step 1) - 4 = 1.
    # AT = (-1 + 1 + 1) / 3 = 1/3, MT = 1.
    assert transfer(r, 2) == pytest.approx((1 / 3, 1.0))


def test_per_landmark_mre_toy() -> None:
    r = _toy_result()
    assert per_landmark_mre(r, 0) == pytest.approx({"a": 2.0, "b": 2.0})
    assert per_landmark_mre(r, 2) == pytest.approx({"a": 3.0, "b": 1.0, "c": 4.0, "d": 3.0})


def test_incremental_report_toy() -> None:
    report = incremental_report(_toy_result())
    json.dumps(report, allow_nan=False)
    assert report["num_steps"] == 3
    assert report["a_mre"] == pytest.approx([2.0, 16 / 6, 3.0])
    assert report["at"][0] is None and report["mt"][0] is None
    assert report["at"][1:] == pytest.approx([0.5, 1 / 3])
    assert report["mt"][1:] == pytest.approx([1.0, 1.0])
    assert report["E"][0] == [pytest.approx(2.0), None, None]
    assert report["per_landmark_mre"][1] == pytest.approx({"a": 2.0, "b": 1.0, "c": 5.0})
    assert report["summary"][2]["n"] == 7 and report["summary"][2]["mre"] == pytest.approx(3.0)


def test_incremental_result_validation() -> None:
    with pytest.raises(ValueError, match="lacks"):
        IncrementalResult({"a": 0, "b": 1}, [{"a": [1.0]}, {"a": [1.0]}])
    with pytest.raises(ValueError, match="missing from landmark_step"):
        IncrementalResult({"a": 0}, [{"a": [1.0], "z": [1.0]}])
