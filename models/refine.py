"""The local stage: each landmark refined on a crop around the first stage's estimate, at the image's own
resolution (docs/method.md, "Local stage").

The crop network is a LandmarkNet (a backbone and a head that grows by one 1x1 conv per step, so an old
landmark's output cannot change when a step adds landmarks) over (S, S) crops; crop m, centred near landmark
k_m, is read in heatmap channel k_m only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .codec import HeatmapCodec
from .config import BackboneConfig, CodecConfig, RefineConfig
from .crops import CropSource, crop_affine
from .geometry import Affine
from .network import LandmarkNet
from .precision import Resolved, autocast, prepare_input

#: Confidence factor of a landmark that keeps its first-stage position (its estimate left the image, so no
#: crop was refined): a client thresholding confidences sees it as less sure than a refined one.
UNREFINED_CONFIDENCE = 0.5


def build_crop_network(config: RefineConfig, step_sizes: Sequence[int] = ()) -> LandmarkNet:
    """A fresh crop network: (B, 1, S, S) crops in [0, 1] -> (B, K, S/stride, S/stride) heatmaps."""
    return LandmarkNet(backbone=BackboneConfig(name=config.backbone, last_relu=config.last_relu), step_sizes=step_sizes)


def crop_codec(config: RefineConfig, stride: int) -> HeatmapCodec:
    """The heatmap codec of the crop frame (input = the (S, S) crop, no letterbox)."""
    if config.crop_size % stride:
        raise ValueError(
            f"refine crop_size {config.crop_size} must be a multiple of the crop network's stride {stride}"
        )
    return HeatmapCodec(CodecConfig(input_size=(config.crop_size, config.crop_size), stride=stride, sigma=config.sigma))


@dataclass
class Refined:
    """The local stage's answer for N images of K landmarks: points (N, K, 2) image pixels, confidence (N, K)
    in [0, 1], and local (N, K) bool: True where the point is the crop network's, False where the first
    stage's position was kept (its estimate lay outside the image, or was NaN)."""

    points: np.ndarray
    confidence: np.ndarray
    local: np.ndarray


class Refiner:
    """A frozen crop network applied to first-stage estimates (prediction and evaluation)."""

    def __init__(
        self,
        network: LandmarkNet,
        config: RefineConfig,
        precision: Resolved,
        batch_crops: int = 64,
        passes: int | None = None,
        prior: float | None = None,
    ):
        self.network = network
        self.config = config
        self.passes = passes or config.passes
        self.precision = precision
        self.codec = crop_codec(config, network.stride)
        self.batch_crops = batch_crops
        self.device = next(network.parameters()).device
        self.prior = peak_prior(self.codec, config.prior if prior is None else prior, self.device)

    @torch.inference_mode()
    def refine(
        self,
        images: Sequence[np.ndarray],
        points: np.ndarray,
        confidence: np.ndarray,
        spacing_mm: np.ndarray | None = None,
    ) -> Refined:
        """Refine the (N, K, 2) first-stage points (image pixels) of N (H, W) images; spacing (N, 2) mm/px,
        NaN or None where unknown. `confidence` (N, K) is the first stage's. Each pass after the first crops
        around the last pass's points; a point whose crop centre left the image keeps its last position."""
        sources = [
            CropSource.from_image(im, self.config, None if spacing_mm is None else spacing_mm[i], self.device)
            for i, im in enumerate(images)
        ]
        result = self._pass(sources, points, confidence, spacing_mm)
        for _ in range(self.passes - 1):
            again = self._pass(sources, result.points, confidence, spacing_mm)
            result = Refined(
                np.where(again.local[..., None], again.points, result.points),
                np.where(again.local, again.confidence, result.confidence),
                result.local | again.local,
            )
        return result

    def _pass(
        self, sources: Sequence[CropSource], points: np.ndarray, confidence: np.ndarray, spacing_mm: np.ndarray | None
    ) -> Refined:
        n, k = points.shape[:2]
        out, conf = points.astype(np.float64).copy(), confidence.astype(np.float64).copy()
        local = np.zeros((n, k), dtype=bool)
        jobs: list[tuple[int, int, Affine, torch.Tensor]] = []
        for i, source in enumerate(sources):
            sp = None if spacing_mm is None else spacing_mm[i]
            ok = np.flatnonzero(source.inside(points[i]))
            affines = [crop_affine(self.config, points[i, j], sp) for j in ok]
            crops = source.crops(affines, self.config.crop_size)
            jobs += [(i, int(j), a, crops[m]) for m, (j, a) in enumerate(zip(ok, affines, strict=True))]
        conf[~_mask(jobs, n, k)] *= UNREFINED_CONFIDENCE
        for start in range(0, len(jobs), self.batch_crops):
            chunk = jobs[start : start + self.batch_crops]
            pts, peak = self.decode_crops(torch.stack([c for *_, c in chunk]), [j for _, j, _, _ in chunk])
            for (i, j, affine, _), p, c in zip(chunk, pts, peak, strict=True):
                out[i, j] = affine.inverse().apply(p)
                conf[i, j] = c
                local[i, j] = True
        return Refined(out, conf, local)

    def decode_crops(self, crops: torch.Tensor, channels: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(M, 1, S, S) crops and the landmark channel of each -> ((M, 2) crop pixels, (M,) peak values)."""
        x = prepare_input(crops.to(self.device), self.precision)
        with autocast(self.device, self.precision):
            heatmaps = self.network(x).float()
        index = torch.as_tensor(list(channels), device=heatmaps.device)
        own = heatmaps[torch.arange(len(index), device=heatmaps.device), index][:, None]  # (M, 1, h, w)
        coords, peak = self.codec.decode(own, prior=self.prior)
        pts = self.codec.heatmap_to_input.apply(coords[:, 0].cpu().numpy().astype(np.float64))
        return pts, peak[:, 0].cpu().numpy()


def peak_prior(codec: HeatmapCodec, sigma: float, device: torch.device) -> torch.Tensor | None:
    """(h, w) Gaussian weights of the crop heatmap's pixels by their distance from the crop's centre, sigma in
    crop (input) pixels; None for sigma 0."""
    if not sigma:
        return None
    w, h = codec.heatmap_size
    size = codec.input_size[0]
    centres = codec.heatmap_to_input.apply(np.stack(np.meshgrid(np.arange(w), np.arange(h)), -1).astype(float))
    d2 = ((centres - (size - 1) / 2) ** 2).sum(-1)
    return torch.as_tensor(np.exp(-d2 / (2 * sigma**2)), dtype=torch.float32, device=device)


def _mask(jobs: Sequence[tuple[int, int, Affine, torch.Tensor]], n: int, k: int) -> np.ndarray:
    mask = np.zeros((n, k), dtype=bool)
    for i, j, _, _ in jobs:
        mask[i, j] = True
    return mask
