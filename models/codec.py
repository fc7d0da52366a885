"""Heatmap codec: owns every mapping between image pixels, network input and heatmaps (as mmpose's codecs do).

Frames (all pixel-centre convention, see models.geometry):
  image   - the original image, (W_img, H_img) pixels;
  input   - the network input, CodecConfig.input_size = (W_in, H_in) pixels: the image resized keeping its
            aspect ratio and centred with zero padding (letterbox);
  heatmap - the network output, (W_in / stride, H_in / stride) pixels; heatmap pixel u covers input pixels
            [stride*u - 0.5, stride*(u + 1) - 0.5], so its centre is at input x = stride*u + (stride - 1)/2.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .config import CodecConfig
from .geometry import Affine


def image_to_unit_float(image: np.ndarray) -> np.ndarray:
    """(H, W) array -> float32 in [0, 1]: uint8 / 255, uint16 / 65535, floats clipped."""
    # One pass with the float32 result as the only temporary (astype + divide made two full-size arrays).
    if image.dtype == np.uint8:
        return np.multiply(image, np.float32(1.0 / 255.0), dtype=np.float32)
    if image.dtype == np.uint16:
        return np.multiply(image, np.float32(1.0 / 65535.0), dtype=np.float32)
    if np.issubdtype(image.dtype, np.floating):
        return np.clip(np.nan_to_num(image.astype(np.float32)), 0.0, 1.0)
    raise TypeError(f"unsupported image dtype {image.dtype}: use uint8, uint16 or float in [0, 1]")


class HeatmapCodec:
    """Encodes landmarks as Gaussian heatmaps and decodes heatmaps to sub-pixel landmark positions."""

    def __init__(self, config: CodecConfig) -> None:
        w, h = config.input_size
        if not isinstance(config.stride, int) or config.stride < 1:
            raise ValueError(f"stride must be a positive integer, got {config.stride!r}")
        if w < config.stride or h < config.stride or w % config.stride or h % config.stride:
            raise ValueError(f"input_size {config.input_size} must be positive multiples of stride {config.stride}")
        if not math.isfinite(config.sigma) or config.sigma <= 0:
            raise ValueError(f"sigma must be positive and finite, got {config.sigma}")
        self.config = config
        self.input_size: tuple[int, int] = (w, h)
        self.heatmap_size: tuple[int, int] = (w // config.stride, h // config.stride)
        s = config.stride
        self.input_to_heatmap = Affine.scale_translate(1 / s, 1 / s, (0.5 - 0.5 * s) / s, (0.5 - 0.5 * s) / s)
        self.heatmap_to_input = self.input_to_heatmap.inverse()

    # ---- geometry -------------------------------------------------------------------------------------

    def letterbox(self, image_wh: tuple[int, int]) -> Affine:
        """Image pixels -> input pixels: uniform scale to fit input_size, centred, padding around."""
        w_in, h_in = self.input_size
        scale = min(w_in / image_wh[0], h_in / image_wh[1])
        pad_x = (w_in - scale * image_wh[0]) / 2
        pad_y = (h_in - scale * image_wh[1]) / 2
        return Affine.scale_translate(scale, scale, 0.5 * scale - 0.5 + pad_x, 0.5 * scale - 0.5 + pad_y)

    def to_input(self, image: np.ndarray) -> tuple[torch.Tensor, Affine]:
        """Letterbox one (H, W) image into the network input.

        Returns (tensor (1, H_in, W_in) float32 in [0, 1], zero padding; the image -> input Affine).
        Downsampling is antialiased: the image is first resized to its letterboxed size with an
        antialiased filter, then placed, so no aliasing comes from large reductions (e.g. 2400 -> 320 rows).
        """
        h, w = image.shape
        affine = self.letterbox((w, h))
        scale = affine.matrix[0, 0]
        rw, rh = max(1, round(w * scale)), max(1, round(h * scale))
        x = torch.from_numpy(image_to_unit_float(image))[None, None]
        resized = F.interpolate(x, size=(rh, rw), mode="bilinear", antialias=scale < 1, align_corners=False)
        # The resized image sits exactly where the letterbox puts it, up to the rounding of its size:
        # place it by the rounded size and return the affine that matches what was drawn.
        w_in, h_in = self.input_size
        ox, oy = (w_in - rw) // 2, (h_in - rh) // 2
        canvas = torch.zeros(1, h_in, w_in)
        canvas[0, oy : oy + rh, ox : ox + rw] = resized[0, 0].clamp(0.0, 1.0)  # antialiasing can overshoot
        drawn = Affine.resize((w, h), (rw, rh)).then(Affine.scale_translate(1, 1, ox, oy))
        return canvas, drawn

    # ---- targets --------------------------------------------------------------------------------------

    def encode(self, keypoints_heatmap: torch.Tensor) -> torch.Tensor:
        """Gaussian target heatmaps with unit peak at each (sub-pixel) keypoint.

        Args:
            keypoints_heatmap: (..., K, 2) (x, y) in heatmap pixels; NaN rows give all-zero heatmaps.
        Returns:
            (..., K, h, w) float32.
        """
        w, h = self.heatmap_size
        kp = keypoints_heatmap.to(torch.float32)
        valid = ~torch.isnan(kp).any(-1)
        kp = torch.nan_to_num(kp, nan=-1e4)
        xs = torch.arange(w, dtype=torch.float32, device=kp.device)
        ys = torch.arange(h, dtype=torch.float32, device=kp.device)
        inv = 1.0 / (2 * self.config.sigma**2)
        gx = torch.exp(-((xs - kp[..., 0:1]) ** 2) * inv)  # (..., K, w)
        gy = torch.exp(-((ys - kp[..., 1:2]) ** 2) * inv)  # (..., K, h)
        heat = gy[..., :, None] * gx[..., None, :]
        return heat * valid[..., None, None]

    # ---- decoding -------------------------------------------------------------------------------------

    def decode(
        self, heatmaps: torch.Tensor, *, blur: bool = True, prior: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sub-pixel landmark positions from heatmaps (DARK: Zhang et al., CVPR 2020).

        The argmax is refined by one Newton step on the log-heatmap (exact for a Gaussian peak). Predicted
        heatmaps are first smoothed with a Gaussian of the target sigma so their log is near quadratic; within
        the blur radius of the border the smoothing would drag the peak towards the edge (the padding has no
        true values), so there the unsmoothed heatmap is refined instead.

        The Newton step reads only the 3x3 pixels around the argmax, and their smoothed values only the blur
        radius further, so only that window of each heatmap is gathered and smoothed (with the border replicated,
        as smoothing the whole heatmap would): the same result as blurring the whole (B, K, h, w) maps, at a
        cost that does not grow with the heatmap size.

        Args:
            heatmaps: (B, K, h, w).
            prior: optional (B, K, h, w) or (h, w) weights the argmax is taken of the heatmap times (e.g. a
                Gaussian around an earlier estimate, to prefer the nearer of two peaks); the sub-pixel step and the
                confidence read the heatmap itself, so the prior chooses a peak without moving it.
        Returns:
            coordinates (B, K, 2) float32, (x, y) in heatmap pixels; confidence (B, K): the peak value of
            the raw heatmap clipped to [0, 1] (a unit-peak target means 1 is full confidence).
        """
        b, k, h, w = heatmaps.shape
        hm = heatmaps.detach().to(torch.float32)
        chosen = hm if prior is None else hm.clamp_min(0.0) * prior.to(hm)
        flat = chosen.reshape(b, k, -1).argmax(dim=-1)
        conf = hm.reshape(b, k, -1).gather(-1, flat[..., None])[..., 0]
        iy, ix = flat // w, flat % w
        radius = self._blur_radius() if blur else 0
        window = _window(hm, ix, iy, radius + 1)  # (B, K, 2 * radius + 3, 2 * radius + 3) around each argmax
        offset = _newton_offset(torch.log(window[..., radius : radius + 3, radius : radius + 3].clamp_min(1e-10)))
        if blur:
            inner = (ix >= radius) & (ix < w - radius) & (iy >= radius) & (iy < h - radius)
            smooth = _newton_offset(torch.log(self._blur_window(window).clamp_min(1e-10)))
            offset = torch.where(inner[..., None], smooth, offset)
        coords = torch.stack([ix, iy], dim=-1).to(torch.float32) + offset
        return coords, conf.clamp(0.0, 1.0)

    def _blur_radius(self) -> int:
        return max(1, math.ceil(2 * self.config.sigma))

    def _blur_window(self, window: torch.Tensor) -> torch.Tensor:
        """The Gaussian blur (of the target sigma, truncated at the blur radius r) at a window's central 3x3
        pixels: (..., 2r + 3, 2r + 3) -> (..., 3, 3); separable, along x and then along y."""
        sigma = self.config.sigma
        radius = self._blur_radius()
        t = torch.arange(-radius, radius + 1, dtype=torch.float32, device=window.device)
        g = torch.exp(-(t**2) / (2 * sigma**2))
        g = g / g.sum()
        x = window.unfold(-1, 2 * radius + 1, 1) @ g  # (..., 2r + 3, 3): along x
        return x.unfold(-2, 2 * radius + 1, 1) @ g  # (..., 3, 3): then along y

    def decode_to_image(
        self, heatmaps: torch.Tensor, image_to_input: Sequence[Affine]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Decode (B, K, h, w) heatmaps to image pixels of each sample: ((B, K, 2) float64, (B, K))."""
        coords, conf = self.decode(heatmaps)
        pts = coords.cpu().numpy().astype(np.float64)
        out = np.empty_like(pts)
        for i, affine in enumerate(image_to_input):
            out[i] = self.heatmap_to_image(affine).apply(pts[i])
        return out, conf.cpu().numpy()

    def image_to_heatmap(self, image_to_input: Affine) -> Affine:
        return image_to_input.then(self.input_to_heatmap)

    def heatmap_to_image(self, image_to_input: Affine) -> Affine:
        return self.image_to_heatmap(image_to_input).inverse()


def _window(hm: torch.Tensor, ix: torch.Tensor, iy: torch.Tensor, reach: int) -> torch.Tensor:
    """The (2 * reach + 1)-pixel square of each (B, K, h, w) heatmap centred on (ix, iy), each (B, K), with the
    border pixels replicated outside the heatmap: (B, K, 2 * reach + 1, 2 * reach + 1)."""
    b, k, h, w = hm.shape
    t = torch.arange(-reach, reach + 1, device=hm.device)
    rows = (iy[..., None] + t).clamp(0, h - 1)  # (B, K, n)
    cols = (ix[..., None] + t).clamp(0, w - 1)
    index = (rows[..., :, None] * w + cols[..., None, :]).reshape(b, k, -1)
    n = 2 * reach + 1
    return hm.reshape(b, k, h * w).gather(-1, index).reshape(b, k, n, n)


def _newton_offset(logh: torch.Tensor) -> torch.Tensor:
    """One Newton step from the centre of (B, K, 3, 3) log-heatmap windows centred on the integer peaks.

    Returns (B, K, 2) offsets clipped to one pixel; zero where the Hessian is not negative definite.
    """

    def at(dy: int, dx: int) -> torch.Tensor:
        return logh[..., 1 + dy, 1 + dx]

    c = at(0, 0)
    gx = 0.5 * (at(0, 1) - at(0, -1))
    gy = 0.5 * (at(1, 0) - at(-1, 0))
    hxx = at(0, 1) - 2 * c + at(0, -1)
    hyy = at(1, 0) - 2 * c + at(-1, 0)
    hxy = 0.25 * (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1))
    det = hxx * hyy - hxy**2
    ok = (det > 1e-12) & (hxx < 0)
    safe = torch.where(ok, det, torch.ones_like(det))
    ox = torch.where(ok, -(hyy * gx - hxy * gy) / safe, torch.zeros_like(det)).clamp(-1.0, 1.0)
    oy = torch.where(ok, -(hxx * gy - hxy * gx) / safe, torch.zeros_like(det)).clamp(-1.0, 1.0)
    return torch.stack([ox, oy], dim=-1)
