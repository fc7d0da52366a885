"""Inference: any-size images (and their pixel spacing) in, every landmark of the model out."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import cast

import numpy as np
import torch

from .checkpoint import Checkpoint
from .codec import HeatmapCodec
from .config import Precision
from .precision import autocast, prepare_input, resolve_precision
from .refine import Refined, Refiner
from .trainer import resolve_device


@dataclass
class LandmarkPrediction:
    """One landmark on one image: (x, y) in pixels of the original image (pixel-centre convention);
    (x_mm, y_mm) the same point in millimetres from the centre of pixel (0, 0), None where the spacing is
    unknown; confidence in [0, 1] (the heatmap peak); stage: "local" where the crop network refined the point,
    "global" where it is the first stage's (a one-stage model, or a point whose estimate left the image)."""

    code: str
    name: str
    step: int
    x: float
    y: float
    x_mm: float | None
    y_mm: float | None
    confidence: float
    stage: str = "global"


@dataclass
class Prediction:
    image_size: tuple[int, int]  # (W, H) pixels
    spacing_mm: tuple[float, float] | None  # (x, y) mm per pixel
    landmarks: list[LandmarkPrediction]

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Reduced:
    """An image array that was decoded reduced (e.g. a JPEG by DCT scaling): its pixel i stands for pixels
    factor*i .. factor*i + factor - 1 of the original, so a point x in the array is factor * (x + 0.5) - 0.5 in
    the original (pixel-centre convention, both axes)."""

    factor: int
    size: tuple[int, int]  # the original's (W, H), pixels

    def to_original(self, points: np.ndarray) -> np.ndarray:
        """(..., 2) array pixels -> (..., 2) original pixels."""
        return self.factor * (points + 0.5) - 0.5


class Predictor:
    """Batched inference with one checkpoint, on the GPU when there is one, in `precision` (models.precision:
    "auto" is bf16 + channels_last where the device has fast bf16; the heatmaps are decoded in float32).

    A two-stage checkpoint refines every point with its local stage (models.refine) unless `local` is False
    (its first stage alone, for side-by-side comparisons)."""

    def __init__(
        self,
        checkpoint: Checkpoint,
        *,
        device: str = "auto",
        batch_size: int = 8,
        precision: Precision = "auto",
        local: bool = True,
    ) -> None:
        self.checkpoint = checkpoint
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.model = checkpoint.build_frozen(self.device, self.precision)
        self.codec = HeatmapCodec(checkpoint.codec)
        self.batch_size = batch_size
        self.refiner: Refiner | None = None
        if local and checkpoint.refine is not None:
            crop_net = checkpoint.build_frozen_crop_network(self.device, self.precision)
            self.refiner = Refiner(crop_net, checkpoint.refine, self.precision)

    @property
    def codes(self) -> list[str]:
        return self.checkpoint.codes

    @property
    def stages(self) -> int:
        """2 where points are refined by the local stage, else 1."""
        return 1 if self.refiner is None else 2

    def predict_arrays(
        self,
        images: Sequence[np.ndarray],
        timings: dict[str, float] | None = None,
        spacing_mm: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Landmarks of N images: ((N, K, 2) float64 image pixels, (N, K) confidence), K in head order; see
        predict_stages."""
        staged = self.predict_stages(images, timings, spacing_mm)
        return staged.points, staged.confidence

    @torch.inference_mode()
    def predict_stages(
        self,
        images: Sequence[np.ndarray],
        timings: dict[str, float] | None = None,
        spacing_mm: np.ndarray | None = None,
    ) -> Refined:
        """Landmarks of N (H, W) images in image pixels, with which stage answered each (models.refine.Refined).

        spacing_mm: (N, 2) mm/px of the arrays (NaN or None where unknown): the local stage crops at a physical
        resolution where it is known. `timings`, if given, receives the milliseconds spent in "preprocess"
        (letterbox), "forward" (the first stage's network, synchronised on a GPU), "decode" (heatmaps to points)
        and, for a two-stage model, "local" (the local stage: crops, network and decoding), summed over the
        batches."""
        spent = {"preprocess": 0.0, "forward": 0.0, "decode": 0.0}
        points, confidence = [], []
        for i in range(0, len(images), self.batch_size):
            t0 = time.perf_counter()
            prepared = [self.codec.to_input(im) for im in images[i : i + self.batch_size]]
            x = prepare_input(torch.stack([t for t, _ in prepared]).to(self.device), self.precision)
            t1 = time.perf_counter()
            with autocast(self.device, self.precision):
                heatmaps = self.model(x).float()
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            t2 = time.perf_counter()
            pts, conf = self.codec.decode_to_image(heatmaps, [a for _, a in prepared])
            t3 = time.perf_counter()
            points.append(pts)
            confidence.append(conf)
            for key, dt in (("preprocess", t1 - t0), ("forward", t2 - t1), ("decode", t3 - t2)):
                spent[key] += 1e3 * dt
        k = len(self.codes)
        if not points:
            return Refined(np.zeros((0, k, 2)), np.zeros((0, k)), np.zeros((0, k), dtype=bool))
        staged = Refined(np.concatenate(points), np.concatenate(confidence), np.zeros((len(images), k), dtype=bool))
        if self.refiner is not None:
            t0 = time.perf_counter()
            staged = self.refiner.refine(images, staged.points, staged.confidence, spacing_mm)
            spent["local"] = 1e3 * (time.perf_counter() - t0)
        if timings is not None:
            timings.update(spent)
        return staged

    def predict(
        self,
        images: Sequence[np.ndarray],
        spacing_mm: Sequence[tuple[float, float] | float | None] | None = None,
        timings: dict[str, float] | None = None,
        reduced: Sequence[Reduced | None] | None = None,
    ) -> list[Prediction]:
        """Predict every landmark on each (H, W) image; spacing per image in mm/px (x, y) of the original, or
        None. `reduced`, per image: how the array relates to the original where it was decoded reduced; points
        and the image size are then answered in the original's pixels."""
        spacing = list(spacing_mm) if spacing_mm is not None else [None] * len(images)
        frames = list(reduced) if reduced is not None else [None] * len(images)
        if not len(spacing) == len(frames) == len(images):
            raise ValueError(f"got {len(images)} images but {len(spacing)} spacings and {len(frames)} reductions")
        pairs = [_spacing_pair(sp) for sp in spacing]
        # The local stage crops the arrays: their spacing is the original's times any reduction factor.
        array_spacing = np.array(
            [
                (np.nan, np.nan) if s is None else np.multiply(s, f.factor if f else 1)
                for s, f in zip(pairs, frames, strict=True)
            ],
            dtype=np.float64,
        ).reshape(len(images), 2)
        staged = self.predict_stages(images, timings, array_spacing)
        out = []
        for image, s, frame, pts, conf, local in zip(
            images, pairs, frames, staged.points, staged.confidence, staged.local, strict=True
        ):
            size = (image.shape[1], image.shape[0])
            if frame is not None:
                pts, size = frame.to_original(pts), frame.size
            landmarks = [
                LandmarkPrediction(
                    code=lm.code,
                    name=lm.name,
                    step=lm.step,
                    x=float(p[0]),
                    y=float(p[1]),
                    x_mm=None if s is None else float(p[0] * s[0]),
                    y_mm=None if s is None else float(p[1] * s[1]),
                    confidence=float(c),
                    stage="local" if is_local else "global",
                )
                for lm, p, c, is_local in zip(self.checkpoint.landmarks, pts, conf, local, strict=True)
            ]
            out.append(Prediction(size, s, landmarks))
        return out


def _spacing_pair(spacing: tuple[float, float] | float | None) -> tuple[float, float] | None:
    if spacing is None:
        return None
    if np.ndim(spacing) == 0:  # one number, a numpy scalar too
        sx = sy = float(cast(float, spacing))
    else:
        sx, sy = (float(v) for v in cast(tuple[float, float], spacing))
    if not (np.isfinite(sx) and np.isfinite(sy)) or sx <= 0 or sy <= 0:
        raise ValueError(f"pixel spacing must be positive and finite, got {spacing}")
    return sx, sy
