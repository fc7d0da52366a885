"""The unit of data the library trains and evaluates on: images with (partial) landmark labels."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class StepData:
    """Images of one incremental step (or of an evaluation set) with their landmark labels.

    Attributes:
        images: N grayscale images, each an array of shape (H_i, W_i). uint8 is read as value/255,
            uint16 as value/65535, floating point as already in [0, 1]. Sizes may differ.
        keypoints: (N, K, 2) float64, (x, y) in pixels of each image, pixel-centre convention
            (the centre of pixel column i, row j is (i, j)); NaN where a landmark is not labelled.
        codes: the K landmark codes, in the order of keypoints' second axis.
        spacing_mm: (N, 2) float64, (x, y) millimetres per pixel; NaN where unknown.
        ids: N identifiers, used in reports only.
    """

    images: Sequence[np.ndarray]
    keypoints: np.ndarray
    codes: list[str]
    #: (N, 2) or (N,) mm per pixel; an empty default means unknown (NaN) for every image.
    spacing_mm: np.ndarray = field(default_factory=lambda: np.empty((0, 2)))
    ids: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.keypoints = np.asarray(self.keypoints, dtype=np.float64)
        n = len(self.images)
        if self.keypoints.shape != (n, len(self.codes), 2):
            raise ValueError(f"keypoints must have shape (N={n}, K={len(self.codes)}, 2), got {self.keypoints.shape}")
        if len(set(self.codes)) != len(self.codes):
            raise ValueError(f"landmark codes must be unique, got {self.codes}")
        if self.spacing_mm is None or (np.size(self.spacing_mm) == 0 and n > 0):
            self.spacing_mm = np.full((n, 2), np.nan)
        self.spacing_mm = np.asarray(self.spacing_mm, dtype=np.float64)
        if self.spacing_mm.shape == (n,):
            self.spacing_mm = np.repeat(self.spacing_mm[:, None], 2, axis=1)
        if self.spacing_mm.shape != (n, 2):
            raise ValueError(f"spacing_mm must have shape (N,) or (N, 2), got {self.spacing_mm.shape}")
        if not self.ids:
            self.ids = [str(i) for i in range(n)]
        if len(self.ids) != n:
            raise ValueError(f"ids must have {n} entries, got {len(self.ids)}")
        for i, image in enumerate(self.images):
            if image.ndim != 2 or min(image.shape) < 1:
                raise ValueError(f"image {self.ids[i]!r} must be a non-empty 2-D array, got {image.shape}")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def labelled(self) -> np.ndarray:
        """(N, K) bool: True where the landmark is labelled."""
        return ~np.isnan(self.keypoints).any(axis=-1)

    def select(self, codes: Sequence[str]) -> StepData:
        """The same images with only the given landmark columns (codes absent here become NaN)."""
        cols = [self.codes.index(c) if c in self.codes else -1 for c in codes]
        kp = np.full((len(self), len(codes), 2), np.nan)
        for j, c in enumerate(cols):
            if c >= 0:
                kp[:, j] = self.keypoints[:, c]
        return StepData(list(self.images), kp, list(codes), self.spacing_mm.copy(), list(self.ids))

    def subset(self, index: Sequence[int]) -> StepData:
        """The images at the given positions, with all landmark columns."""
        idx = list(index)
        return StepData(
            [self.images[i] for i in idx],
            self.keypoints[idx],
            list(self.codes),
            self.spacing_mm[idx],
            [self.ids[i] for i in idx],
        )

    @staticmethod
    def concat(parts: Sequence[StepData]) -> StepData:
        """Images of several parts, over the union of their codes (first-seen order); missing labels NaN."""
        codes: list[str] = []
        for p in parts:
            codes += [c for c in p.codes if c not in codes]
        sel = [p.select(codes) for p in parts]
        return StepData(
            [im for p in sel for im in p.images],
            np.concatenate([p.keypoints for p in sel]),
            codes,
            np.concatenate([p.spacing_mm for p in sel]),
            [i for p in sel for i in p.ids],
        )
