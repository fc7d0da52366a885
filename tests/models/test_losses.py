"""models.losses against values computed by hand with plain Python math (never the same torch calls)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models.codec import HeatmapCodec
from models.config import CodecConfig, TrainConfig
from models.losses import (
    cpr_regulariser,
    feature_distillation,
    heatmap_mse,
    ksd_loss,
    lwf_loss,
    spatial_log_distributions,
)


def _softmax(logits: list[float]) -> list[float]:
    m = max(logits)
    e = [math.exp(v - m) for v in logits]
    return [v / sum(e) for v in e]


def _kl(teacher_values: list[float], student_values: list[float], temperature: float) -> float:
    """KL(softmax(t / T) || softmax(s / T)) = sum_i p_i (log p_i - log q_i)."""
    p = _softmax([v / temperature for v in teacher_values])
    q = _softmax([v / temperature for v in student_values])
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))


# ---- heatmap_mse --------------------------------------------------------------------------------------


def test_heatmap_mse_unmasked_and_masked() -> None:
    pred = torch.zeros(1, 3, 2, 2)
    target = torch.zeros(1, 3, 2, 2)
    target[0, 0] = 1.0  # per-map MSE 1
    target[0, 1] = 3.0  # per-map MSE 9
    target[0, 2] = 100.0  # per-map MSE 10000, masked out below
    # Unmasked: mean over all maps (1 + 9 + 10000) / 3.
    assert float(heatmap_mse(pred, target)) == pytest.approx((1 + 9 + 10000) / 3)
    # Masked: the unlabelled channel is ignored entirely: (1 + 9) / 2.
    mask = torch.tensor([[True, True, False]])
    assert float(heatmap_mse(pred, target, mask)) == pytest.approx(5.0)


def test_heatmap_mse_masked_channel_values_do_not_matter() -> None:
    torch.manual_seed(0)
    pred, target = torch.rand(2, 3, 4, 5), torch.rand(2, 3, 4, 5)
    mask = torch.tensor([[True, False, True], [False, True, True]])
    altered = pred.clone()
    altered[0, 1] += 50.0
    altered[1, 0] -= 7.0
    assert torch.equal(heatmap_mse(pred, target, mask), heatmap_mse(altered, target, mask))


def test_heatmap_mse_all_masked_is_zero_without_nan() -> None:
    pred = torch.rand(2, 3, 4, 5, requires_grad=True)
    loss = heatmap_mse(pred, torch.rand(2, 3, 4, 5), torch.zeros(2, 3, dtype=torch.bool))
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert pred.grad is not None and torch.equal(pred.grad, torch.zeros_like(pred))


# ---- ksd_loss -----------------------------------------------------------------------------------------

# B=1, K=1, 2x3 heatmaps (h=2 rows, w=3 columns), T = 0.5.
STUDENT = [[0.1, 0.5, 0.2], [0.4, 0.0, 0.3]]
TEACHER = [[0.9, 0.1, 0.0], [0.2, 0.6, 0.3]]
T_SMALL = 0.5


def _t(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)[None, None]


def test_ksd_marginal_by_hand() -> None:
    # Profile along H = max over each row:     student [0.5, 0.4],      teacher [0.9, 0.6]
    # Profile along W = max over each column:  student [0.4, 0.5, 0.3], teacher [0.9, 0.6, 0.3]
    # Divided by T = 0.5 and softmaxed:
    #   teacher H: softmax[1.8, 1.2]      = [0.64566, 0.35434];  student H: softmax[1.0, 0.8] = [0.54983, 0.45017]
    #   teacher W: softmax[1.8, 1.2, 0.6] = [0.54054, 0.29665, 0.16281]
    #   student W: softmax[0.8, 1.0, 0.6] = [0.32893, 0.40176, 0.26931]
    # KL_H = 0.64566 ln(0.64566/0.54983) + 0.35434 ln(0.35434/0.45017) = 0.018913
    # KL_W = 0.54054 ln(.54054/.32893) + 0.29665 ln(.29665/.40176) + 0.16281 ln(.16281/.26931) = 0.096582
    # l_KSD = KL_H + KL_W = 0.115496
    by_hand = _kl([0.9, 0.6], [0.5, 0.4], T_SMALL) + _kl([0.9, 0.6, 0.3], [0.4, 0.5, 0.3], T_SMALL)
    assert by_hand == pytest.approx(0.115496, abs=1e-6)
    loss = ksd_loss(_t(STUDENT), _t(TEACHER), temperature=T_SMALL, mode="marginal")
    assert float(loss) == pytest.approx(by_hand, rel=1e-5)


def test_ksd_rows_by_hand() -> None:
    # "rows": one distribution along H per column, averaged over the 3 columns, plus one along W per row,
    # averaged over the 2 rows.
    # Columns (teacher | student): [0.9, 0.2] | [0.1, 0.4] -> KL 0.421438
    #                              [0.1, 0.6] | [0.5, 0.0] -> KL 0.462117
    #                              [0.0, 0.3] | [0.2, 0.3] -> KL 0.018913
    # Rows:                        [0.9, 0.1, 0.0] | [0.1, 0.5, 0.2] -> KL 0.583235
    #                              [0.2, 0.6, 0.3] | [0.4, 0.0, 0.3] -> KL 0.237317
    # l_KSD = (0.421438 + 0.462117 + 0.018913) / 3 + (0.583235 + 0.237317) / 2 = 0.300823 + 0.410276 = 0.711099
    columns_t = [[0.9, 0.2], [0.1, 0.6], [0.0, 0.3]]
    columns_s = [[0.1, 0.4], [0.5, 0.0], [0.2, 0.3]]
    along_h = sum(_kl(t, s, T_SMALL) for t, s in zip(columns_t, columns_s, strict=True)) / 3
    along_w = sum(_kl(t, s, T_SMALL) for t, s in zip(TEACHER, STUDENT, strict=True)) / 2
    by_hand = along_h + along_w
    assert by_hand == pytest.approx(0.711099, abs=1e-6)
    loss = ksd_loss(_t(STUDENT), _t(TEACHER), temperature=T_SMALL, mode="rows")
    assert float(loss) == pytest.approx(by_hand, rel=1e-5)


def test_ksd_averages_over_samples_and_landmarks() -> None:
    # Two (sample, landmark) pairs: the hand example and an identical pair (KL 0): mean = half the example.
    student = torch.cat([_t(STUDENT), _t(TEACHER)], dim=1)  # (1, 2, 2, 3)
    teacher = torch.cat([_t(TEACHER), _t(TEACHER)], dim=1)
    loss = ksd_loss(student, teacher, temperature=T_SMALL, mode="marginal")
    assert float(loss) == pytest.approx(0.115496 / 2, abs=1e-6)


@pytest.mark.parametrize("mode", ["marginal", "rows"])
def test_ksd_zero_for_equal_and_positive_otherwise(mode: str) -> None:
    torch.manual_seed(1)
    teacher = torch.rand(2, 3, 8, 6)
    assert float(ksd_loss(teacher.clone(), teacher, temperature=0.1, mode=mode)) == pytest.approx(0.0, abs=1e-7)
    student = teacher + 0.3 * torch.rand(2, 3, 8, 6)
    assert float(ksd_loss(student, teacher, temperature=0.1, mode=mode)) > 1e-4


def test_ksd_unknown_mode_raises() -> None:
    with pytest.raises(ValueError):
        ksd_loss(torch.rand(1, 1, 2, 2), torch.rand(1, 1, 2, 2), temperature=0.1, mode="columns")  # type: ignore[arg-type]


def test_ksd_gradient_reaches_the_student_only() -> None:
    torch.manual_seed(2)
    student = torch.rand(1, 2, 6, 5, requires_grad=True)
    teacher = torch.rand(1, 2, 6, 5, requires_grad=True)
    ksd_loss(student, teacher, temperature=0.1).backward()
    assert teacher.grad is None  # the teacher is detached: a frozen target
    assert student.grad is not None and float(student.grad.abs().sum()) > 0


# ---- temperature ----------------------------------------------------------------------------------------


def _gaussian_profile_entropy(temperature: float) -> float:
    """Entropy (nats) of the W-profile distribution of a unit-peak Gaussian heatmap, sigma 1.5 px, 60x60,
    centred on a pixel."""
    codec = HeatmapCodec(CodecConfig(input_size=(240, 240), stride=4, sigma=1.5))  # 60x60 heatmaps
    heat = codec.encode(torch.tensor([[[30.0, 30.0]]]))
    _, log_px = spatial_log_distributions(heat, temperature, "marginal")
    assert log_px.shape == (1, 1, 60)
    p = log_px.exp().double().numpy()[0, 0]
    return float(-(p * np.log(p)).sum())


def test_temperature_one_is_nearly_uniform_and_low_temperature_is_peaked() -> None:
    # Cross-check the profile with numpy: 60 bins of exp(-(i - 30)^2 / (2 * 1.5^2)).
    i = np.arange(60)
    g = np.exp(-((i - 30) ** 2) / (2 * 1.5**2))
    for temperature in (1.0, 0.1):
        p = np.exp(g / temperature) / np.exp(g / temperature).sum()
        assert _gaussian_profile_entropy(temperature) == pytest.approx(-(p * np.log(p)).sum(), abs=1e-4)
    # Measured 4.0622 nats at T = 1 against log 60 = 4.0943 for a uniform distribution: a unit-peak
    # heatmap softmaxed at T = 1 carries almost no position. At T = 0.1: 0.7187 nats.
    assert _gaussian_profile_entropy(1.0) == pytest.approx(4.06, abs=0.02)
    assert math.log(60) - _gaussian_profile_entropy(1.0) < 0.05
    assert _gaussian_profile_entropy(0.1) == pytest.approx(0.72, abs=0.02)


def test_default_temperature_gives_a_peaked_teacher() -> None:
    assert _gaussian_profile_entropy(TrainConfig().temperature) < 1.5


# ---- lwf_loss -----------------------------------------------------------------------------------------


def test_lwf_by_hand() -> None:
    # B=1, K=2 channels, 1x2 pixels, T = 0.5. At each pixel: softmax across the 2 channels, KL(t || s).
    # Pixel 0: teacher channels [0.8, 0.1], student [0.2, 0.5] -> KL 0.421438
    # Pixel 1: teacher channels [0.3, 0.4], student [0.7, 0.1] -> KL 0.234911
    # Mean over the 2 pixels: 0.328175
    student = torch.tensor([[0.2, 0.7], [0.5, 0.1]])[None, :, None, :]  # (1, 2, 1, 2): [channel][pixel]
    teacher = torch.tensor([[0.8, 0.3], [0.1, 0.4]])[None, :, None, :]
    by_hand = (_kl([0.8, 0.1], [0.2, 0.5], T_SMALL) + _kl([0.3, 0.4], [0.7, 0.1], T_SMALL)) / 2
    assert by_hand == pytest.approx(0.328175, abs=1e-6)
    assert float(lwf_loss(student, teacher, temperature=T_SMALL)) == pytest.approx(by_hand, rel=1e-5)


def test_lwf_zero_for_equal_inputs_and_student_gradient_only() -> None:
    torch.manual_seed(3)
    teacher = torch.rand(2, 4, 5, 6, requires_grad=True)
    assert float(lwf_loss(teacher.detach().clone(), teacher, temperature=0.1)) == pytest.approx(0.0, abs=1e-7)
    student = torch.rand(2, 4, 5, 6, requires_grad=True)
    loss = lwf_loss(student, teacher, temperature=0.1)
    assert float(loss.detach()) > 0
    loss.backward()
    assert teacher.grad is None and student.grad is not None


# ---- cpr_regulariser ----------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [2, 5, 19])
def test_cpr_is_log_k_for_peaked_and_zero_for_uniform(k: int) -> None:
    # One channel at 1 and the others at 0 at every pixel: at T = 0.01 the channel distribution is one-hot
    # up to exp(-100), so its entropy is ~0 and KL(p || uniform) = log K.
    peaked = torch.zeros(2, k, 4, 3)
    for pixel in range(12):
        peaked[:, pixel % k, pixel // 3, pixel % 3] = 1.0
    assert float(cpr_regulariser(peaked, temperature=0.01)) == pytest.approx(math.log(k), abs=1e-3)
    # Equal channels at every pixel (whatever the value): the uniform distribution, entropy log K.
    uniform = torch.rand(2, 1, 4, 3).expand(2, k, 4, 3)
    assert float(cpr_regulariser(uniform, temperature=0.1)) == pytest.approx(0.0, abs=1e-5)


def test_cpr_single_landmark_is_zero() -> None:
    assert float(cpr_regulariser(torch.rand(2, 1, 4, 3), temperature=0.1)) == 0.0


def test_feature_distillation_by_hand() -> None:
    teacher = torch.tensor([[[[1.0, 2.0]], [[0.0, 2.0]]]])  # (1, 2, 1, 2): sum of squares 9
    student = torch.tensor([[[[1.0, 0.0]], [[1.0, 2.0]]]])  # squared differences 0, 4, 1, 0
    assert float(feature_distillation(student, teacher)) == pytest.approx(5.0 / 9.0)
    assert float(feature_distillation(teacher, teacher)) == 0.0
    # Scale-free: the same relative error at any feature scale; all-zero features give 1, not a blow-up.
    assert float(feature_distillation(100 * student, 100 * teacher)) == pytest.approx(5.0 / 9.0)
    assert float(feature_distillation(torch.zeros_like(teacher), teacher)) == pytest.approx(1.0)


def test_feature_distillation_gradient_reaches_the_student_only() -> None:
    student = torch.rand(2, 3, 4, 5, requires_grad=True)
    teacher = torch.rand(2, 3, 4, 5, requires_grad=True)
    feature_distillation(student, teacher).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None
