"""Training batches: images letterboxed once, then augmented per batch with their landmarks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .augment import jitter_intensity, random_affines, warp
from .codec import HeatmapCodec
from .config import AugmentConfig
from .geometry import Affine
from .step_data import StepData


@dataclass
class Batch:
    """x: (B, 1, H_in, W_in) in [0, 1]; targets: (B, K, h, w) Gaussian heatmaps; mask: (B, K) bool, True where
    the landmark is labelled and lies inside the (augmented) input; keypoints: (B, K, 2) heatmap pixels."""

    x: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor
    keypoints: torch.Tensor


class PreparedData:
    """A StepData letterboxed into network inputs once; labels in input pixels, in model code order."""

    def __init__(self, data: StepData, codes: list[str], codec: HeatmapCodec) -> None:
        self.codec = codec
        self.codes = codes
        selected = data.select(codes)
        inputs = [codec.to_input(im) for im in data.images]
        self.inputs = torch.stack([t for t, _ in inputs])  # (N, 1, H_in, W_in)
        self.affines: list[Affine] = [a for _, a in inputs]
        self.keypoints = np.stack(
            [a.apply(kp) for a, kp in zip(self.affines, selected.keypoints, strict=True)]
        )  # (N, K, 2) input pixels, NaN where unlabelled

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def batch(
        self,
        index: np.ndarray,
        augment: AugmentConfig | None,
        rng: np.random.Generator,
        device: torch.device,
    ) -> Batch:
        x = self.inputs[index].to(device)
        kp = self.keypoints[index].copy()
        if augment is not None and augment.enabled:
            affines = random_affines(augment, len(index), self.codec.input_size, rng)
            x = jitter_intensity(warp(x, affines), augment, rng)
            kp = np.stack([a.apply(p) for a, p in zip(affines, kp, strict=True)])
        return labelled_batch(x, kp, self.codec, device)


def labelled_batch(x: torch.Tensor, keypoints: np.ndarray, codec: HeatmapCodec, device: torch.device) -> Batch:
    """The Batch of inputs `x` whose landmarks are `keypoints`, (B, K, 2) input pixels with NaN where unlabelled:
    Gaussian targets and a mask of the landmarks labelled and inside the input (`codec`'s input size)."""
    w, h = codec.input_size
    kp = keypoints
    inside = (kp[..., 0] >= -0.5) & (kp[..., 0] <= w - 0.5) & (kp[..., 1] >= -0.5) & (kp[..., 1] <= h - 0.5)
    kp_hm = torch.as_tensor(codec.input_to_heatmap.apply(kp), dtype=torch.float32, device=device)
    mask = torch.as_tensor(inside, device=device)  # NaN compares False: unlabelled stays masked out
    kp_hm = torch.where(mask[..., None], kp_hm, torch.full_like(kp_hm, float("nan")))
    return Batch(x=x, targets=codec.encode(kp_hm), mask=mask, keypoints=kp_hm)


class BatchSampler:
    """Endless shuffled passes over N items in fixed-size batches; its state can be saved and restored."""

    def __init__(self, n: int, batch_size: int, rng: np.random.Generator) -> None:
        if n < 1:
            raise ValueError("no training images")
        self.n, self.batch_size, self.rng = n, min(batch_size, n), rng
        self.order = rng.permutation(n)
        self.pos = 0

    def next(self) -> np.ndarray:
        if self.pos + self.batch_size > self.n:
            self.order, self.pos = self.rng.permutation(self.n), 0
        out = self.order[self.pos : self.pos + self.batch_size]
        self.pos += self.batch_size
        return out

    def state(self) -> dict[str, Any]:
        return {"order": self.order.tolist(), "pos": self.pos, "rng": self.rng.bit_generator.state}

    def restore(self, state: dict[str, Any]) -> None:
        self.order, self.pos = np.asarray(state["order"]), int(state["pos"])
        self.rng.bit_generator.state = state["rng"]
