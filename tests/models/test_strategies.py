"""models.strategies: where l_KA's gradient goes in each reading of KAMP's stage II; the feature term."""

from __future__ import annotations

import pytest
import torch

from models.batches import Batch
from models.config import TrainConfig
from models.kanet import KANet
from models.strategies import KAContext, StepOutputs, step_loss

B, C, H, W = 2, 4, 8, 10
NUM_OLD, NUM_NEW = 2, 2


def _batch() -> Batch:
    g = torch.zeros(B, NUM_OLD + NUM_NEW, H, W)
    g[:, 2, 3, 4] = g[:, 3, 5, 6] = 1.0
    mask = torch.tensor([[False, False, True, True]] * B)
    return Batch(x=torch.zeros(B, 1, 4 * H, 4 * W), targets=g, mask=mask, keypoints=torch.zeros(B, 4, 2))


def _ka() -> KAContext:
    torch.manual_seed(0)
    kanet = KANet(feature_channels=C, num_triplets=1, hidden=4).eval().requires_grad_(False)
    one = torch.tensor
    return KAContext(kanet=kanet, old=one([0]), new_a=one([2]), new_b=one([3]))


@pytest.mark.parametrize("mode", ["features", "pseudo_label"])
def test_ka_term_gradient_goes_where_its_reading_says(mode: str) -> None:
    """Reading "features": l_KA reaches the new model's features through the frozen KA-Net and leaves its heatmaps
    alone; "pseudo_label": l_KA pulls the new model's heatmap of the old landmark and never its features."""
    config = TrainConfig(ka_mode=mode, alpha=1.0, ka_weight=1.0)  # type: ignore[arg-type]
    batch, ka = _batch(), _ka()
    student = torch.rand(B, NUM_OLD + NUM_NEW, H, W, requires_grad=True)
    s_feat = torch.rand(B, C, H, W, requires_grad=True)
    teacher = student.detach()[:, :NUM_OLD].clone()  # KSD is exactly 0 and adds no gradient
    target = torch.rand(B, 1, H, W)
    outputs = StepOutputs(student, teacher, torch.rand(B, C, H, W), s_feat, target)
    loss, parts = step_loss("kamp", config, batch, outputs, NUM_OLD, ka)
    assert parts["ka"] > 0 and parts["ksd"] == pytest.approx(0.0, abs=1e-6)
    loss.backward()
    old_grad = student.grad[:, 0].abs().sum().item()
    feat_grad = s_feat.grad.abs().sum().item() if s_feat.grad is not None else 0.0
    if mode == "features":
        assert feat_grad > 0 and old_grad < 1e-5  # only rounding of the zero KSD gradient
    else:
        assert old_grad > 1e-3 and feat_grad == 0.0
    assert all(p.grad is None for p in ka.kanet.parameters())


def test_features_reading_needs_the_new_features() -> None:
    batch, ka = _batch(), _ka()
    student = torch.rand(B, NUM_OLD + NUM_NEW, H, W)
    with pytest.raises(ValueError, match="new model's features"):
        step_loss("kamp", TrainConfig(), batch, StepOutputs(student, student[:, :NUM_OLD]), NUM_OLD, ka)


@pytest.mark.parametrize("strategy", ["lwf", "cpr", "kamp_ksd_only", "kamp"])
def test_feature_term_pulls_the_new_features_towards_the_old(strategy: str) -> None:
    """feature_weight > 0 adds alpha * feature_weight * l_FD for every distilling strategy: its gradient moves F'
    towards F, and with F' = F it is zero; at 0 (the default) it is not computed."""
    batch = _batch()
    ka = _ka() if strategy == "kamp" else None
    student = torch.rand(B, NUM_OLD + NUM_NEW, H, W)
    teacher = student[:, :NUM_OLD].clone()
    t_feat = torch.rand(B, C, H, W)
    s_feat = (t_feat + 0.5).requires_grad_(True)
    target = torch.rand(B, 1, H, W)
    base = TrainConfig(alpha=2.0, ka_weight=0.0)
    outputs = StepOutputs(student, teacher, t_feat, s_feat, target)
    off, parts_off = step_loss(strategy, base, batch, outputs, NUM_OLD, ka)
    assert "fd" not in parts_off
    config = TrainConfig(alpha=2.0, ka_weight=0.0, feature_weight=3.0)
    on, parts = step_loss(strategy, config, batch, outputs, NUM_OLD, ka)
    expected = 0.25 * s_feat.numel() / float((t_feat**2).sum())
    assert parts["fd"] == pytest.approx(expected, rel=1e-5)
    assert float((on - off).detach()) == pytest.approx(2.0 * 3.0 * expected, rel=1e-4)
    on.backward()
    assert s_feat.grad is not None and bool((s_feat.grad > 0).all())  # F' > F everywhere: pushed down
    same_outputs = StepOutputs(student, teacher, t_feat, t_feat.clone(), target)
    _, same = step_loss(strategy, config, batch, same_outputs, NUM_OLD, ka)
    assert same["fd"] == 0.0


def test_feature_term_needs_both_models_features() -> None:
    batch = _batch()
    student = torch.rand(B, NUM_OLD + NUM_NEW, H, W)
    with pytest.raises(ValueError, match="previous model's features"):
        step_loss(
            "kamp_ksd_only", TrainConfig(feature_weight=1.0), batch, StepOutputs(student, student[:, :NUM_OLD]), NUM_OLD
        )
