"""Imaging ingest of the other formats (the ISBI 2015 cephalograms, small images written here with Pillow and
SimpleITK) and every refusal, DICOM's too."""

from __future__ import annotations

import io
import math
import struct
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from server.imaging import ImageLimits, ImagingError, decode_image

from .cases import assert_fails, dataset, stretched, tiff_with_a_page_without_size, to_bytes, with_unknown_vr

# ------------------------------------------------------------------------------------- other formats


def test_isbi_cephalogram_jpeg(data_root: Path) -> None:
    path = data_root / "isbi2015" / "images" / "001.jpg"
    raw = path.read_bytes()
    image = decode_image(raw, filename=path.name)
    assert (image.format, image.width, image.height) == ("jpeg", 968, 1200)
    assert image.spacing_mm is None and image.spacing_source == "none"
    assert image.dicom is None and image.source_bytes_deidentified == raw
    with Image.open(path) as reference:
        assert np.array_equal(image.pixels, np.asarray(reference.convert("L"), np.uint16) * 257)
    with_spacing = decode_image(raw, spacing_mm=(0.1, 0.1))
    assert with_spacing.spacing_mm == (0.1, 0.1) and with_spacing.spacing_source == "user"
    assert with_spacing.pixel_sha256 == image.pixel_sha256


@pytest.mark.parametrize("orientation", [1, 6, 3])
def test_jpeg_exif_orientation_is_applied(orientation: int) -> None:
    """A camera JPEG is decoded as viewers show it: EXIF Orientation 6 is a quarter turn clockwise (Pillow's
    ROTATE_270), 3 a half turn, 1 as stored. A grey JPEG is lossy, so compare with the stored pixels decoded
    by Pillow and turned by hand."""
    stored = np.repeat(np.repeat(_gradient(6, 8).astype(np.float64), 8, 0), 8, 1)  # 48 x 64, smooth 8x8 blocks
    grey = Image.fromarray(((stored - stored.min()) / np.ptp(stored) * 255).astype(np.uint8))
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    grey.save(buffer, "JPEG", quality=95, exif=exif.tobytes())
    with Image.open(io.BytesIO(buffer.getvalue())) as reference:
        as_stored = np.asarray(reference, np.uint16) * 257
    image = decode_image(buffer.getvalue(), filename="camera.jpg")
    expected = {1: as_stored, 6: np.rot90(as_stored, -1), 3: np.rot90(as_stored, 2)}[orientation]
    assert (image.width, image.height) == (expected.shape[1], expected.shape[0])
    assert np.array_equal(image.pixels, expected)


def test_jpeg_reduced_for_a_small_model(data_root: Path) -> None:
    """With `at_least`, a JPEG is decoded reduced by the largest of 2, 4, 8 that keeps both sides at least that
    large; each reduced pixel is close to the mean of the r x r block it stands for (libjpeg's scaled IDCT);
    width and height stay the file's; other formats and too-large requests decode whole."""
    raw = (data_root / "isbi2015" / "images" / "001.jpg").read_bytes()  # 968 x 1200
    whole = decode_image(raw).pixels.astype(np.float64)
    for at_least, r in (((256, 320), 2), ((160, 200), 4), ((64, 80), 8), ((968, 1200), 1), ((969, 10), 1)):
        image = decode_image(raw, at_least=at_least)
        assert (image.reduction, image.width, image.height) == (r, 968, 1200)
        assert image.pixels.shape == (-(-1200 // r), -(-968 // r))
        if r > 1:
            blocks = whole.reshape(1200 // r, r, 968 // r, r).mean(axis=(1, 3))
            assert np.abs(image.pixels.astype(np.float64) - blocks).mean() < 0.01 * 65535
            with pytest.raises(ValueError, match="reduced decode"):
                _ = image.pixel_sha256
    png = _pillow_bytes(Image.fromarray(_gradient()), "PNG")
    assert decode_image(png, at_least=(8, 8)).reduction == 1


@pytest.mark.parametrize("orientation", [1, 6])
def test_reduced_jpeg_keeps_its_exif_orientation(orientation: int) -> None:
    """Orientation 6 turns the image a quarter: `at_least` is as displayed, width and height too."""
    stored = np.repeat(np.repeat(_gradient(6, 8).astype(np.float64), 8, 0), 8, 1)  # 48 x 64
    grey = Image.fromarray(((stored - stored.min()) / np.ptp(stored) * 255).astype(np.uint8))
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    grey.save(buffer, "JPEG", quality=95, exif=exif.tobytes())
    shown = (64, 48) if orientation == 1 else (48, 64)  # (W, H) as displayed
    image = decode_image(buffer.getvalue(), at_least=(shown[0] // 4, shown[1] // 4))
    assert (image.reduction, image.width, image.height) == (4, *shown)
    assert image.pixels.shape == (shown[1] // 4, shown[0] // 4)
    # A request larger than the stored width but within the displayed one: the turn is taken into account.
    assert decode_image(buffer.getvalue(), at_least=(shown[0] // 2, shown[1] // 2)).reduction == 2


def _gradient(height: int = 30, width: int = 40) -> np.ndarray:
    """A (30, 40) uint16 image whose every pixel differs, so a transposed or flipped read shows."""
    return (np.arange(height * width, dtype=np.uint16).reshape(height, width) * 7 + 1000).astype(np.uint16)


def _pillow_bytes(image: Image.Image, image_format: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format)
    return buffer.getvalue()


def test_png_16_bit_is_stretched_from_its_real_range() -> None:
    values = _gradient()
    image = decode_image(_pillow_bytes(Image.fromarray(values), "PNG"), filename="x.png")
    assert (image.format, image.photometric, image.bits_stored) == ("png", "I;16", 16)
    assert np.array_equal(image.pixels, stretched(values, values.min(), values.max()))


@pytest.mark.parametrize(("image_format", "name"), [("PNG", "png"), ("BMP", "bmp"), ("TIFF", "tiff")])
def test_8_bit_grey_is_scaled_by_257(image_format: str, name: str) -> None:
    values = (_gradient() % 256).astype(np.uint8)
    image = decode_image(_pillow_bytes(Image.fromarray(values), image_format))
    assert image.format == name and image.spacing_source == "none"
    assert np.array_equal(image.pixels, values.astype(np.uint16) * 257)


@pytest.mark.parametrize("image_format", ["PNG", "BMP", "TIFF"])
def test_colour_becomes_luminance(image_format: str) -> None:
    rgb = np.stack([_gradient() % 256, _gradient()[::-1] % 256, np.full((30, 40), 200)], axis=-1).astype(np.uint8)
    colour = Image.fromarray(rgb)
    image = decode_image(_pillow_bytes(colour, image_format))
    assert np.array_equal(image.pixels, np.asarray(colour.convert("L"), np.uint16) * 257)


@pytest.mark.parametrize("suffix", [".mha", ".nrrd", ".nii", ".nii.gz"])
def test_simpleitk_formats_keep_header_spacing(suffix: str, tmp_path: Path) -> None:
    values = _gradient().astype(np.int16) - 2000
    itk = sitk.GetImageFromArray(values)  # (H, W) array -> image of size (W, H)
    itk.SetSpacing((0.2, 0.3))
    path = tmp_path / f"image{suffix}"
    sitk.WriteImage(itk, str(path))
    image = decode_image(path.read_bytes(), filename=path.name)
    assert image.format == {".mha": "mha", ".nrrd": "nrrd", ".nii": "nifti", ".nii.gz": "nifti"}[suffix]
    assert image.spacing_mm == pytest.approx((0.2, 0.3)) and image.spacing_source == "header"
    assert np.array_equal(image.pixels, stretched(values, values.min(), values.max()))


def test_simpleitk_single_slice_volume_is_2d(tmp_path: Path) -> None:
    path = tmp_path / "slice.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(_gradient()[None]), str(path))
    assert decode_image(path.read_bytes()).pixels.shape == (30, 40)


# --------------------------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    "spacing",
    [(0.0, 0.1), (0.1, -1.0), (math.nan, 0.1), (math.inf, 0.1), (0.1,), (1e-4, 1e-4), (1e-300, 0.1), (0.1, 50.0)],
)
def test_bad_user_spacing(spacing: tuple[float, ...]) -> None:
    png = _pillow_bytes(Image.fromarray(_gradient()), "PNG")
    assert_fails("bad-spacing", png, spacing_mm=spacing)


def test_not_images() -> None:
    assert_fails("not-an-image", np.random.default_rng(0).bytes(4096))
    assert_fails("not-an-image", b"name,x,y\nsella,1,2\n", filename="landmarks.csv")
    assert_fails("empty-file", b"")
    assert_fails("unsupported-format", _pillow_bytes(Image.fromarray(_gradient().astype(np.uint8)), "GIF"))


@pytest.mark.parametrize("name", ["693_UNCR.dcm", "693_J2KR.dcm", "RG3_J2KR.dcm"])
def test_truncated_dicom(name: str, read_bytes: Callable[[str], bytes]) -> None:
    raw = read_bytes(name)
    assert_fails("truncated-dicom", raw[: len(raw) // 2], filename=name)
    assert_fails("truncated-dicom", raw[:600])  # cut inside the header


@pytest.mark.parametrize("keyword", ["StudyDate", "PatientName", "SamplesPerPixel", "Rows", "ImageComments"])
def test_an_element_of_unknown_vr_is_invalid_dicom(keyword: str, read_bytes: Callable[[str], bytes]) -> None:
    # pydicom converts a value when it is first read: in the header's checks, the pixels' or the descriptors'.
    assert_fails("invalid-dicom", with_unknown_vr(read_bytes("SC_rgb.dcm"), keyword), filename="x.dcm")


def test_truncated_images(data_root: Path) -> None:
    jpeg = (data_root / "isbi2015" / "images" / "001.jpg").read_bytes()
    assert_fails("truncated-image", jpeg[: len(jpeg) // 2])
    png = _pillow_bytes(Image.fromarray(_gradient()), "PNG")
    assert_fails("truncated-image", png[: len(png) // 2])
    assert_fails("truncated-image", tiff_with_a_page_without_size())  # Pillow's TypeError counting its pages


def test_dicom_without_pixel_data(read_bytes: Callable[[str], bytes]) -> None:
    ds = dataset(read_bytes("693_UNCR.dcm"))
    del ds.PixelData
    assert_fails("no-pixel-data", to_bytes(ds))


@pytest.mark.parametrize("uid", ["1.2.840.10008.1.2.4.100", "1.2.826.0.1.3680043.8.498.999.1"])
def test_unsupported_transfer_syntax(uid: str, read_bytes: Callable[[str], bytes]) -> None:
    ds = dataset(read_bytes("693_J2KR.dcm"))  # keeps its (JPEG 2000) bytes, claims another syntax
    ds.file_meta.TransferSyntaxUID = uid
    error = assert_fails("unsupported-transfer-syntax", to_bytes(ds))
    assert uid in error.message
    if uid.endswith(".100"):
        assert "MPEG2" in error.message


def test_multi_frame(read_bytes: Callable[[str], bytes]) -> None:
    assert_fails("multi-frame", read_bytes("emri_small.dcm"))
    frames = [Image.fromarray(_gradient().astype(np.uint8)) for _ in range(2)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "TIFF", save_all=True, append_images=frames[1:])
    assert_fails("multi-frame", buffer.getvalue())


def test_volume_is_not_2d(tmp_path: Path) -> None:
    path = tmp_path / "volume.mha"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((3, 8, 8), np.uint8)), str(path))
    assert_fails("not-2d", path.read_bytes())


def test_detached_metaimage_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "image.mhd"
    sitk.WriteImage(sitk.GetImageFromArray(_gradient()), str(path))
    assert_fails("unsupported-format", path.read_bytes(), filename=path.name)


def test_metaimage_pointing_elsewhere_is_refused() -> None:
    header = "ObjectType = Image\nNDims = 2\nDimSize = 4 4\nElementType = MET_UCHAR\nElementDataFile = /etc/hostname\n"
    assert_fails("unsupported-format", header.encode(), filename="x.mha")


def test_metaimage_without_spacing_has_none(tmp_path: Path) -> None:
    path = tmp_path / "image.mha"
    sitk.WriteImage(sitk.GetImageFromArray(_gradient()), str(path))
    raw = path.read_bytes()
    raw = raw.replace(raw[raw.index(b"ElementSpacing") : raw.index(b"\n", raw.index(b"ElementSpacing")) + 1], b"")
    image = decode_image(raw)
    assert image.spacing_mm is None and image.spacing_source == "none"


def _png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"\0" * 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def test_empty_images(read_bytes: Callable[[str], bytes]) -> None:
    assert_fails("empty-image", _png_header(0, 0))
    ds = dataset(read_bytes("693_UNCR.dcm"))
    ds.Rows = ds.Columns = 0
    assert_fails("empty-image", to_bytes(ds))


def test_images_of_a_few_pixels_a_side_are_refused(read_bytes: Callable[[str], bytes]) -> None:
    assert "at least 16 pixels a side" in assert_fails("image-too-small", _png_header(3000, 2)).message
    assert_fails("image-too-small", _pillow_bytes(Image.fromarray(np.zeros((1, 1), np.uint8)), "PNG"))
    ds = dataset(read_bytes("693_UNCR.dcm"))
    ds.Rows = 8
    assert_fails("image-too-small", to_bytes(ds))
    assert decode_image(_pillow_bytes(Image.fromarray(np.zeros((16, 16), np.uint8)), "PNG")).width == 16


def test_huge_declared_images_fail_without_allocating(read_bytes: Callable[[str], bytes]) -> None:
    ds = dataset(read_bytes("693_UNCR.dcm"))
    ds.Rows = ds.Columns = 60000
    ds.PixelData = b"\0" * 64
    huge_dicom = to_bytes(ds)
    tracemalloc.start()
    try:
        too_large = assert_fails("image-too-large", huge_dicom)
        assert_fails("image-too-large", _png_header(100_000, 100_000))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20
    assert too_large.http_status == 413 and "60000 x 60000" in too_large.message
    assert_fails("image-too-large", _pillow_bytes(Image.fromarray(_gradient()), "PNG"), limits=ImageLimits(pixels=100))


def test_error_status() -> None:
    assert ImagingError("truncated-dicom", "cut").http_status == 422
    assert ImagingError("image-too-large", "big").http_status == 413
