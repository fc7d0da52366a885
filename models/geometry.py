"""2-D affine maps between image, network-input and heatmap pixel frames.

Every frame uses the pixel-centre convention: the centre of pixel (column i, row j) is at (i, j), so a
W-pixel-wide frame spans [-0.5, W - 0.5].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Affine:
    """x' = M @ [x, y, 1]; `matrix` is (2, 3) float64."""

    matrix: np.ndarray

    @staticmethod
    def identity() -> Affine:
        return Affine(np.eye(2, 3))

    @staticmethod
    def scale_translate(sx: float, sy: float, tx: float = 0.0, ty: float = 0.0) -> Affine:
        return Affine(np.array([[sx, 0.0, tx], [0.0, sy, ty]]))

    @staticmethod
    def resize(src_wh: tuple[float, float], dst_wh: tuple[float, float]) -> Affine:
        """Map a frame of size src_wh onto one of size dst_wh edge to edge (pixel-centre convention)."""
        sx, sy = dst_wh[0] / src_wh[0], dst_wh[1] / src_wh[1]
        return Affine.scale_translate(sx, sy, 0.5 * sx - 0.5, 0.5 * sy - 0.5)

    @staticmethod
    def rotation_about(center: tuple[float, float], angle_rad: float, scale: float = 1.0) -> Affine:
        c, s = np.cos(angle_rad) * scale, np.sin(angle_rad) * scale
        cx, cy = center
        return Affine(np.array([[c, -s, cx - c * cx + s * cy], [s, c, cy - s * cx - c * cy]]))

    def _h(self) -> np.ndarray:
        return np.vstack([self.matrix, [0.0, 0.0, 1.0]])

    def then(self, other: Affine) -> Affine:
        """The map that applies self first, then other."""
        return Affine((other._h() @ self._h())[:2])

    def inverse(self) -> Affine:
        return Affine(np.linalg.inv(self._h())[:2])

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Map (..., 2) points; NaN stays NaN."""
        p = np.asarray(points, dtype=np.float64)
        return p @ self.matrix[:, :2].T + self.matrix[:, 2]

    @property
    def mean_scale(self) -> float:
        """Geometric-mean linear scale factor of the map."""
        return float(np.sqrt(abs(np.linalg.det(self.matrix[:, :2]))))
