"""models.codec: letterbox geometry, network input, image <-> input <-> heatmap maps, encode and decode.

Every expected position here is worked out by hand in the pixel-centre convention of models.geometry: the
centre of pixel (column i, row j) is at (i, j), so a W-pixel-wide frame spans [-0.5, W - 0.5].
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models.codec import HeatmapCodec, image_to_unit_float
from models.config import CodecConfig

#: The localisation accuracy the codec must reach, in heatmap pixels, on noise-free Gaussian targets.
BOUND_HM_PX = 0.05


def _codec(input_size: tuple[int, int] = (128, 160), sigma: float = 2.0, stride: int = 4) -> HeatmapCodec:
    return HeatmapCodec(CodecConfig(input_size=input_size, sigma=sigma, stride=stride))


# ---- letterbox ----------------------------------------------------------------------------------------


def test_letterbox_landscape_image_by_hand() -> None:
    """200x100 (W x H) image into a 128x128 input: scale min(128/200, 128/100) = 0.64, so the content is
    128x64 input pixels, centred with (128 - 64) / 2 = 32 rows of padding above and below."""
    affine = _codec((128, 128)).letterbox((200, 100))
    assert np.allclose(affine.matrix[:, :2], np.diag([0.64, 0.64]))
    # Pixel centre (0, 0) lies half an image pixel inside the content's top-left corner:
    # x = -0.5 + 0.5 * 0.64 = -0.18, y = 32 - 0.5 + 0.5 * 0.64 = 31.82.
    assert np.allclose(affine.apply(np.array([0.0, 0.0])), [-0.18, 31.82])
    # The image's outer corners land on the content's corners: left/right edge of the input, rows 32 to 96.
    assert np.allclose(affine.apply(np.array([-0.5, -0.5])), [-0.5, 31.5])
    assert np.allclose(affine.apply(np.array([199.5, 99.5])), [127.5, 95.5])
    # The image centre goes to the input centre.
    assert np.allclose(affine.apply(np.array([99.5, 49.5])), [63.5, 63.5])


def test_letterbox_portrait_image_pads_columns() -> None:
    """100x400 into 128x160: scale min(1.28, 0.4) = 0.4 -> content 40x160, (128 - 40) / 2 = 44 columns each side."""
    affine = _codec((128, 160)).letterbox((100, 400))
    assert affine.matrix[0, 0] == pytest.approx(0.4) and affine.matrix[1, 1] == pytest.approx(0.4)
    assert np.allclose(affine.apply(np.array([-0.5, -0.5])), [43.5, -0.5])
    assert np.allclose(affine.apply(np.array([99.5, 399.5])), [83.5, 159.5])


# ---- to_input -----------------------------------------------------------------------------------------


def test_to_input_shape_padding_and_range() -> None:
    codec = _codec((128, 128))
    image = np.full((100, 200), 255, dtype=np.uint8)  # H=100, W=200: content rows 32..95
    x, affine = codec.to_input(image)
    assert x.shape == (1, 128, 128) and x.dtype == torch.float32
    assert torch.equal(x[:, :32], torch.zeros(1, 32, 128))  # exact zero padding above ...
    assert torch.equal(x[:, 96:], torch.zeros(1, 32, 128))  # ... and below
    # A white image stays white inside. The antialiased resampling sums float32 weights, so a value can
    # exceed 1 by a rounding error (1.0000001 measured): allow 1e-6.
    assert torch.allclose(x[:, 32:96], torch.ones(1, 64, 128), atol=1e-6)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0 + 1e-6
    # Here the content fills exactly 128x64 pixels, so the drawn affine equals the letterbox.
    assert np.allclose(affine.matrix, codec.letterbox((200, 100)).matrix)


def test_to_input_values_of_random_image_in_unit_range() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 65536, size=(333, 517), dtype=np.uint16)
    x, _ = _codec((128, 160)).to_input(image)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0 + 1e-6


@pytest.mark.parametrize(
    ("height", "width", "row", "col", "size"),
    [
        (100, 200, 20, 30, 6),  # the hand-worked 0.64 downscale
        (200, 300, 50, 100, 10),  # 85.33 rows round to 85: the drawn map differs from the letterbox
        (1200, 968, 600, 700, 24),  # a cephalogram-sized image, strong antialiased reduction
        (777, 333, 300, 100, 15),  # odd sizes, portrait
        (30, 40, 10, 20, 3),  # an upscale (x3.2), no antialiasing
    ],
)
def test_to_input_affine_matches_drawn_content(height: int, width: int, row: int, col: int, size: int) -> None:
    """A bright block's intensity centroid in the input is where the returned affine maps its centre."""
    codec = _codec((128, 128))
    image = np.zeros((height, width), dtype=np.uint8)
    image[row : row + size, col : col + size] = 255
    x, affine = codec.to_input(image)
    m = x[0].double().numpy()
    ys, xs = np.mgrid[0 : m.shape[0], 0 : m.shape[1]]
    centroid = np.array([(m * xs).sum() / m.sum(), (m * ys).sum() / m.sum()])
    expected = affine.apply(np.array([col + (size - 1) / 2, row + (size - 1) / 2]))
    # Measured worst case 0.022 input px (the 6-pixel block at 0.64); linear resampling moves the centroid
    # of an interior block only by float rounding and the discrete filter's asymmetry at its ends.
    assert np.abs(centroid - expected).max() < 0.05
    # The returned map is a letterbox up to the rounding of the drawn size (less than one input pixel).
    assert np.abs(affine.matrix - codec.letterbox((width, height)).matrix).max() < 1.0


# ---- input <-> heatmap ----------------------------------------------------------------------------------


@pytest.mark.parametrize("stride", [2, 4, 8])
def test_input_heatmap_maps(stride: int) -> None:
    codec = _codec((64, 96), stride=stride)
    assert codec.heatmap_size == (64 // stride, 96 // stride)
    u = np.array([[0.0, 0.0], [1.0, 2.0], [5.0, 3.0]])
    # Heatmap pixel u covers input pixels stride*u .. stride*u + stride - 1: its centre is stride*u + (stride-1)/2.
    expected = stride * u + (stride - 1) / 2
    assert np.allclose(codec.heatmap_to_input.apply(u), expected)
    assert np.allclose(codec.input_to_heatmap.apply(expected), u)
    # The frames' edges coincide: input -0.5 is heatmap -0.5, input W - 0.5 is heatmap w - 0.5.
    assert np.allclose(codec.input_to_heatmap.apply(np.array([-0.5, -0.5])), [-0.5, -0.5])
    assert np.allclose(codec.input_to_heatmap.apply(np.array([63.5, 95.5])), [64 / stride - 0.5, 96 / stride - 0.5])


def test_image_heatmap_maps_compose() -> None:
    codec = _codec((128, 128))
    letterbox = codec.letterbox((200, 100))
    p = np.array([[0.0, 0.0], [199.5, 99.5]])
    assert np.allclose(codec.image_to_heatmap(letterbox).apply(p), codec.input_to_heatmap.apply(letterbox.apply(p)))
    assert np.allclose(codec.heatmap_to_image(letterbox).apply(codec.image_to_heatmap(letterbox).apply(p)), p)


# ---- encode -------------------------------------------------------------------------------------------


def test_encode_unit_peak_at_integer_positions_and_zero_for_nan() -> None:
    codec = _codec((64, 96), sigma=2.0)  # heatmaps 16 x 24 (w x h)
    kp = torch.tensor([[[3.0, 7.0], [15.0, 0.0], [float("nan"), 4.0]]])  # (B=1, K=3, 2)
    heat = codec.encode(kp)
    assert heat.shape == (1, 3, 24, 16) and heat.dtype == torch.float32
    assert heat[0, 0, 7, 3] == 1.0 and float(heat[0, 0].max()) == 1.0
    assert int(heat[0, 0].argmax()) == 7 * 16 + 3
    assert heat[0, 1, 0, 15] == 1.0
    # One pixel off the peak: exp(-1 / (2 sigma^2)) = exp(-1/8); diagonal: exp(-2/8).
    assert float(heat[0, 0, 7, 4]) == pytest.approx(math.exp(-1 / 8), rel=1e-6)
    assert float(heat[0, 0, 8, 4]) == pytest.approx(math.exp(-2 / 8), rel=1e-6)
    # A NaN coordinate (unlabelled) gives an all-zero heatmap.
    assert torch.equal(heat[0, 2], torch.zeros(24, 16))


def test_encode_sub_pixel_peak_is_below_one() -> None:
    heat = _codec((64, 96)).encode(torch.tensor([[2.5, 3.5]]))  # (K=1, 2): no leading batch axis
    assert heat.shape == (1, 24, 16)
    # Four pixels equidistant from (2.5, 3.5), each at squared distance 0.5: exp(-0.5 / 8).
    assert float(heat.max()) == pytest.approx(math.exp(-0.5 / 8), rel=1e-6)


# ---- decode -------------------------------------------------------------------------------------------


def _interior_keypoints(codec: HeatmapCodec, n: int, margin: float, seed: int) -> torch.Tensor:
    w, h = codec.heatmap_size
    rng = np.random.default_rng(seed)
    xy = rng.uniform([margin, margin], [w - 1 - margin, h - 1 - margin], size=(n, 2))
    return torch.as_tensor(xy, dtype=torch.float32)[None]  # (1, n, 2)


@pytest.mark.parametrize("sigma", [1.5, 2.0, 3.0])
def test_decode_round_trip_interior(sigma: float) -> None:
    """Random sub-pixel keypoints are decoded within the bound, with and without the DARK blur, away from
    the border by the blur's reach (2 sigma + 1 heatmap pixels)."""
    codec = _codec((128, 160), sigma=sigma)
    kp = _interior_keypoints(codec, 64, margin=2 * sigma + 1, seed=int(10 * sigma))
    heat = codec.encode(kp)
    for blur in (False, True):
        coords, conf = codec.decode(heat, blur=blur)
        assert coords.shape == (1, 64, 2) and conf.shape == (1, 64)
        assert float((coords - kp).abs().max()) < BOUND_HM_PX, f"blur={blur}"
    # The confidence is the raw peak: at least exp(-(0.5^2 + 0.5^2) / (2 sigma^2)) for a sub-pixel peak.
    assert float(conf.min()) >= math.exp(-0.5 / (2 * sigma**2)) - 1e-6 and float(conf.max()) <= 1.0


def _near_border_keypoints(codec: HeatmapCodec) -> torch.Tensor:
    """Keypoints whose nearest pixel is the 2nd or 3rd from a border, so the whole 3x3 DARK neighbourhood
    lies inside the heatmap ("near but not at" the border)."""
    w, h = codec.heatmap_size
    cx, cy = w / 2 + 0.17, h / 2 - 0.31
    xy = [
        (1.3, cy),
        (0.8, cy),
        (2.4, cy),
        (w - 2.3, cy),
        (w - 3.4, cy),
        (cx, 1.2),
        (cx, h - 2.45),
        (1.35, h - 1.7),
    ]
    return torch.tensor([xy], dtype=torch.float32)


def test_decode_near_border_without_blur() -> None:
    codec = _codec((128, 160))
    kp = _near_border_keypoints(codec)
    coords, _ = codec.decode(codec.encode(kp), blur=False)
    assert float((coords - kp).abs().max()) < BOUND_HM_PX


def test_decode_near_border_with_blur() -> None:
    codec = _codec((128, 160))
    kp = _near_border_keypoints(codec)
    coords, _ = codec.decode(codec.encode(kp), blur=True)
    assert float((coords - kp).abs().max()) < BOUND_HM_PX


def test_decode_picks_each_channel_independently() -> None:
    codec = _codec((64, 96))
    kp = torch.tensor([[[6.0, 9.0], [9.25, 12.6]], [[7.7, 8.1], [8.0, 11.0]]])  # (B=2, K=2, 2)
    coords, _ = codec.decode(codec.encode(kp), blur=False)
    assert torch.allclose(coords, kp, atol=BOUND_HM_PX)


def _full_map_decode(codec: HeatmapCodec, heatmaps: torch.Tensor, blur: bool) -> torch.Tensor:
    """DARK decoding as first written: blur every whole heatmap (replicate padding), take the log of the whole
    maps, one Newton step at the argmax; the reference the windowed decode must reproduce. (B, K, 2)."""
    b, k, h, w = heatmaps.shape
    hm = heatmaps.to(torch.float32)
    flat = hm.reshape(b, k, -1).max(dim=-1).indices
    iy, ix = flat // w, flat % w

    def newton(logh: torch.Tensor) -> torch.Tensor:
        pad = torch.nn.functional.pad(logh.reshape(b * k, 1, h, w), (1, 1, 1, 1), mode="replicate").reshape(b, k, -1)

        def at(dy: int, dx: int) -> torch.Tensor:
            return pad.gather(-1, ((iy + 1 + dy) * (w + 2) + ix + 1 + dx)[..., None])[..., 0]

        gx, gy = 0.5 * (at(0, 1) - at(0, -1)), 0.5 * (at(1, 0) - at(-1, 0))
        hxx, hyy = at(0, 1) - 2 * at(0, 0) + at(0, -1), at(1, 0) - 2 * at(0, 0) + at(-1, 0)
        hxy = 0.25 * (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1))
        det = hxx * hyy - hxy**2
        ok = (det > 1e-12) & (hxx < 0)
        safe = torch.where(ok, det, torch.ones_like(det))
        ox = torch.where(ok, -(hyy * gx - hxy * gy) / safe, 0.0).clamp(-1.0, 1.0)
        oy = torch.where(ok, -(hxx * gy - hxy * gx) / safe, 0.0).clamp(-1.0, 1.0)
        return torch.stack([ox, oy], dim=-1)

    offset = newton(torch.log(hm.clamp_min(1e-10)))
    if blur:
        sigma = codec.config.sigma
        r = max(1, math.ceil(2 * sigma))
        t = torch.arange(-r, r + 1, dtype=torch.float32)
        g = torch.exp(-(t**2) / (2 * sigma**2))
        g = g / g.sum()
        x = hm.reshape(b * k, 1, h, w)
        x = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (r, r, 0, 0), mode="replicate"), g.view(1, 1, 1, -1))
        x = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (0, 0, r, r), mode="replicate"), g.view(1, 1, -1, 1))
        smooth = newton(torch.log(x.reshape(b, k, h, w).clamp_min(1e-10)))
        inner = (ix >= r) & (ix < w - r) & (iy >= r) & (iy < h - r)
        offset = torch.where(inner[..., None], smooth, offset)
    return torch.stack([ix, iy], dim=-1).to(torch.float32) + offset


@pytest.mark.parametrize("sigma", [1.5, 2.0, 3.0])
def test_windowed_decode_equals_full_map_decode(sigma: float) -> None:
    """The decode blurs only a window around each argmax: the same points as blurring the whole maps, on noisy
    predicted-like heatmaps (peaks of random height, noise, some saturated pixels) with many peaks on, next to
    or within the blur radius of the border (where the border fallback and the replicated padding act)."""
    codec = _codec((128, 160), sigma=sigma)
    w, h = codec.heatmap_size
    gen = torch.Generator().manual_seed(int(10 * sigma))
    b, k = 6, 24
    xy = torch.rand(b, k, 2, generator=gen) * torch.tensor([w - 1.0, h - 1.0])
    # Half the peaks within 4 pixels of a border (some just outside it), on the left/top or right/bottom.
    near = torch.rand(b, k, 2, generator=gen) * 4.4 - 0.7
    side = torch.rand(b, k, 2, generator=gen) < 0.5
    edge = torch.where(side, near, torch.tensor([w - 1.0, h - 1.0]) - near)
    xy = torch.where(torch.rand(b, k, 1, generator=gen) < 0.5, edge, xy)
    heat = codec.encode(xy) * (0.2 + 0.8 * torch.rand(b, k, 1, 1, generator=gen))
    heat = (heat + 0.05 * torch.randn(heat.shape, generator=gen)).clamp(0.0, 1.0)
    ix = heat.reshape(b, k, -1).max(dim=-1).indices % w
    assert int((ix == 0).sum()) > 0 and int((ix == w - 1).sum()) > 0  # peaks on the very border are covered
    for blur in (True, False):
        coords, _ = codec.decode(heat, blur=blur)
        assert float((coords - _full_map_decode(codec, heat, blur)).abs().max()) < 1e-4, f"blur={blur}"


@pytest.mark.parametrize("image_wh", [(500, 300), (300, 500), (968, 1200)])
def test_decode_to_image_round_trip(image_wh: tuple[int, int]) -> None:
    """Image points -> heatmap targets -> decode_to_image: back to the image points within the heatmap bound
    expressed in image pixels, 0.05 * stride / scale."""
    codec = _codec((128, 160))
    letterbox = codec.letterbox(image_wh)
    scale = letterbox.matrix[0, 0]
    # Random heatmap points inside the content and away from its border, mapped back to image pixels.
    w_img, h_img = image_wh
    to_hm = codec.image_to_heatmap(letterbox)
    lo = to_hm.apply(np.array([-0.5, -0.5]))
    hi = to_hm.apply(np.array([w_img - 0.5, h_img - 0.5]))
    margin = 2 * codec.config.sigma + 1
    rng = np.random.default_rng(sum(image_wh))
    hm_pts = rng.uniform(np.maximum(lo, margin), np.minimum(hi, np.array(codec.heatmap_size) - 1 - margin), (2, 12, 2))
    image_pts = codec.heatmap_to_image(letterbox).apply(hm_pts)
    assert (image_pts > -0.5).all() and (image_pts < np.array(image_wh) - 0.5).all()

    heat = codec.encode(torch.as_tensor(to_hm.apply(image_pts), dtype=torch.float32))
    decoded, conf = codec.decode_to_image(heat, [letterbox, letterbox])
    assert decoded.shape == (2, 12, 2) and decoded.dtype == np.float64 and conf.shape == (2, 12)
    bound_image_px = BOUND_HM_PX * codec.config.stride / scale
    assert np.abs(decoded - image_pts).max() < bound_image_px


# ---- image_to_unit_float --------------------------------------------------------------------------------


def test_image_to_unit_float() -> None:
    u8 = image_to_unit_float(np.array([[0, 128, 255]], dtype=np.uint8))
    assert u8.dtype == np.float32 and np.allclose(u8, [[0.0, 128 / 255, 1.0]])
    u16 = image_to_unit_float(np.array([[0, 32768, 65535]], dtype=np.uint16))
    assert u16.dtype == np.float32 and np.allclose(u16, [[0.0, 32768 / 65535, 1.0]])
    f = image_to_unit_float(np.array([[-0.5, 0.25, 1.7, np.nan]], dtype=np.float64))
    assert f.dtype == np.float32 and np.allclose(f, [[0.0, 0.25, 1.0, 0.0]])  # clipped, NaN -> 0


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.bool_])
def test_image_to_unit_float_rejects_other_dtypes(dtype: type) -> None:
    with pytest.raises(TypeError):
        image_to_unit_float(np.zeros((2, 2), dtype=dtype))


# ---- configuration ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        CodecConfig(input_size=(130, 160)),  # width not a multiple of the stride
        CodecConfig(input_size=(128, 162)),
        CodecConfig(sigma=0.0),
        CodecConfig(sigma=-1.0),
    ],
)
def test_invalid_config_raises(config: CodecConfig) -> None:
    with pytest.raises(ValueError):
        HeatmapCodec(config)


@pytest.mark.parametrize(
    "config",
    [
        pytest.param(CodecConfig(stride=0), id="zero-stride"),
        pytest.param(CodecConfig(stride=-4), id="negative-stride"),
        pytest.param(CodecConfig(input_size=(0, 0)), id="empty-input"),
        pytest.param(CodecConfig(sigma=float("nan")), id="nan-sigma"),
    ],
)
def test_degenerate_config_raises_value_error(config: CodecConfig) -> None:
    with pytest.raises(ValueError):
        HeatmapCodec(config)
