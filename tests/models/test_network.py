"""LandmarkNet and its growing head, KA-Net, and the choice of KA-Net's triplets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.backbones.hrnet import HighResolutionModule
from models.config import BackboneConfig
from models.kanet import KANet
from models.network import LandmarkHead, LandmarkNet
from models.triplets import random_triplets, select_triplets

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = BackboneConfig(name="hrnet_w18_tiny")


@pytest.fixture(scope="module")
def net() -> LandmarkNet:
    torch.manual_seed(0)
    return LandmarkNet(backbone=TINY, step_sizes=[3]).eval()


# ---- LandmarkNet --------------------------------------------------------------------------------------


def test_landmark_net_shapes(net: LandmarkNet) -> None:
    x = torch.rand(2, 1, 96, 64)  # input 64 wide, 96 high
    with torch.no_grad():
        heat, feats = net.forward_with_features(x)
        plain = net(x)
    assert net.stride == 4
    assert heat.shape == (2, 3, 24, 16)
    assert feats.shape == (2, net.backbone.out_channels, 24, 16)
    assert torch.equal(heat, plain)


@pytest.mark.parametrize("head_channels", [0, 8])
def test_head_growth_keeps_old_outputs_bit_identical(head_channels: int) -> None:
    torch.manual_seed(1)
    backbone = BackboneConfig(name="hrnet_w18_tiny", head_channels=head_channels)
    model = LandmarkNet(backbone=backbone, step_sizes=[3]).eval()
    # Non-default old head weights, so that "identical" is not the trivial N(0, 0.001) init.
    with torch.no_grad():
        for p in model.head.parameters():
            p.normal_()
    x = torch.rand(2, 1, 96, 64)
    with torch.no_grad():
        before = model(x)
        model.head.grow(2)
        after_one = model(x)
        model.head.grow(1)
        after_two = model(x)
    assert after_one.shape == (2, 5, 24, 16) and after_two.shape == (2, 6, 24, 16)
    assert torch.equal(after_one[:, :3], before)
    assert torch.equal(after_two[:, :5], after_one)


def test_step_sizes_and_growth_validation() -> None:
    head = LandmarkHead(in_channels=8, step_sizes=[19, 5])
    assert head.step_sizes == [19, 5] and head.num_landmarks == 24
    head.grow(4)
    assert head.step_sizes == [19, 5, 4] and head.num_landmarks == 28
    # New convs start as mmpose does: tiny weights, zero bias.
    new = head.convs[-1]
    assert torch.equal(new.bias, torch.zeros(4)) and float(new.weight.detach().std()) < 0.01
    with pytest.raises(ValueError):
        head.grow(0)
    with pytest.raises(RuntimeError):
        LandmarkHead(in_channels=8)(torch.rand(1, 8, 2, 2))  # no landmark yet


def _rank_per_image(head: LandmarkHead, features: torch.Tensor) -> int:
    """Rank of the head's (K, h*w) output for one image of (1, C, h, w) features."""
    with torch.no_grad():
        for p in head.parameters():
            p.normal_()
        return int(torch.linalg.matrix_rank(head.double().eval()(features.double())[0].flatten(1)))


def test_a_hidden_layer_lifts_the_head_above_the_rank_of_its_features() -> None:
    # 1x1 convs on C channels give K heatmaps in the span of C maps and a constant: rank <= C + 1 however many
    # landmarks; a hidden conv-BN-ReLU of 8 channels lets 6 landmarks' maps be independent.
    torch.manual_seed(4)
    features = torch.rand(1, 2, 10, 10)
    assert _rank_per_image(LandmarkHead(in_channels=2, step_sizes=[4, 2]), features) == 3
    assert _rank_per_image(LandmarkHead(in_channels=2, step_sizes=[4, 2], hidden_channels=8), features) == 6


def test_head_channels_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="head_channels"):
        BackboneConfig(name="hrnet_w18_tiny", head_channels=-1)


# ---- KA-Net -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("train_mode", [False, True])
def test_kanet_shape_and_triplet_independence(train_mode: bool) -> None:
    torch.manual_seed(2)
    kanet = KANet(feature_channels=6, num_triplets=3, hidden=8).train(train_mode)
    feats = torch.rand(2, 6, 12, 10)
    g1, g2 = torch.rand(2, 3, 12, 10), torch.rand(2, 3, 12, 10)
    with torch.no_grad():
        out = kanet(feats, g1, g2)
        g1_changed = g1.clone()
        g1_changed[:, 0] = torch.rand(2, 12, 10)  # only triplet 0's first new landmark changes
        out_changed = kanet(feats, g1_changed, g2)
    assert out.shape == (2, 3, 12, 10)
    # Grouped convolutions (and per-channel BatchNorm, even with batch statistics in train mode) keep the
    # triplets' networks apart: triplets 1 and 2 see exactly the same inputs and weights.
    assert not torch.allclose(out_changed[:, 0], out[:, 0])
    assert torch.equal(out_changed[:, 1:], out[:, 1:])


def test_kanet_needs_a_triplet() -> None:
    with pytest.raises(ValueError):
        KANet(feature_channels=6, num_triplets=0)


# ---- select_triplets ----------------------------------------------------------------------------------


def _pos(*xy: tuple[float, float]) -> np.ndarray:
    """(N, 2) positions of one landmark on N images."""
    return np.array(xy, dtype=np.float64)


def test_select_triplets_picks_the_obvious_neighbours() -> None:
    # Two images. Old O1 sits near new A and B; old O2 sits near new C and D, 100 px away.
    old = {"O1": _pos((0, 0), (2, 1)), "O2": _pos((100, 100), (101, 99))}
    new = {
        "A": _pos((1, 0), (3, 1)),
        "B": _pos((0, 1), (2, 2)),
        "C": _pos((101, 100), (102, 99)),
        "D": _pos((100, 101), (101, 100)),
    }
    chosen = select_triplets(old, new, max_triplets=4)
    # Both scores are 1 + 1 = 2; every other candidate is far worse. Only two olds: two triplets at most.
    assert sorted(chosen) == [("O1", "A", "B"), ("O2", "C", "D")]
    assert len(select_triplets(old, new, max_triplets=1)) == 1
    assert select_triplets(old, new, max_triplets=0) == []


def test_select_triplets_uses_each_old_and_pair_once() -> None:
    # All three old landmarks are nearest to the pair (A, B); only the best gets it, the others fall back.
    old = {"O1": _pos((0, 0)), "O2": _pos((-0.5, -0.3)), "O3": _pos((3, 2.5))}
    new = {"A": _pos((1, 0)), "B": _pos((0, 1)), "C": _pos((10, 0))}
    # Scores |o - a| + |o - b| (by hand):
    #   O1: AB 1 + 1 = 2.00,           AC 1 + 10 = 11.00,         BC 1 + 10 = 11.00
    #   O2: AB 1.530 + 1.393 = 2.92,   AC 1.530 + 10.504 = 12.03, BC 1.393 + 10.504 = 11.90
    #   O3: AB 3.202 + 3.354 = 6.56,   AC 3.202 + 7.433 = 10.63,  BC 3.354 + 7.433 = 10.79
    # Greedy, best first: O1-AB; O2-AB and O3-AB skipped (pair used); O3-AC; O3-BC skipped (O3 used);
    # O1-AC, O1-BC skipped (O1 used); O2-BC.
    assert select_triplets(old, new, max_triplets=3) == [("O1", "A", "B"), ("O3", "A", "C"), ("O2", "B", "C")]
    assert select_triplets(old, new, max_triplets=2) == [("O1", "A", "B"), ("O3", "A", "C")]


def test_select_triplets_single_new_landmark() -> None:
    # With one new landmark the "pair" is (A, A), usable once: the nearest old landmark gets it.
    old = {"far": _pos((50, 50)), "near": _pos((1, 1)), "mid": _pos((5, 5))}
    new = {"A": _pos((0, 0))}
    assert select_triplets(old, new, max_triplets=3) == [("near", "A", "A")]


def test_select_triplets_ignores_unlabelled_images() -> None:
    # A is unlabelled on image 2: each candidate is scored on image 1 only, instead of becoming NaN.
    old = {"O1": _pos((0, 0), (50, 50)), "O2": _pos((10, 0), (0, 0))}
    new = {"A": _pos((1, 0), (np.nan, np.nan)), "B": _pos((2, 0), (0, 0))}
    # O1: |(0,0)-(1,0)| + |(0,0)-(2,0)| = 3; O2: 9 + 8 = 17. Only one pair (A, B), so one triplet.
    assert select_triplets(old, new, max_triplets=2) == [("O1", "A", "B")]
    # A new landmark labelled on no image cannot be scored at all.
    never = {"A": _pos((np.nan, np.nan), (np.nan, np.nan)), "B": _pos((9, 0), (9, 0))}
    assert select_triplets(old, never, max_triplets=2) == []


# ---- random_triplets ----------------------------------------------------------------------------------


def test_random_triplets_deterministic_and_valid() -> None:
    old, new = ["S", "N", "Or", "Po", "A"], ["D", "U1A", "L1A"]
    first = random_triplets(old, new, 3, np.random.default_rng(7))
    again = random_triplets(old, new, 3, np.random.default_rng(7))
    assert first == again
    assert len(first) == 3
    assert len({o for o, _, _ in first}) == 3  # distinct old landmarks
    for o, a, b in first:
        assert isinstance(o, str) and o in old and a in new and b in new and a != b
    # More triplets asked than old landmarks: each old landmark once.
    assert sorted(o for o, _, _ in random_triplets(old, new, 99, np.random.default_rng(0))) == sorted(old)
    assert random_triplets(old, new, 0, np.random.default_rng(0)) == []


def test_random_triplets_single_new_landmark() -> None:
    out = random_triplets(["S", "N"], ["D"], 2, np.random.default_rng(3))
    assert sorted(out) == [("N", "D", "D"), ("S", "D", "D")]


# ---- folding batch norms for a frozen model ----------------------------------------------------------------


def test_a_batch_norm_folds_into_its_conv_by_hand() -> None:
    from models.backbones.hrnet import fold_batch_norms

    conv = torch.nn.Conv2d(1, 1, 1, bias=False)
    bn = torch.nn.BatchNorm2d(1, eps=0.0)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        bn.weight.fill_(2.0)
        bn.bias.fill_(1.0)
        bn.running_mean.fill_(3.0)
        bn.running_var.fill_(4.0)
    seq = torch.nn.Sequential(conv, bn, torch.nn.ReLU()).eval()
    assert fold_batch_norms(seq) == 1 and isinstance(seq[1], torch.nn.Identity)
    # w' = 1 * 2 / sqrt(4) = 1; b' = (0 - 3) * 1 + 1 = -2
    assert conv.weight.item() == 1.0 and conv.bias is not None and conv.bias.item() == -2.0
    with pytest.raises(ValueError, match="eval mode"):
        fold_batch_norms(torch.nn.Sequential(torch.nn.Conv2d(1, 1, 1), torch.nn.BatchNorm2d(1)).train())


@pytest.mark.parametrize(
    ("name", "head_channels"), [("hrnet_w18_tiny", 0), ("hrnet_w18_small", 0), ("hrnet_w18_tiny", 8)]
)
def test_a_frozen_network_computes_the_same_without_batch_norms(name: str, head_channels: int) -> None:
    torch.manual_seed(0)
    net = LandmarkNet(backbone=BackboneConfig(name=name, head_channels=head_channels), step_sizes=[3, 2])
    with torch.no_grad():  # statistics far from the identity, so that a wrong fold shows
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    net.eval()
    x = torch.rand(2, 1, 96, 64)
    with torch.no_grad():
        before = net.forward_with_features(x)
        frozen = net.frozen()
        after = frozen.forward_with_features(x)
    assert frozen is net and not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    for a, b in zip(before, after, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * a.abs().max().item())


# ---- the features before the last ReLU (BackboneConfig.last_relu) -------------------------------------


def _last_module(net: LandmarkNet) -> HighResolutionModule:
    """The backbone's last HighResolutionModule, whose fusion the heads read."""
    last = list(net.backbone.get_submodule("stage4").children())[-1]
    assert isinstance(last, HighResolutionModule)
    return last


def _last_fusion_biased(net: LandmarkNet, bias: float) -> None:
    """Shift the last fusion's sum by `bias` at every position (through the BNs that end the lower branches'
    maps onto the output branch; the output branch's own blocks end in their ReLU)."""
    rows = _last_module(net).fuse_layers
    assert rows is not None
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                assert m.running_var is not None and m.running_mean is not None
                m.running_var.fill_(1.0)
                m.running_mean.zero_()
        for fuse in list(rows[0].children())[1:]:
            bn = list(fuse.children())[-1]
            assert isinstance(bn, torch.nn.BatchNorm2d)
            bn.bias.fill_(bias)


def test_without_the_last_relu_the_features_are_the_sums_before_it() -> None:
    torch.manual_seed(3)
    with_relu = LandmarkNet(backbone=TINY, step_sizes=[2]).eval()
    without = LandmarkNet(backbone=BackboneConfig(name="hrnet_w18_tiny", last_relu=False), step_sizes=[2]).eval()
    # The option adds and removes no weights: a state dict moves between the two.
    without.load_state_dict(with_relu.state_dict())
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        f_relu, f_raw = with_relu.features(x), without.features(x)
    assert (f_raw < 0).any()
    assert torch.equal(torch.relu(f_raw), f_relu)


@pytest.mark.parametrize(("last_relu", "gets_gradient"), [(True, False), (False, True)])
def test_a_new_landmark_learns_where_the_last_relu_is_dead(last_relu: bool, gets_gradient: bool) -> None:
    """The isbi19 failure in miniature: every feature negative before the last ReLU (docs/method.md)."""
    torch.manual_seed(4)
    net = LandmarkNet(backbone=BackboneConfig(name="hrnet_w18_tiny", last_relu=last_relu), step_sizes=[2]).eval()
    _last_fusion_biased(net, -1e3)
    net.head.grow(1)
    target = torch.zeros(1, 1, 16, 16)
    target[0, 0, 8, 8] = 1.0
    heat = net(torch.rand(1, 1, 64, 64))[:, 2:]
    torch.nn.functional.mse_loss(heat, target).backward()
    new_conv = net.head.convs[1]
    assert isinstance(new_conv, torch.nn.Conv2d) and new_conv.weight.grad is not None
    weight_gradient = new_conv.weight.grad.abs().sum().item()
    backbone_gradient = sum(
        p.grad.abs().sum().item() for p in net.backbone.get_submodule("stage4").parameters() if p.grad is not None
    )
    assert (weight_gradient > 0) is gets_gradient
    assert (backbone_gradient > 0) is gets_gradient


def test_the_crop_network_follows_the_refine_config() -> None:
    from models.config import RefineConfig
    from models.refine import build_crop_network

    net = build_crop_network(RefineConfig(last_relu=False), [1])
    assert net.backbone_config.last_relu is False
    assert not any(isinstance(m, torch.nn.ReLU) for m in _last_module(net).children())
