"""Imaging ingest on real files: pydicom-data and deid-data DICOM, the ISBI 2015 cephalograms, and small images
written here with Pillow and SimpleITK."""

from __future__ import annotations

import copy
import io
import math
import struct
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import DeflatedExplicitVRLittleEndian, JPEGBaseline8Bit, JPEGLosslessSV1, JPEGLSLossless

from server.imaging import DecodedImage, ImagingError, decode_image, pixel_digest
from server.imaging.deid import METHOD

data_store = pytest.importorskip("data_store", reason="pydicom-data (the dev extra) holds the DICOM test files")
deid_data = pytest.importorskip("deid_data", reason="deid-data (the dev extra) holds the DX test file")

PYDICOM_DATA = Path(data_store.__file__).parent / "data"
DEID_DATA = Path(deid_data.__file__).parent / "data"
IDENTIFYING = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "OtherPatientIDs",
    "InstitutionName",
    "ReferringPhysicianName",
    "AccessionNumber",
)


@pytest.fixture(scope="module")
def read_bytes() -> Callable[[str], bytes]:
    """Bytes of a pydicom-data file, or of a deid-data file when the name starts with "deid:"; cached."""
    cache: dict[str, bytes] = {}

    def read(name: str) -> bytes:
        if name not in cache:
            path = DEID_DATA / name.removeprefix("deid:") if name.startswith("deid:") else PYDICOM_DATA / name
            cache[name] = path.read_bytes()
        return cache[name]

    return read


@pytest.fixture(scope="module")
def decoded(read_bytes: Callable[[str], bytes]) -> Callable[[str], DecodedImage]:
    """``decode_image`` of a named real file, cached for the module (the CR files are several MB)."""
    cache: dict[str, DecodedImage] = {}

    def decode(name: str) -> DecodedImage:
        if name not in cache:
            cache[name] = decode_image(read_bytes(name), filename=name)
        return cache[name]

    return decode


def dataset(data: bytes) -> Dataset:
    return pydicom.dcmread(io.BytesIO(data))


def to_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


def stretched(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """The reference mapping lo..hi -> 0..65535 the decoder promises, computed independently."""
    return np.rint(np.clip((values.astype(np.float64) - lo) / (hi - lo), 0, 1) * 65535).astype(np.uint16)


def assert_fails(code: str, data: bytes, **kwargs: object) -> ImagingError:
    with pytest.raises(ImagingError) as info:
        decode_image(data, **kwargs)  # type: ignore[arg-type]
    assert info.value.code == code, info.value.message
    assert len(info.value.message) > 30 and str(info.value) == info.value.message
    return info.value


# ------------------------------------------------------------------------------------- DICOM: spacing


@pytest.mark.parametrize(
    ("name", "body_part", "shape"),
    [("RG1_UNCR.dcm", "CHEST", (1955, 1841)), ("RG3_UNCR.dcm", "EXTREMITY", (1760, 1760))],
)
def test_cr_chest_and_leg_have_unknown_spacing(
    name: str, body_part: str, shape: tuple[int, int], decoded: Callable[[str], DecodedImage], read_bytes
) -> None:
    source = dataset(read_bytes(name))
    # RG1 (chest) declares PixelSpacing 0\0, RG3 (leg) none at all; neither has ImagerPixelSpacing: both unknown.
    assert source.BodyPartExamined == body_part and "ImagerPixelSpacing" not in source
    assert [float(v) for v in source.get("PixelSpacing", [])] in ([0.0, 0.0], [])
    image = decoded(name)
    assert image.spacing_mm is None and image.spacing_source == "none"
    assert (image.format, image.modality, image.photometric) == ("dicom", "CR", "MONOCHROME1")
    assert image.pixels.shape == shape == (image.height, image.width) and image.pixels.dtype == np.uint16
    assert image.pixels.min() < 10_000 and image.pixels.max() > 60_000  # the window fills the grey range
    assert not image.pixels.flags.writeable


def test_user_spacing_overrides(read_bytes: Callable[[str], bytes]) -> None:
    image = decode_image(read_bytes("RG3_UNCR.dcm"), spacing_mm=(0.15, 0.125))
    assert image.spacing_mm == (0.15, 0.125) and image.spacing_source == "user"


def test_dx_spacing_from_pixel_spacing_then_imager_pixel_spacing(read_bytes: Callable[[str], bytes]) -> None:
    raw = read_bytes("deid:animals/cat.dcm")
    source = dataset(raw)
    assert source.Modality == "DX"
    assert [float(v) for v in source.ImagerPixelSpacing] == [0.14, 0.14]
    assert [float(v) for v in source.PixelSpacing] == [0.14, 0.14]
    image = decode_image(raw)
    assert image.spacing_mm == (0.14, 0.14) and image.spacing_source == "PixelSpacing"

    del source.PixelSpacing  # as most DX files are: only the detector's spacing
    image = decode_image(to_bytes(source))
    assert image.spacing_mm == (0.14, 0.14) and image.spacing_source == "ImagerPixelSpacing"


def test_spacing_order_and_zero_fallback(read_bytes: Callable[[str], bytes]) -> None:
    source = dataset(read_bytes("693_UNCR.dcm"))
    source.PixelSpacing = [0.0, 0.0]  # zero means unknown: fall back to the imager's
    source.ImagerPixelSpacing = [0.2, 0.1]  # DICOM order: row spacing (y), column spacing (x)
    image = decode_image(to_bytes(source))
    assert image.spacing_mm == (0.1, 0.2) and image.spacing_source == "ImagerPixelSpacing"

    source.PixelSpacing = [0.3, 0.25]
    assert decode_image(to_bytes(source)).spacing_mm == (0.25, 0.3)


# ------------------------------------------------------------------------------ DICOM: compressed twins


@pytest.mark.parametrize(
    ("compressed", "uncompressed"),
    [("693_J2KR.dcm", "693_UNCR.dcm"), ("RG3_J2KR.dcm", "RG3_UNCR.dcm"), ("US1_J2KR.dcm", "US1_UNCR.dcm")],
)
def test_jpeg2000_lossless_equals_uncompressed_twin(
    compressed: str, uncompressed: str, decoded: Callable[[str], DecodedImage]
) -> None:
    a, b = decoded(compressed), decoded(uncompressed)
    assert a.transfer_syntax != b.transfer_syntax
    assert np.array_equal(a.pixels, b.pixels) and a.pixel_sha256 == b.pixel_sha256


def _single_frame(ds: Dataset, frame: bytes) -> bytes:
    ds.NumberOfFrames = 1
    ds.PixelData = encapsulate([frame]) if ds.file_meta.TransferSyntaxUID.is_compressed else frame
    return to_bytes(ds)


def test_jpeg_ls_lossless_equals_uncompressed_twin(read_bytes: Callable[[str], bytes]) -> None:
    native = dataset(read_bytes("emri_small.dcm"))  # 10 frames of 64 x 64; the first one, as its own file
    jpeg_ls = dataset(read_bytes("emri_small_jpeg_ls_lossless.dcm"))
    assert jpeg_ls.file_meta.TransferSyntaxUID == JPEGLSLossless
    first_native = native.PixelData[: 64 * 64 * 2]
    first_jpeg_ls = next(generate_frames(jpeg_ls.PixelData, number_of_frames=10))
    a = decode_image(_single_frame(jpeg_ls, first_jpeg_ls))
    b = decode_image(_single_frame(native, first_native))
    assert a.pixels.shape == (64, 64) and np.array_equal(a.pixels, b.pixels)


def test_jpeg_lossless_single_frame(read_bytes: Callable[[str], bytes]) -> None:
    raw = read_bytes("JPEG-LL.dcm")  # NumberOfFrames = 1 is a single image, no window: min..max of the values
    stored = dataset(raw).pixel_array
    image = decode_image(raw)
    assert image.transfer_syntax == JPEGLosslessSV1
    assert image.spacing_mm == (2.26, 2.26) and image.spacing_source == "PixelSpacing"
    assert np.array_equal(image.pixels, stretched(stored, stored.min(), stored.max()))


def test_jpeg_baseline_colour_dicom_becomes_grey(read_bytes: Callable[[str], bytes]) -> None:
    image = decode_image(read_bytes("deid:humans/ctbrain1.dcm"))
    assert image.transfer_syntax == JPEGBaseline8Bit and image.photometric == "YBR_FULL_422"
    assert image.pixels.shape == (456, 510) and image.pixels.dtype == np.uint16
    assert image.spacing_mm == (0.42578125, 0.42578125)


def test_deflated_dicom(read_bytes: Callable[[str], bytes], decoded: Callable[[str], DecodedImage]) -> None:
    ds = dataset(read_bytes("693_UNCR.dcm"))
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    assert np.array_equal(decode_image(to_bytes(ds)).pixels, decoded("693_UNCR.dcm").pixels)


def test_dicom_without_preamble(read_bytes: Callable[[str], bytes], decoded: Callable[[str], DecodedImage]) -> None:
    ds = dataset(read_bytes("693_UNCR.dcm"))
    ds.preamble = None
    del ds.file_meta
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, implicit_vr=True, little_endian=True, enforce_file_format=False)
    bare = buffer.getvalue()
    assert bare[128:132] != b"DICM"
    image = decode_image(bare)
    assert image.format == "dicom" and np.array_equal(image.pixels, decoded("693_UNCR.dcm").pixels)


# ----------------------------------------------------------------------------------- DICOM: MONOCHROME1


def _flipped(raw: bytes, *, keep_window: bool) -> bytes:
    """The MONOCHROME1 CR as its MONOCHROME2 twin: pixel data inverted, the window mirrored with it."""
    ds = dataset(raw)
    top = 2**ds.BitsStored - 1
    stored = ds.pixel_array
    assert stored.max() <= top
    ds.PixelData = (top - stored).astype("<u2").tobytes()
    ds.PhotometricInterpretation = "MONOCHROME2"
    if keep_window:
        ds.WindowCenter = top - float(ds.WindowCenter) + 1  # the mirror of pydicom's linear window (c - 0.5)
    else:
        del ds.WindowCenter, ds.WindowWidth
    return to_bytes(ds)


def test_monochrome1_equals_its_inverted_monochrome2_twin(read_bytes: Callable[[str], bytes], decoded) -> None:
    raw = read_bytes("RG3_UNCR.dcm")
    original = decoded("RG3_UNCR.dcm")
    assert original.photometric == "MONOCHROME1"
    twin = decode_image(_flipped(raw, keep_window=True))
    assert twin.photometric == "MONOCHROME2"
    assert np.abs(twin.pixels.astype(int) - original.pixels).max() <= 1  # float rounding of the window only

    ds = dataset(raw)
    del ds.WindowCenter, ds.WindowWidth
    unwindowed = decode_image(to_bytes(ds))
    assert np.array_equal(decode_image(_flipped(raw, keep_window=False)).pixels, unwindowed.pixels)


def test_monochrome1_is_inverted(read_bytes: Callable[[str], bytes], decoded: Callable[[str], DecodedImage]) -> None:
    ds = dataset(read_bytes("RG3_UNCR.dcm"))
    ds.PhotometricInterpretation = "MONOCHROME2"  # same values read the other way round
    relabelled = decode_image(to_bytes(ds))
    assert np.abs(relabelled.pixels.astype(int) + decoded("RG3_UNCR.dcm").pixels - 65535).max() <= 1


# ----------------------------------------------------------------------------------- de-identification


def test_deidentification_removes_identifiers_and_private_tags(read_bytes: Callable[[str], bytes]) -> None:
    source = dataset(read_bytes("deid:animals/cat.dcm"))
    source.OtherPatientIDs = "OTHER-4711"
    source.ReferringPhysicianName = "Referrer^Rita"
    source.AccessionNumber = "ACC-0815"
    assert str(source.PatientName) and str(source.InstitutionName)
    assert any(elem.tag.is_private for elem in source)
    original = copy.deepcopy(source)

    image = decode_image(to_bytes(source))
    assert image.dicom is not None and image.deid_method == METHOD
    written = dataset(image.source_bytes_deidentified)
    for ds in (image.dicom, written):
        for keyword in IDENTIFYING:
            assert str(ds.get(keyword, "")) != str(original.get(keyword)), keyword
        assert ds.PatientIdentityRemoved == "YES"
        assert _private_tags(ds) == []
        assert ds.SOPInstanceUID != original.SOPInstanceUID
    assert written.PixelData == original.PixelData  # pixels untouched
    for value in ("Wetzel", "16550", "Bartels Busack", "Rita", "ACC-0815", "OTHER-4711"):
        assert value.encode() not in image.source_bytes_deidentified


def _private_tags(ds: Dataset) -> list[str]:
    """Every private tag, sequences included."""
    found: list[str] = []
    ds.walk(lambda _, elem: found.append(str(elem.tag)) if elem.tag.is_private else None)
    return found


def test_same_image_twice_has_same_pixel_hash(read_bytes: Callable[[str], bytes]) -> None:
    raw = read_bytes("693_UNCR.dcm")
    edited = dataset(raw)
    edited.PatientName = "Someone^Else"
    edited.SeriesDescription = "posted again"
    first, second, third = decode_image(raw), decode_image(raw), decode_image(to_bytes(edited))
    assert first.dicom is not None and second.dicom is not None
    assert first.dicom.SOPInstanceUID != second.dicom.SOPInstanceUID
    assert first.dicom.StudyInstanceUID != second.dicom.StudyInstanceUID
    assert first.source_bytes_deidentified != second.source_bytes_deidentified
    assert first.pixel_sha256 == second.pixel_sha256 == third.pixel_sha256 == pixel_digest(first.pixels)


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


@pytest.mark.parametrize("spacing", [(0.0, 0.1), (0.1, -1.0), (math.nan, 0.1), (math.inf, 0.1), (0.1,)])
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


def test_truncated_images(data_root: Path) -> None:
    jpeg = (data_root / "isbi2015" / "images" / "001.jpg").read_bytes()
    assert_fails("truncated-image", jpeg[: len(jpeg) // 2])
    png = _pillow_bytes(Image.fromarray(_gradient()), "PNG")
    assert_fails("truncated-image", png[: len(png) // 2])


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
    assert_fails("image-too-large", _pillow_bytes(Image.fromarray(_gradient()), "PNG"), max_pixels=100)


def test_error_status() -> None:
    assert ImagingError("truncated-dicom", "cut").http_status == 422
    assert ImagingError("image-too-large", "big").http_status == 413
