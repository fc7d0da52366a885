"""The landmark network: a backbone at stride 4 and a head that grows by one 1x1 conv per incremental step."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import nn

from .backbones import build_backbone
from .backbones.hrnet import fold_batch_norms
from .backbones.registry import BackboneModule
from .config import BackboneConfig

#: Grey-level statistics of ImageNet (mean and std of the RGB means), so ImageNet-pretrained stems see
#: inputs on the scale they were trained on.
INPUT_MEAN = 0.449
INPUT_STD = 0.226


class LandmarkHead(nn.Module):
    """One 1x1 conv per step, outputs concatenated in step order, optionally after a shared hidden layer.

    Separate convs (rather than one conv widened in place) keep every old landmark's output computed by the
    very same weights after growth, so growth cannot perturb them, not even by rounding. With `hidden_channels`
    the convs read a 3x3 conv-BN-ReLU of the features (shared by every step, trained like the backbone), so the
    heatmaps are not confined to the span of the backbone's channels.
    """

    def __init__(self, *, in_channels: int, step_sizes: Sequence[int] = (), hidden_channels: int = 0) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.hidden: nn.Module = nn.Identity()
        if hidden_channels:
            self.hidden = nn.Sequential(
                nn.Conv2d(in_channels, hidden_channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(hidden_channels),
                nn.ReLU(inplace=True),
            )
        self.conv_channels = hidden_channels or in_channels
        self.convs = nn.ModuleList()
        for n in step_sizes:
            self.grow(n)

    @property
    def step_sizes(self) -> list[int]:
        return [int(cast(nn.Conv2d, c).out_channels) for c in self.convs]

    @property
    def num_landmarks(self) -> int:
        return sum(self.step_sizes)

    def grow(self, num_new: int) -> None:
        """Append a conv for `num_new` landmarks (initialised as mmpose does: N(0, 0.001), zero bias)."""
        if num_new < 1:
            raise ValueError(f"a step must add at least one landmark, got {num_new}")
        conv = nn.Conv2d(self.conv_channels, num_new, kernel_size=1)
        nn.init.normal_(conv.weight, std=0.001)
        assert conv.bias is not None  # a Conv2d made with bias=True, the default
        nn.init.zeros_(conv.bias)
        if len(self.convs):
            ref = cast(nn.Conv2d, self.convs[0]).weight
            conv = conv.to(device=ref.device, dtype=ref.dtype)
        self.convs.append(conv)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) features -> (B, K, h, w) heatmaps, K = num_landmarks."""
        if not len(self.convs):
            raise RuntimeError("the head has no landmarks yet: grow() it first")
        hidden = self.hidden(features)
        return torch.cat([conv(hidden) for conv in self.convs], dim=1)


class LandmarkNet(nn.Module):
    """Image (B, 1, H, W) in [0, 1] -> heatmaps (B, K, H/4, W/4); also exposes the stride-4 features F."""

    def __init__(self, *, backbone: BackboneConfig, step_sizes: Sequence[int] = ()) -> None:
        super().__init__()
        self.backbone_config = backbone
        self.backbone: BackboneModule = build_backbone(backbone)
        self.head = LandmarkHead(
            in_channels=self.backbone.out_channels, step_sizes=step_sizes, hidden_channels=backbone.head_channels
        )

    @property
    def stride(self) -> int:
        return int(self.backbone.stride)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) in [0, 1] -> F, (B, C, H/4, W/4): the highest-resolution branch KA-Net reads."""
        return self.backbone((x - INPUT_MEAN) / INPUT_STD)

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(heatmaps (B, K, h, w), features (B, C, h, w))."""
        f = self.features(x)
        return self.head(f), f

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def frozen(self) -> LandmarkNet:
        """This network, in place, for a model that no longer trains (prediction, a teacher): eval mode, no
        gradients, and the batch norms folded into their convolutions (the same outputs up to float rounding,
        without a pass over every feature map per batch norm)."""
        self.eval().requires_grad_(False)
        fold_batch_norms(self)
        return self
