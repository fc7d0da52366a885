"""HRNet backbones, the backbone registry and local pretrained-weight loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from models.backbones import (
    Backbone,
    HRNet,
    HRNetSpec,
    available_backbones,
    build_backbone,
    register_backbone,
)
from models.backbones import registry as registry_module
from models.backbones.hrnet import HRNET_SPECS
from models.backbones.pretrained import load_pretrained
from models.config import BackboneConfig

HRNET_NAMES = ["hrnet_w18", "hrnet_w18_small", "hrnet_w18_tiny", "hrnet_w32", "hrnet_w48"]


def _tiny(in_channels: int = 1) -> HRNet:
    return HRNet(spec=HRNET_SPECS["hrnet_w18_tiny"], in_channels=in_channels)


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _trained_stats(model: HRNet, in_channels: int = 1) -> HRNet:
    """Move BN running statistics off their defaults so that a load that drops buffers shows up."""
    model.train()
    with torch.no_grad():
        model(torch.randn(2, in_channels, 64, 64))
    return model.eval()


def _reference_params(spec: HRNetSpec, in_channels: int) -> int:
    """Parameter count of the official pose HRNet backbone, counted conv by conv from the paper's layout."""

    def conv_bn(cin: int, cout: int, k: int) -> int:
        return cin * cout * k * k + 2 * cout  # bias-free conv + BN weight and bias

    n = conv_bn(in_channels, 64, 3) + conv_bn(64, 64, 3)
    bottleneck = conv_bn(256, 64, 1) + conv_bn(64, 64, 3) + conv_bn(64, 256, 1)
    n += bottleneck - conv_bn(256, 64, 1) + conv_bn(64, 64, 1) + conv_bn(64, 256, 1)  # first has projection
    n += (spec.stage1_blocks - 1) * bottleneck
    pre = [256]
    for stage, (modules, blocks) in enumerate(zip(spec.num_modules, spec.num_blocks, strict=True), start=2):
        w = [spec.width * 2**i for i in range(len(blocks))]
        n += sum(conv_bn(pre[i], w[i], 3) for i in range(len(pre)) if pre[i] != w[i])
        n += sum(
            conv_bn(pre[-1], pre[-1], 3) * (i - len(pre)) + conv_bn(pre[-1], w[i], 3) for i in range(len(pre), len(w))
        )
        branches = sum(b * 2 * conv_bn(c, c, 3) for b, c in zip(blocks, w, strict=True))
        for m in range(modules):
            rows = 1 if (stage == 4 and m == modules - 1) else len(w)  # stage 4 ends on one branch
            n += branches
            for i in range(rows):
                n += sum(conv_bn(w[j], w[i], 1) for j in range(i + 1, len(w)))
                n += sum(conv_bn(w[j], w[j], 3) * (i - j - 1) + conv_bn(w[j], w[i], 3) for j in range(i))
        pre = w
    return n


# ---------------------------------------------------------------------------------------------- shapes


# 200 is no multiple of 32: the lower branches round their sizes up and the fusion upsamples to exact sizes.
@pytest.mark.parametrize(("h", "w"), [(64, 64), (96, 128), (160, 32), (200, 160), (44, 36)])
def test_output_is_stride4_highest_resolution_branch(h: int, w: int) -> None:
    model = _tiny().eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, h, w))
    assert out.shape == (2, 18, h // 4, w // 4)
    assert model.out_channels == 18 and model.stride == 4
    assert torch.isfinite(out).all()


def test_rgb_input_and_backward() -> None:
    model = _tiny(in_channels=3)
    out = model(torch.randn(1, 3, 64, 96))
    out.mean().backward()
    assert out.shape == (1, 18, 16, 24)
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("shape", [(1, 1, 64, 82), (1, 1, 50, 64), (1, 3, 64, 64), (1, 64, 64)])
def test_bad_input_raises(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"multiples of 4|expected input"):
        _tiny()(torch.randn(*shape))


def test_spec_validation() -> None:
    with pytest.raises(ValueError):
        HRNetSpec(width=0)
    with pytest.raises(ValueError):
        HRNetSpec(width=18, num_blocks=((4, 4), (4, 4), (4, 4, 4, 4)))


def test_official_parameter_names() -> None:
    keys = set(_tiny().state_dict())
    for key in [
        "conv1.weight",
        "bn2.running_var",
        "layer1.0.downsample.0.weight",
        "transition1.0.0.weight",
        "transition1.1.0.0.weight",
        "transition2.2.0.0.weight",
        "transition3.3.0.0.weight",
        "stage2.0.branches.1.0.conv2.weight",
        "stage3.0.fuse_layers.0.2.0.weight",  # upsample 4C -> C: 1x1 conv
        "stage3.0.fuse_layers.2.0.1.0.weight",  # downsample C -> 4C: second stride-2 conv
        "stage4.0.fuse_layers.0.3.1.bias",
    ]:
        assert key in keys, key
    # Only the highest-resolution output of the last module is fused.
    assert not any(k.startswith("stage4.0.fuse_layers.1.") for k in keys)


# ------------------------------------------------------------------------------------- parameter counts


def test_hrnet_w32_matches_official_pose_backbone() -> None:
    # The official pose_hrnet_w32 (3-channel input, 17 joints) has "28.5M" parameters, its 1x1 final layer
    # 32 * 17 + 17 = 561 of them. Counting by hand (stem 38,848; layer1 286,208; transition1 221,376;
    # stage2 390,848; transition2 73,984; stage3 4 x 1,705,408; transition3 295,424; stage4
    # 2 x 7,059,072 + 6,289,088 whose last module fuses onto branch 0 only) gives 28,535,552 for the
    # backbone and 28,536,113 in all, which rounds to the published 28.5M.
    official_backbone = 28_535_552
    assert round((official_backbone + 32 * 17 + 17) / 1e5) == 285
    assert _reference_params(HRNET_SPECS["hrnet_w32"], in_channels=3) == official_backbone
    model = build_backbone(BackboneConfig(name="hrnet_w32", in_channels=3))
    assert _n_params(model) == official_backbone
    # Grayscale only shrinks the stem: 64 * 2 * 9 fewer weights.
    assert _n_params(HRNet(spec=HRNET_SPECS["hrnet_w32"], in_channels=1)) == official_backbone - 1152


def test_hrnet_w48_reference_matches_published() -> None:
    # pose_hrnet_w48 is published as 63.6M parameters with its 48 * 17 + 17 final layer.
    total = _reference_params(HRNET_SPECS["hrnet_w48"], in_channels=3) + 48 * 17 + 17
    assert round(total / 1e5) == 636


@pytest.mark.parametrize("name", ["hrnet_w18_tiny", "hrnet_w18_small"])
def test_small_variants_match_reference_count(name: str) -> None:
    model = build_backbone(BackboneConfig(name=name))
    assert _n_params(model) == _reference_params(HRNET_SPECS[name], in_channels=1)


# ------------------------------------------------------------------------------------------- registry


def test_registry_lists_and_builds_hrnets() -> None:
    assert set(HRNET_NAMES) <= set(available_backbones())
    model = build_backbone(BackboneConfig(name="hrnet_w18_tiny", in_channels=3))
    assert isinstance(model, HRNet) and isinstance(model, Backbone)
    assert model.conv1.in_channels == 3


def test_registry_unknown_name_lists_available() -> None:
    with pytest.raises(ValueError, match="hrnet_w32"):
        build_backbone(BackboneConfig(name="resnet_9000"))


def test_register_custom_backbone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_module, "_REGISTRY", dict(registry_module._REGISTRY))

    @register_backbone("custom_tiny")
    def build(config: BackboneConfig) -> HRNet:
        return _tiny(config.in_channels)

    assert "custom_tiny" in available_backbones()
    assert isinstance(build_backbone(BackboneConfig(name="custom_tiny")), HRNet)
    with pytest.raises(ValueError, match="already registered"):
        register_backbone("custom_tiny")(build)


# ----------------------------------------------------------------------------------- pretrained weights


def test_pretrained_round_trip_safetensors(tmp_path: Path) -> None:
    source = _trained_stats(_tiny())
    path = tmp_path / "weights.safetensors"
    save_file({f"module.{k}": v.contiguous() for k, v in source.state_dict().items()}, str(path))

    fresh = build_backbone(BackboneConfig(name="hrnet_w18_tiny", pretrained=str(path))).eval()
    x = torch.randn(1, 1, 64, 96)
    with torch.no_grad():
        assert torch.equal(fresh(x), source(x))


def test_pretrained_torch_container_with_extra_and_mismatched_keys(tmp_path: Path) -> None:
    source = _trained_stats(_tiny())
    state = {f"backbone.{k}": v for k, v in source.state_dict().items()}
    state["backbone.final_layer.weight"] = torch.zeros(17, 18, 1, 1)
    state["backbone.bn1.weight"] = torch.ones(3)
    del state["backbone.bn2.bias"]
    path = tmp_path / "checkpoint.pth"
    torch.save({"epoch": 3, "state_dict": state}, path)

    report = load_pretrained(_tiny(), path)
    assert report.skipped == ["bn1.weight"]
    assert report.missing == ["bn2.bias"]
    assert report.unexpected == ["final_layer.weight"]
    assert "conv1.weight" in report.loaded


def test_pretrained_rgb_stem_summed_to_grayscale(tmp_path: Path) -> None:
    rgb = _trained_stats(_tiny(in_channels=3), in_channels=3)
    path = tmp_path / "rgb.pth"
    torch.save(rgb.state_dict(), path)

    gray = _tiny(in_channels=1)
    report = load_pretrained(gray, path)
    gray.eval()
    assert "conv1.weight" in report.loaded and not report.skipped
    assert torch.allclose(gray.conv1.weight, rgb.conv1.weight.sum(dim=1, keepdim=True))
    # A grey image gives the RGB network's response.
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.allclose(gray(x), rgb(x.expand(-1, 3, -1, -1)), atol=1e-5)


def test_pretrained_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.safetensors"
    with pytest.raises(FileNotFoundError, match=r"nope\.safetensors"):
        load_pretrained(_tiny(), path)
    with pytest.raises(FileNotFoundError):
        build_backbone(BackboneConfig(name="hrnet_w18_tiny", pretrained=str(path)))


def test_pretrained_wrong_file(tmp_path: Path) -> None:
    path = tmp_path / "other.safetensors"
    save_file({"encoder.weight": torch.zeros(3, 3)}, str(path))
    with pytest.raises(ValueError, match="no tensor"):
        load_pretrained(_tiny(), path)
