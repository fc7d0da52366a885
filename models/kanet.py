"""KA-Net: the auxiliary knowledge-association network of KAMP (used in training only, never at inference)."""

from __future__ import annotations

import torch
from torch import nn


class KANet(nn.Module):
    """N independent 3-layer CNNs, one per triplet (old <- new1, new2), run as grouped convolutions.

    For triplet n the input is concat(F * g1_n, F * g2_n): the old model's stride-4 features F masked by the
    heatmaps of the two new landmarks; the output is the heatmap of the associated old landmark.
    """

    def __init__(
        self,
        *,
        feature_channels: int,
        num_triplets: int,
        hidden: int = 64,
        dilations: tuple[int, int, int] = (1, 2, 4),
    ) -> None:
        super().__init__()
        if num_triplets < 1:
            raise ValueError("KA-Net needs at least one triplet")
        n, c = num_triplets, feature_channels
        self.num_triplets = n
        d1, d2, d3 = dilations
        self.layers = nn.Sequential(
            nn.Conv2d(n * 2 * c, n * hidden, 3, padding=d1, dilation=d1, groups=n, bias=False),
            nn.BatchNorm2d(n * hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(n * hidden, n * hidden, 3, padding=d2, dilation=d2, groups=n, bias=False),
            nn.BatchNorm2d(n * hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(n * hidden, n, 3, padding=d3, dilation=d3, groups=n),
        )

    def forward(self, features: torch.Tensor, g1: torch.Tensor, g2: torch.Tensor) -> torch.Tensor:
        """
        Args:
            features: F, (B, C, h, w).
            g1, g2: (B, N, h, w) heatmaps of each triplet's two new landmarks.
        Returns:
            (B, N, h, w): the heatmap of each triplet's old landmark.
        """
        b, c, h, w = features.shape
        f = features[:, None]  # (B, 1, C, h, w)
        x = torch.cat([f * g1[:, :, None], f * g2[:, :, None]], dim=2)  # (B, N, 2C, h, w)
        return self.layers(x.reshape(b, self.num_triplets * 2 * c, h, w))
