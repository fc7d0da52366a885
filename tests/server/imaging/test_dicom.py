"""Imaging ingest of DICOM on real files of pydicom-data and deid-data: spacing, transfer syntaxes, photometric
interpretations, de-identification and the pixel hash."""

from __future__ import annotations

import copy
import io
from collections.abc import Callable

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import DeflatedExplicitVRLittleEndian, JPEGBaseline8Bit, JPEGLosslessSV1, JPEGLSLossless

from server.imaging import DecodedImage, decode_image, pixel_digest
from server.imaging.deid import METHOD

from .cases import IDENTIFYING, dataset, stretched, to_bytes

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

    source.PixelSpacing = [1e-4, 1e-4]  # no radiograph has 0.1 micrometre pixels: a header's mistake, unknown
    assert decode_image(to_bytes(source)).spacing_source == "ImagerPixelSpacing"
    source.ImagerPixelSpacing = [0.1, 80.0]
    image = decode_image(to_bytes(source))
    assert image.spacing_mm is None and image.spacing_source == "none"


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
