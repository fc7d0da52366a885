"""HRNet backbone (Sun et al., CVPR 2019) as used for top-down heatmap pose estimation.

The module tree mirrors the official `pose_hrnet.py` (deep-high-resolution-net.pytorch) name for name, so
official pose checkpoints, the ImageNet classification checkpoints of HRNet-Image-Classification and
timm's `hrnet_w*` weights load by key with `models.backbones.pretrained.load_pretrained`. Where the
official code stores `None` (a branch without transition, a fuse entry onto itself) this one stores an
`nn.Identity`, which has no parameters and so leaves the state-dict keys unchanged.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.backbones.registry import BackboneModule, register_backbone
from models.config import BackboneConfig

#: The output is at stride 4, so H and W must divide by 4. Lower branches may round their sizes up (stride-2
#: convs give ceil(n / 2)); the fuse layers upsample to the exact size of the branch they add into.
SIZE_MULTIPLE = 4
STEM_CHANNELS = 64


def _conv_bn(in_ch: int, out_ch: int, kernel: int, stride: int = 1, relu: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_ch),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual: (B, inplanes, H, W) -> (B, planes, H/stride, W/stride)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + residual)


class Bottleneck(nn.Module):
    """1x1-3x3-1x1 residual block: (B, inplanes, H, W) -> (B, 4 * planes, H/stride, W/stride)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + residual)


def _make_layer(
    block: type[BasicBlock] | type[Bottleneck], inplanes: int, planes: int, num_blocks: int
) -> nn.Sequential:
    """`num_blocks` blocks at stride 1; the first gets a 1x1 projection when the width changes."""
    out = planes * block.expansion
    downsample = _conv_bn(inplanes, out, 1) if inplanes != out else None
    layers = [block(inplanes, planes, downsample=downsample)]
    layers += [block(out, planes) for _ in range(1, num_blocks)]
    return nn.Sequential(*layers)


class HighResolutionModule(nn.Module):
    """Parallel BasicBlock branches followed by an exchange across resolutions.

    Input: a list of n tensors, branch i of shape (B, widths[i], H / 2^i, W / 2^i). Output: the same list
    after fusion, or only its first (highest-resolution) entry when `multi_scale_output` is False.
    """

    def __init__(
        self,
        widths: tuple[int, ...],
        num_blocks: tuple[int, ...],
        multi_scale_output: bool = True,
        output_relu: bool = True,
    ) -> None:
        super().__init__()
        n = len(widths)
        self.branches = nn.ModuleList(_make_layer(BasicBlock, widths[i], widths[i], num_blocks[i]) for i in range(n))
        # Official code has no fuse layers at all for a single branch; keep the state-dict keys identical.
        self.fuse_layers: nn.ModuleList | None = None
        if n > 1:
            self.fuse_layers = nn.ModuleList(
                nn.ModuleList(self._fuse(widths, i, j) for j in range(n)) for i in range(n if multi_scale_output else 1)
            )
        # Without the ReLU after the fusion (output_relu=False) the outputs are the fused sums themselves.
        self.relu: nn.Module = nn.ReLU(inplace=True) if output_relu else nn.Identity()

    @staticmethod
    def _fuse(widths: tuple[int, ...], i: int, j: int) -> nn.Module:
        """Map branch j onto branch i's resolution and width."""
        if j > i:
            return nn.Sequential(
                nn.Conv2d(widths[j], widths[i], 1, bias=False),
                nn.BatchNorm2d(widths[i]),
            )  # then nearest upsampling to branch i's size, in forward (the official nn.Upsample has no weights)
        if j == i:
            return nn.Identity()
        # i - j stride-2 convs; only the last changes the width and, because a ReLU follows the sum, has none.
        steps = [_conv_bn(widths[j], widths[j], 3, stride=2, relu=True) for _ in range(i - j - 1)]
        steps.append(_conv_bn(widths[j], widths[i], 3, stride=2))
        return nn.Sequential(*steps)

    def forward(self, xs: list[Tensor]) -> list[Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs, strict=True)]
        if self.fuse_layers is None:
            return xs
        out: list[Tensor] = []
        for i, fuse_row in enumerate(self.fuse_layers):
            y = xs[i]
            row = cast(nn.ModuleList, fuse_row)
            for j, x in enumerate(xs):
                if j < i:
                    y = y + row[j](x)
                elif j > i:
                    y = y + F.interpolate(row[j](x), size=xs[i].shape[-2:], mode="nearest")
            out.append(self.relu(y))
        return out


@dataclass(frozen=True, kw_only=True)
class HRNetSpec:
    """Architecture of one HRNet: width C and the depth of each stage.

    Attributes:
        width: channels C of the highest-resolution branch; branch i has C * 2^i.
        stage1_blocks: Bottleneck blocks (64 planes, 256 channels out) of stage 1.
        num_modules: HighResolutionModules of stages 2, 3 and 4.
        num_blocks: BasicBlocks per branch in every module of stages 2, 3 and 4 (2, 3 and 4 branches).
    """

    width: int
    stage1_blocks: int = 4
    num_modules: tuple[int, int, int] = (1, 4, 3)
    num_blocks: tuple[tuple[int, ...], ...] = ((4, 4), (4, 4, 4), (4, 4, 4, 4))

    def __post_init__(self) -> None:
        if self.width < 1 or self.stage1_blocks < 1 or min(self.num_modules) < 1:
            raise ValueError(f"HRNetSpec sizes must be positive: {self}")
        if len(self.num_modules) != 3 or [len(b) for b in self.num_blocks] != [2, 3, 4]:
            raise ValueError(f"HRNetSpec needs 3 stages of 2, 3 and 4 branches: {self}")
        if min(min(b) for b in self.num_blocks) < 1:
            raise ValueError(f"HRNetSpec block counts must be positive: {self}")


def _uniform(width: int, stage1: int, modules: int, blocks: int) -> HRNetSpec:
    return HRNetSpec(
        width=width,
        stage1_blocks=stage1,
        num_modules=(modules, modules, modules),
        num_blocks=((blocks,) * 2, (blocks,) * 3, (blocks,) * 4),
    )


#: The registered configurations:
#:  - hrnet_w18/w32/w48: the paper's; stage 1 has 4 bottlenecks, stages 2-4 have 1/4/3 modules of 4 blocks
#:    per branch; width 18/32/48.
#:  - hrnet_w18_small: CPU variant; width 18, 4 stage-1 blocks, 1 module per stage, 4 blocks per branch
#:    (about 0.19 s per training image at 256x320 on 2 CPU cores).
#:  - hrnet_w18_tiny: unit tests and CPU smoke runs; width 18, 1 stage-1 block, 1 module per stage,
#:    1 block per branch.
HRNET_SPECS: dict[str, HRNetSpec] = {
    "hrnet_w18": HRNetSpec(width=18),
    "hrnet_w32": HRNetSpec(width=32),
    "hrnet_w48": HRNetSpec(width=48),
    "hrnet_w18_small": _uniform(18, stage1=4, modules=1, blocks=4),
    "hrnet_w18_tiny": _uniform(18, stage1=1, modules=1, blocks=1),
}


class HRNet(BackboneModule):
    """HRNet backbone: (B, in_channels, H, W) -> (B, C, H/4, W/4), the fused highest-resolution branch.

    H and W must be multiples of 4 (the output stride). With `last_relu=False` the output is the last fusion's
    sum before its ReLU: real-valued features that stay informative, and pass a gradient, at every position.
    """

    stride: int = 4

    def __init__(self, *, spec: HRNetSpec, in_channels: int = 1, last_relu: bool = True) -> None:
        super().__init__()
        self.spec = spec
        self.last_relu = last_relu
        self.in_channels = in_channels
        self.out_channels: int = spec.width
        self.conv1 = nn.Conv2d(in_channels, STEM_CHANNELS, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(STEM_CHANNELS)
        self.conv2 = nn.Conv2d(STEM_CHANNELS, STEM_CHANNELS, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(STEM_CHANNELS)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = _make_layer(Bottleneck, STEM_CHANNELS, STEM_CHANNELS, spec.stage1_blocks)

        pre: tuple[int, ...] = (STEM_CHANNELS * Bottleneck.expansion,)
        for s, (modules, blocks) in enumerate(zip(spec.num_modules, spec.num_blocks, strict=True), start=2):
            widths = tuple(spec.width * 2**i for i in range(len(blocks)))
            self.add_module(f"transition{s - 1}", self._transition(pre, widths))
            last = s == 4
            stage = nn.Sequential(
                *(
                    HighResolutionModule(
                        widths,
                        blocks,
                        multi_scale_output=not (last and m == modules - 1),
                        output_relu=last_relu or not (last and m == modules - 1),
                    )
                    for m in range(modules)
                )
            )
            self.add_module(f"stage{s}", stage)
            pre = widths
        self._init_weights()

    def _init_weights(self) -> None:
        # He init (as timm's HRNet) so that training from scratch starts with unit-scale activations.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @staticmethod
    def _transition(pre: tuple[int, ...], cur: tuple[int, ...]) -> nn.ModuleList:
        """Adapt the widths of existing branches and derive each new branch from the lowest-resolution one."""
        layers: list[nn.Module] = []
        for i, width in enumerate(cur):
            if i < len(pre):
                same = width == pre[i]
                layers.append(nn.Identity() if same else _conv_bn(pre[i], width, 3, relu=True))
            else:
                # Official layout: a Sequential of (i + 1 - len(pre)) stride-2 conv-BN-ReLU steps.
                steps = [
                    _conv_bn(pre[-1], width if k == i - len(pre) else pre[-1], 3, stride=2, relu=True)
                    for k in range(i + 1 - len(pre))
                ]
                layers.append(nn.Sequential(*steps))
        return nn.ModuleList(layers)

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_channels, H, W) with H, W multiples of 4 -> (B, out_channels, H/4, W/4)."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected input of shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if h % SIZE_MULTIPLE or w % SIZE_MULTIPLE:
            raise ValueError(f"HRNet input height and width must be multiples of {SIZE_MULTIPLE}, got {h}x{w} (HxW)")
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        xs = [self.layer1(x)]
        for s in (2, 3, 4):
            transition: nn.ModuleList = getattr(self, f"transition{s - 1}")
            stage: nn.Sequential = getattr(self, f"stage{s}")
            # New branches grow out of the lowest-resolution branch of the previous stage.
            xs = [t(xs[i] if i < len(xs) else xs[-1]) for i, t in enumerate(transition)]
            xs = stage(xs)
        return xs[0]


def _register(name: str, spec: HRNetSpec) -> None:
    @register_backbone(name)
    def build(config: BackboneConfig) -> HRNet:
        return HRNet(spec=spec, in_channels=config.in_channels, last_relu=config.last_relu)


for _name, _spec in HRNET_SPECS.items():
    _register(_name, _spec)


__all__ = ["HRNET_SPECS", "BasicBlock", "Bottleneck", "HRNet", "HRNetSpec", "HighResolutionModule"]


def fold_batch_norms(module: nn.Module) -> int:
    """Fold, in place, every BatchNorm2d that directly follows a Conv2d into that conv's weights and bias, and
    replace it by Identity: in a Sequential (conv, bn, ...), and as `bnK` after `convK` in the blocks and the stem
    (whose forward applies each bnK straight to convK's output). The module must be in eval mode and stay so: the
    folded conv computes what conv + bn computed with the running statistics. Returns how many were folded."""
    if module.training:
        raise ValueError("batch norms fold only into a model in eval mode")
    folded = 0
    for parent in module.modules():
        pairs: list[tuple[str, str]] = []
        if isinstance(parent, nn.Sequential):
            names = list(parent._modules)
            pairs = list(itertools.pairwise(names))
        else:
            pairs = [(f"conv{k}", f"bn{k}") for k in (1, 2, 3)]
        for conv_name, bn_name in pairs:
            conv, bn = getattr(parent, conv_name, None), getattr(parent, bn_name, None)
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                _fold(conv, bn)
                setattr(parent, bn_name, nn.Identity())
                folded += 1
    return folded


@torch.no_grad()
def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """conv <- bn(conv(.)) with bn's running statistics: w' = w * g / sqrt(var + eps), b' = (b - mean) * that + beta."""
    assert bn.running_var is not None and bn.running_mean is not None
    gamma = bn.weight if bn.weight is not None else torch.ones_like(bn.running_var)
    beta = bn.bias if bn.bias is not None else torch.zeros_like(bn.running_var)
    scale = gamma / torch.sqrt(bn.running_var + bn.eps)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
    conv.bias = nn.Parameter((bias - bn.running_mean) * scale + beta, requires_grad=False)
