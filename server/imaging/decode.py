"""Decode one uploaded X-ray into a display-ready grey image, its pixel spacing and a de-identified copy.

The format is recognised from the bytes (the filename's suffix only helps to recognise a MetaImage header):
DICOM (Part 10 with the "DICM" prefix, or a bare dataset as a last resort), PNG, JPEG, BMP and TIFF through
Pillow, and single-file MetaImage (.mha), NRRD with attached data and NIfTI (.nii, .nii.gz) through SimpleITK.

Every image size is checked from the header before any pixel is decoded, so a small file that declares a huge
image (a decompression bomb) is refused without allocating it. Every failure is an ``ImagingError`` with a code
and a message for the clinician; no exception of a decoding library leaks out.

De-identification covers the DICOM header only: the pixel data is not altered, so text burned into the image
(see (0028,0301) Burned In Annotation) is out of scope and must be removed before upload.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import re
import struct
import tempfile
import threading
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import dicognito
import numpy as np
import pydicom
import SimpleITK as sitk
from dicognito.anonymizer import Anonymizer
from PIL import Image, ImageOps
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, apply_windowing, get_decoder
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from server.imaging.errors import ImagingError

ImageFormat = Literal["dicom", "png", "jpeg", "bmp", "tiff", "mha", "nrrd", "nifti"]
SpacingSource = Literal["PixelSpacing", "ImagerPixelSpacing", "header", "user", "none"]

DEFAULT_MAX_PIXELS = 60_000_000
ACCEPTED_FORMATS = "DICOM, PNG, JPEG, BMP, TIFF, MetaImage (.mha), NRRD (.nrrd) or NIfTI (.nii, .nii.gz)"

_FULL_SCALE = 65535
_LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601, as Pillow's convert("L")
_IDENTIFYING_KEYWORDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "OtherPatientIDs",
    "InstitutionName",
    "ReferringPhysicianName",
    "AccessionNumber",
)
_PIXEL_DATA_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_PILLOW_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM", b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_PILLOW_FORMATS: dict[str, ImageFormat] = {"PNG": "png", "JPEG": "jpeg", "MPO": "jpeg", "BMP": "bmp", "TIFF": "tiff"}
_PILLOW_OPENERS = ["PNG", "JPEG", "BMP", "TIFF"]  # the JPEG opener also returns MPO (camera JPEGs with previews)
_OTHER_IMAGE_MAGIC = {
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
    b"\x00\x00\x00\x0cjP  ": "JPEG 2000 (.jp2)",
    b"\xff\x4f\xff\x51": "JPEG 2000 codestream",
}
_METAIMAGE_FIRST_KEY = re.compile(rb"\A\s*(ObjectType|NDims|ObjectSubType|Comment|DimSize)\s*=")
_ITK_IO = {"mha": ("MetaImageIO", ".mha"), "nrrd": ("NrrdImageIO", ".nrrd"), "nifti": ("NiftiImageIO", ".nii")}


@dataclass(frozen=True, eq=False)
class DecodedImage:
    """One decoded upload.

    Attributes:
        pixels: (H, W) uint16, read-only. Display-ready grey with bone bright: the source's value range (for DICOM
            after the modality LUT, the first VOI LUT or window, and MONOCHROME1 inversion) stretched to 0..65535.
        width: W, columns.
        height: H, rows.
        format: the container the bytes were in.
        spacing_mm: (x, y) = (column spacing, row spacing) in mm per pixel, or None where unknown.
        spacing_source: where ``spacing_mm`` comes from: the DICOM "PixelSpacing" or "ImagerPixelSpacing", the
            MetaImage/NRRD/NIfTI "header", the "user", or "none".
        pixel_sha256: hex sha256 of the shape and the pixels (see ``pixel_digest``): the same picture uploaded
            twice, with other metadata or other de-identified UIDs, has the same digest.
        source_bytes_deidentified: the bytes to store: the de-identified DICOM file (pixel data untouched) for
            DICOM input, the original bytes for every other format.
        dicom: the de-identified dataset (DICOM input only).
        deid_method: how the DICOM header was de-identified, e.g. "dicognito 0.19.0; private tags removed".
        modality: DICOM Modality (e.g. "CR", "DX") where known.
        photometric: the source's colour model: DICOM PhotometricInterpretation, or the Pillow mode ("L", "I;16",
            "RGB", ...) for PNG/JPEG/BMP/TIFF; None for MetaImage/NRRD/NIfTI.
        bits_stored: bits per sample of the source (DICOM BitsStored; 8 or 16 for PNG, ...) where known.
        transfer_syntax: the DICOM transfer syntax UID (DICOM only).
    """

    pixels: np.ndarray = field(repr=False)
    width: int
    height: int
    format: ImageFormat
    spacing_mm: tuple[float, float] | None
    spacing_source: SpacingSource
    pixel_sha256: str
    source_bytes_deidentified: bytes = field(repr=False)
    dicom: Dataset | None = field(default=None, repr=False)
    deid_method: str | None = None
    modality: str | None = None
    photometric: str | None = None
    bits_stored: int | None = None
    transfer_syntax: str | None = None


def decode_image(
    data: bytes,
    *,
    filename: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    spacing_mm: tuple[float, float] | None = None,
) -> DecodedImage:
    """Decode an uploaded image file.

    Args:
        data: the whole file as uploaded.
        filename: the client's file name; used in messages and to recognise a MetaImage header, never to
            override what the bytes say.
        max_pixels: the largest accepted H * W, checked from the header before decoding.
        spacing_mm: a user-given (x, y) pixel spacing in mm; overrides the file's (source "user"). Both values
            must be finite and > 0.

    Returns:
        The decoded image; see ``DecodedImage``.

    Raises:
        ImagingError: whenever the bytes cannot be ingested; ``code`` says why.
    """
    user_spacing = _check_user_spacing(spacing_mm)
    subject = _subject(filename)
    image = _decode_any(data, filename, max_pixels, subject)
    if user_spacing is not None:
        image = replace(image, spacing_mm=user_spacing, spacing_source="user")
    return image


def pixel_digest(pixels: np.ndarray) -> str:
    """Hex sha256 of an (H, W) uint16 image: its shape, then its pixels as little-endian uint16, row-major."""
    height, width = pixels.shape
    digest = hashlib.sha256(f"{height}x{width}:uint16le:".encode())
    digest.update(np.ascontiguousarray(pixels, dtype="<u2").data)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------- dispatch


def _decode_any(data: bytes, filename: str | None, max_pixels: int, subject: str) -> DecodedImage:
    if not data:
        raise ImagingError("empty-file", f"{subject} is empty (0 bytes). Upload the image file again.")
    if data[128:132] == b"DICM":
        return _decode_dicom(data, max_pixels, subject, force=False)
    if data.startswith(b"NRRD"):
        return _decode_itk(data, "nrrd", max_pixels, subject)
    if _nifti_header(data) is not None:
        return _decode_itk(data, "nifti", max_pixels, subject)
    if _METAIMAGE_FIRST_KEY.match(data[:256]) or (
        _suffix(filename) in (".mha", ".mhd") and b"ElementDataFile" in data[:65536]
    ):
        return _decode_itk(data, "mha", max_pixels, subject)
    if data.startswith(_PILLOW_MAGIC):
        return _decode_pillow(data, max_pixels, subject)
    _refuse_known_other_format(data, subject)
    if _is_bare_dicom_image(data):
        return _decode_dicom(data, max_pixels, subject, force=True)
    raise ImagingError("not-an-image", f"{subject} is not an image this service can read. Upload {ACCEPTED_FORMATS}.")


def _refuse_known_other_format(data: bytes, subject: str) -> None:
    for magic, name in _OTHER_IMAGE_MAGIC.items():
        if data.startswith(magic):
            raise ImagingError(
                "unsupported-format", f"{subject} is a {name} file, which is not accepted. Upload {ACCEPTED_FORMATS}."
            )
    if len(data) >= 348 and data[344:348] == b"ni1\x00":
        raise ImagingError(
            "unsupported-format",
            f"{subject} is a NIfTI/Analyze header with a separate .img data file, which is not accepted. "
            "Save the image as a single .nii or .nii.gz file.",
        )


def _check_user_spacing(spacing_mm: Sequence[float] | None) -> tuple[float, float] | None:
    if spacing_mm is None:
        return None
    try:
        x, y = (float(value) for value in spacing_mm)
    except (TypeError, ValueError):
        x = y = math.nan
    if not (math.isfinite(x) and math.isfinite(y) and x > 0 and y > 0):
        raise ImagingError(
            "bad-spacing",
            f"The pixel spacing {spacing_mm!r} is not valid: give two finite numbers greater than 0, "
            "in millimetres per pixel (column spacing, row spacing), or leave it out if it is unknown.",
        )
    return x, y


def _subject(filename: str | None) -> str:
    name = Path(filename).name if filename else ""
    if not name:
        return "The uploaded file"
    return f"The file '{name if len(name) <= 80 else name[:77] + '...'}'"


def _suffix(filename: str | None) -> str:
    return Path(filename).suffix.lower() if filename else ""


def _finish(pixels: np.ndarray, **fields: object) -> DecodedImage:
    """Build the result from an (H, W) uint16 image and the format's fields; freezes the array."""
    pixels.flags.writeable = False
    height, width = pixels.shape
    return DecodedImage(pixels=pixels, width=width, height=height, pixel_sha256=pixel_digest(pixels), **fields)  # type: ignore[arg-type]


def _check_size(width: int, height: int, max_pixels: int, subject: str) -> None:
    if width <= 0 or height <= 0:
        raise ImagingError(
            "empty-image", f"{subject} declares an empty image ({width} x {height} pixels). Upload a real image."
        )
    if width * height > max_pixels:
        raise ImagingError(
            "image-too-large",
            f"{subject} declares a {width} x {height} image ({width * height:,} pixels); the limit is "
            f"{max_pixels:,} pixels. Reduce the resolution or crop the image before uploading.",
        )


# ------------------------------------------------------------------------------------------ grey scales


def _value_range(values: np.ndarray) -> tuple[float, float]:
    """Smallest and largest finite value of an array, or (0, 0) when it has none."""
    if np.issubdtype(values.dtype, np.floating):
        finite = values[np.isfinite(values)]
        if finite.size == 0:
            return 0.0, 0.0
        return float(finite.min()), float(finite.max())
    return float(values.min()), float(values.max())


def _stretch(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """(H, W) real values -> (H, W) uint16: lo..hi mapped linearly onto 0..65535, clipped; NaN and a flat image -> 0."""
    if not hi > lo:
        return np.zeros(values.shape, np.uint16)
    scaled = (np.asarray(values, np.float64) - lo) * (_FULL_SCALE / (hi - lo))
    np.nan_to_num(scaled, copy=False, nan=0.0)
    np.clip(scaled, 0, _FULL_SCALE, out=scaled)
    return np.rint(scaled).astype(np.uint16)


def _luminance(rgb: np.ndarray, full_scale: float) -> np.ndarray:
    """(H, W, >=3) colour with channels 0..full_scale -> (H, W) uint16 BT.601 luminance on 0..65535."""
    luma = rgb[..., :3].astype(np.float64) @ _LUMA_WEIGHTS
    return _stretch(luma, 0.0, float(full_scale))


# ------------------------------------------------------------------------------------------------ DICOM


class _ThreadWarnings(logging.Handler):
    """Collects the pydicom logger's warnings raised by this thread only (other uploads may decode concurrently)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self._thread = threading.get_ident()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self._thread:
            self.messages.append(record.getMessage())


@contextmanager
def _pydicom_warnings() -> Iterator[list[str]]:
    handler = _ThreadWarnings()
    logger = logging.getLogger("pydicom")
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)


def _is_bare_dicom_image(data: bytes) -> bool:
    """Whether bytes without the "DICM" prefix still parse as a DICOM dataset that holds an image."""
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        return any(keyword in ds for keyword in _PIXEL_DATA_KEYWORDS) and "Rows" in ds and "Columns" in ds
    except Exception:  # a probe of arbitrary bytes: any failure just means "not DICOM"
        return False


def _decode_dicom(data: bytes, max_pixels: int, subject: str, *, force: bool) -> DecodedImage:
    ds = _read_dicom(data, max_pixels, subject, force=force)
    _check_dicom_geometry(ds, max_pixels, subject)
    transfer_syntax = _transfer_syntax(ds, subject)
    stored, photometric_out = _decode_dicom_pixels(ds, transfer_syntax, subject)
    pixels = _dicom_grey(stored, photometric_out, ds, subject)
    spacing, source = _dicom_spacing(ds)
    facts = {
        "modality": _optional_str(ds.get("Modality")),
        "photometric": _optional_str(ds.get("PhotometricInterpretation")),
        "bits_stored": _optional_int(ds.get("BitsStored")),
        "transfer_syntax": str(transfer_syntax),
    }
    deid_method = _deidentify(ds, subject)
    return _finish(
        pixels,
        format="dicom",
        spacing_mm=spacing,
        spacing_source=source,
        source_bytes_deidentified=_dicom_bytes(ds, subject),
        dicom=ds,
        deid_method=deid_method,
        **facts,
    )


def _read_dicom(data: bytes, max_pixels: int, subject: str, *, force: bool) -> Dataset:
    """Parse the bytes; a file cut short anywhere (header or pixel data) is refused as truncated."""
    _check_deflated_size(data, max_pixels, subject)
    source = _ReadTracker(data)
    with _pydicom_warnings() as warnings:
        try:
            ds = pydicom.dcmread(source, force=force)
        except EOFError as exc:
            raise _truncated_dicom(subject) from exc
        except Exception as exc:  # pydicom raises many types on damaged bytes; none may leak
            raise ImagingError(
                "invalid-dicom",
                f"{subject} starts like a DICOM file but its header cannot be read: the file is damaged. "
                "Export the image again from the PACS or modality.",
            ) from exc
    ended_early = any("End of file reached" in message for message in warnings) or _has_short_element(ds)
    # pydicom stops silently when the data ends inside an element's header; a complete file can end with a
    # partial read too (the search for a delimiter), but then it has its pixel data.
    if ended_early or (source.partial_read and not _has_pixel_data(ds)):
        raise _truncated_dicom(subject)
    return ds


class _ReadTracker(io.BytesIO):
    """Bytes that remember whether a read returned some, but not all, of the bytes asked for."""

    partial_read = False

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        if size is not None and 0 < len(chunk) < size:
            self.partial_read = True
        return chunk


def _has_pixel_data(ds: Dataset) -> bool:
    return any(keyword in ds and ds[keyword].value for keyword in _PIXEL_DATA_KEYWORDS)


def _truncated_dicom(subject: str) -> ImagingError:
    return ImagingError(
        "truncated-dicom",
        f"{subject} is an incomplete DICOM file: it ends before its data does (the upload or the export was "
        "cut short). Upload the complete file again.",
    )


def _has_short_element(ds: Dataset) -> bool:
    """Whether a top-level element holds fewer bytes than its header declares (the file was cut inside it)."""
    return any(
        isinstance(elem, RawDataElement)
        and elem.length != 0xFFFFFFFF
        and isinstance(elem.value, bytes)
        and len(elem.value) < elem.length
        for elem in ds.elements()
    )


def _check_deflated_size(data: bytes, max_pixels: int, subject: str) -> None:
    """Deflated DICOM is inflated whole before any element is read: refuse one that inflates beyond any image.

    A limit of 8 bytes per pixel (64-bit grey or 16-bit RGBA) plus 16 MiB of header covers every real image.
    """
    meta_end = _file_meta_end(data)
    if meta_end is None or DeflatedExplicitVRLittleEndian.encode() not in data[132:meta_end]:
        return
    limit = 8 * max_pixels + 16 * 2**20
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    inflated, chunk = 0, data[meta_end:]
    try:
        while chunk and inflated <= limit:
            inflated += len(inflater.decompress(chunk, 2**20))
            chunk = inflater.unconsumed_tail
    except zlib.error as exc:
        raise _truncated_dicom(subject) from exc
    if inflated > limit:
        raise ImagingError(
            "image-too-large",
            f"{subject} is a deflated DICOM file that expands beyond {limit:,} bytes, more than any image within "
            f"the limit of {max_pixels:,} pixels. Export it uncompressed or with image compression.",
        )


def _file_meta_end(data: bytes) -> int | None:
    """Offset of the dataset after a Part-10 file meta group, from (0002,0000) Group Length; None if absent."""
    if data[128:132] != b"DICM" or data[132:138] != b"\x02\x00\x00\x00UL":
        return None
    return 144 + int.from_bytes(data[140:144], "little")


def _check_dicom_geometry(ds: Dataset, max_pixels: int, subject: str) -> None:
    """Refuse, before decoding, what has no pixels, more than one frame or too many pixels."""
    if not _has_pixel_data(ds):
        raise ImagingError(
            "no-pixel-data",
            f"{subject} is a DICOM file without an image (no Pixel Data), e.g. a report or a structured document. "
            "Upload the DICOM image itself.",
        )
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
        frames = int(ds.get("NumberOfFrames") or 1)
    except (AttributeError, TypeError, ValueError) as exc:
        raise ImagingError(
            "invalid-dicom",
            f"{subject} has pixel data but no valid Rows/Columns, so its image size is unknown. "
            "Export the image again from the PACS or modality.",
        ) from exc
    if frames > 1:
        raise ImagingError(
            "multi-frame",
            f"{subject} holds {frames} frames (a cine loop or a volume); landmarks are placed on a single image. "
            "Export the one frame you want as its own image.",
        )
    _check_size(columns, rows, max_pixels, subject)


def _transfer_syntax(ds: Dataset, subject: str) -> UID:
    """The dataset's transfer syntax, inferred from how it was read when the file meta lacks it (bare datasets);
    refused when no installed decoder handles it."""
    file_meta = getattr(ds, "file_meta", None) or FileMetaDataset()
    uid = file_meta.get("TransferSyntaxUID")
    if uid is None:
        implicit, little = ds.original_encoding
        uid = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
        file_meta.TransferSyntaxUID = uid
        ds.file_meta = file_meta
    uid = UID(str(uid))
    try:
        decoder = get_decoder(uid)
        available = decoder.is_available
    except (NotImplementedError, ValueError):
        available = False
    if not available:
        name = uid.name if uid.name != str(uid) else "an unknown or private one"
        raise ImagingError(
            "unsupported-transfer-syntax",
            f"{subject} is encoded with the transfer syntax {name} ({uid}), which this service cannot decode. "
            "Export the image uncompressed, or compressed with JPEG, JPEG-LS, JPEG 2000 or RLE, and upload it again.",
        )
    return uid


def _decode_dicom_pixels(ds: Dataset, transfer_syntax: UID, subject: str) -> tuple[np.ndarray, str]:
    """Stored values, (H, W) grey or (H, W, 3) RGB (YBR converted), and the photometric interpretation they are in.

    Decodes through the decoder rather than ``ds.pixel_array`` so the dataset does not keep the array alive.
    """
    try:
        stored, meta = get_decoder(transfer_syntax).as_array(ds, index=0)
    except Exception as exc:  # the decoder plugins raise many types on damaged data; none may leak
        if "less than expected" in str(exc):
            raise _truncated_dicom(subject) from exc
        raise ImagingError(
            "invalid-dicom",
            f"{subject} has pixel data that cannot be decoded: the file is damaged or its image header does not "
            "match its pixel data. "
            "Export the image again from the PACS or modality.",
        ) from exc
    return stored, str(meta.get("photometric_interpretation", ds.get("PhotometricInterpretation", ""))).upper()


def _dicom_grey(stored: np.ndarray, photometric: str, ds: Dataset, subject: str) -> np.ndarray:
    """Stored values -> (H, W) uint16 display grey (bone bright); colour becomes its luminance."""
    if photometric in ("MONOCHROME1", "MONOCHROME2") and stored.ndim == 2:
        return _monochrome_display(stored, ds, invert=photometric == "MONOCHROME1")
    if photometric == "PALETTE COLOR" and stored.ndim == 2:
        try:
            rgb = apply_color_lut(stored, ds)
        except Exception as exc:  # a malformed palette raises many types
            raise ImagingError(
                "invalid-dicom",
                f"{subject} is a palette-colour image whose palette cannot be read. Export it as grey or RGB.",
            ) from exc
        return _luminance_stretched(rgb)  # palettes declare 16 bits yet often hold 8-bit entries
    if photometric == "RGB" and stored.ndim == 3 and stored.shape[-1] == 3:
        return _luminance(stored, 2 ** int(ds.get("BitsStored") or 8) - 1)
    raise ImagingError(
        "unsupported-photometric",
        f"{subject} has a photometric interpretation '{photometric}' with pixel array shape {stored.shape} that "
        "this service cannot turn into a grey image. Export it as MONOCHROME2 (or RGB).",
    )


def _monochrome_display(stored: np.ndarray, ds: Dataset, *, invert: bool) -> np.ndarray:
    """Modality LUT/rescale, then the first VOI LUT or window (else the real min..max), then MONOCHROME1 inversion.

    The inversion mirrors values inside the display range (lo + hi - v) before stretching, so a MONOCHROME1 image
    and its inverted MONOCHROME2 twin give the same pixels.
    """
    try:
        values = apply_modality_lut(stored, ds)
    except Exception:  # a malformed optional Modality LUT: show the stored values instead of refusing the image
        values = stored
    values, lo, hi = _apply_voi(values, ds)
    values = np.asarray(values, np.float64)
    if invert:
        values = (lo + hi) - values
    return _stretch(values, lo, hi)


def _apply_voi(values: np.ndarray, ds: Dataset) -> tuple[np.ndarray, float, float]:
    """The first VOI LUT or window applied, with the display range (lo, hi) of the result.

    A window's display range is its full output range (so the window, not the data, fills 0..65535); a VOI LUT's,
    or the unwindowed data's, is the real min..max of the values. A malformed VOI falls back to min..max.
    """
    if _has_voi_lut(ds) or _has_window(ds):
        try:
            with np.errstate(over="ignore"):
                shown = apply_voi_lut(values, ds, index=0)
                if not _has_voi_lut(ds):
                    ends = apply_windowing(np.array([-1e12, 1e12]), ds, index=0)
                    return shown, float(ends.min()), float(ends.max())
            return (shown, *_value_range(shown))
        except Exception:  # a malformed optional VOI (width < 1, odd LUT): fall back to the data's range
            pass
    return (values, *_value_range(values))


def _has_voi_lut(ds: Dataset) -> bool:
    sequence = ds.get("VOILUTSequence")
    return bool(sequence) and "LUTDescriptor" in sequence[0] and "LUTData" in sequence[0]


def _has_window(ds: Dataset) -> bool:
    return ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None


def _dicom_spacing(ds: Dataset) -> tuple[tuple[float, float] | None, SpacingSource]:
    """(x, y) = (column, row) spacing in mm from PixelSpacing, else ImagerPixelSpacing; zero or absent = unknown.

    ImagerPixelSpacing is measured at the detector, so for projection radiographs it includes the geometric
    magnification; it is still the best the file offers when PixelSpacing is absent.
    """
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        pair = _positive_pair(ds, keyword)
        if pair is not None:
            row_spacing, column_spacing = pair
            return (column_spacing, row_spacing), keyword  # type: ignore[return-value]
    return None, "none"


def _positive_pair(ds: Dataset, keyword: str) -> tuple[float, float] | None:
    try:
        values = [float(value) for value in ds.get(keyword) or ()]
    except (TypeError, ValueError):
        return None
    if len(values) != 2 or not all(math.isfinite(value) and value > 0 for value in values):
        return None
    return values[0], values[1]


def _deidentify(ds: Dataset, subject: str) -> str:
    """De-identify the header in place (dicognito, then the identifiers it kept, then private tags); pixels untouched.

    Returns the method, e.g. "dicognito 0.19.0; private tags removed".
    """
    originals = {keyword: _text(ds.get(keyword)) for keyword in _IDENTIFYING_KEYWORDS}
    try:
        Anonymizer().anonymize(ds)
    except Exception as exc:  # never store or return a dataset that failed de-identification
        raise ImagingError(
            "invalid-dicom",
            f"{subject} could not be de-identified, so it is not stored. Export the image again from the PACS.",
        ) from exc
    for keyword, original in originals.items():
        if original and keyword in ds and _text(ds.get(keyword)) == original:
            ds[keyword].value = ""
    ds.remove_private_tags()
    ds.preamble = b"\x00" * 128  # a preamble may carry another format's header (DICOM-TIFF), identifiers included
    return f"dicognito {dicognito.__version__}; private tags removed"


def _dicom_bytes(ds: Dataset, subject: str) -> bytes:
    """The dataset as a Part-10 file (a bare dataset gets its file meta), pixel data as it was encoded."""
    for enforce_file_format in (True, False):
        buffer = io.BytesIO()
        try:
            pydicom.dcmwrite(buffer, ds, enforce_file_format=enforce_file_format)
            return buffer.getvalue()
        except Exception:  # a bare dataset may lack what the file meta needs; try writing it as read
            continue
    raise ImagingError(
        "invalid-dicom", f"{subject} could not be written back after de-identification. Export the image again."
    )


def _text(value: object) -> str:
    return "" if value is None else str(value).strip()


def _optional_str(value: object) -> str | None:
    text = _text(value)
    return text or None


def _optional_int(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


# ----------------------------------------------------------------------------------- PNG/JPEG/BMP/TIFF


def _decode_pillow(data: bytes, max_pixels: int, subject: str) -> DecodedImage:
    image = _open_pillow(data, max_pixels, subject)
    image_format = _PILLOW_FORMATS[str(image.format)]
    try:
        image.load()
        if image_format in ("jpeg", "tiff"):
            image = ImageOps.exif_transpose(image)  # as every viewer shows it
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError... on damaged data
        raise _truncated_image(subject) from exc
    mode = image.mode
    try:
        pixels = _pillow_grey(image)
    except ValueError as exc:  # a colour mode Pillow cannot convert to RGB
        raise ImagingError(
            "unsupported-photometric",
            f"{subject} uses the colour mode '{mode}', which cannot be turned into a grey image. "
            "Save it as grey or RGB.",
        ) from exc
    return _finish(
        pixels,
        format=image_format,
        spacing_mm=None,
        spacing_source="none",
        source_bytes_deidentified=data,
        photometric=mode,
        bits_stored=16 if mode.startswith("I;16") else 32 if mode in ("I", "F") else 1 if mode == "1" else 8,
    )


def _open_pillow(data: bytes, max_pixels: int, subject: str) -> Image.Image:
    """Open (header only), check format, size and frames, and verify the file's integrity on a separate copy.

    Pillow's own decompression-bomb guard (module-wide ``Image.MAX_IMAGE_PIXELS``) is left as it is, since
    uploads decode concurrently; ``max_pixels`` is checked here instead, before any pixel is decoded.
    """
    declared = _declared_size(data)
    if declared is not None:
        _check_size(*declared, max_pixels, subject)
    try:
        image = Image.open(io.BytesIO(data), formats=_PILLOW_OPENERS)
    except Image.DecompressionBombError as exc:
        raise ImagingError(
            "image-too-large",
            f"{subject} declares an image too large to decode safely. "
            "Reduce the resolution or crop the image before uploading.",
        ) from exc
    except Exception as exc:  # UnidentifiedImageError, SyntaxError, struct.error... on damaged headers
        raise _truncated_image(subject) from exc
    _check_size(image.width, image.height, max_pixels, subject)
    if image.format == "TIFF" and getattr(image, "n_frames", 1) > 1:
        raise ImagingError(
            "multi-frame",
            f"{subject} is a TIFF with {image.n_frames} pages; landmarks are placed on a single image. "
            "Save the one page you want as its own file.",
        )
    try:
        Image.open(io.BytesIO(data), formats=_PILLOW_OPENERS).verify()
    except Exception as exc:  # verify raises whatever the format's reader raises on a damaged file
        raise _truncated_image(subject) from exc
    return image


def _declared_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG or BMP header, read before Pillow (which refuses a 0 x 0 image as unidentified)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return width, height
    if data.startswith(b"BM") and len(data) >= 26 and int.from_bytes(data[14:18], "little") >= 40:
        width, height = struct.unpack("<ii", data[18:26])
        return abs(width), abs(height)  # a negative height means rows stored top-down
    return None


def _truncated_image(subject: str) -> ImagingError:
    return ImagingError(
        "truncated-image",
        f"{subject} is damaged or incomplete: its image data cannot be read to the end. Upload the complete "
        "file again.",
    )


def _pillow_grey(image: Image.Image) -> np.ndarray:
    """Any Pillow mode -> (H, W) uint16: 8-bit grey x257, 16/32-bit and float grey stretched from their real
    range, colour and palette as BT.601 luminance (Pillow's "L") x257."""
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        values = np.asarray(image)
        return _stretch(values, *_value_range(values))
    grey = image if image.mode == "L" else image.convert("RGB").convert("L")
    return np.asarray(grey, np.uint16) * np.uint16(257)


# ------------------------------------------------------------------------------------ MHA / NRRD / NIfTI


def _nifti_header(data: bytes) -> bytes | None:
    """The first 540 bytes of a single-file NIfTI-1/2 image (inflated when gzipped), or None if it is not one."""
    head = data[:540]
    if data.startswith(b"\x1f\x8b"):
        try:
            head = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data, 540)
        except zlib.error:
            return None
    is_nifti1 = len(head) >= 348 and head[344:348] == b"n+1\x00" and _int32_either_endian(head[:4]) == 348
    is_nifti2 = len(head) >= 540 and head[4:8] == b"n+2\x00" and _int32_either_endian(head[:4]) == 540
    return head if is_nifti1 or is_nifti2 else None


def _int32_either_endian(raw: bytes) -> int:
    little = int.from_bytes(raw, "little")
    return little if little in (348, 540) else int.from_bytes(raw, "big")


def _check_itk_header(data: bytes, kind: str, subject: str) -> bool:
    """Refuse headers that point to other files (a detached .raw, or any path on the server); return whether
    the header states a pixel spacing (ITK reports 1.0 when it does not)."""
    if kind == "nifti":
        head = _nifti_header(data) or b""
        is_nifti1 = head[344:348] == b"n+1\x00"
        order = "<" if int.from_bytes(head[:4], "little") in (348, 540) else ">"
        pixdim = np.frombuffer(head, f"{order}f4", 2, 80) if is_nifti1 else np.frombuffer(head, f"{order}f8", 2, 112)
        return bool(np.all(np.isfinite(pixdim)) and np.all(pixdim > 0))
    header = _text_header(data, kind)
    if kind == "mha":
        data_file = re.search(r"^\s*ElementDataFile\s*=\s*(\S*)", header, re.MULTILINE)
        if data_file is None:
            raise _truncated_image(subject)
        if data_file.group(1).upper() != "LOCAL":
            raise ImagingError(
                "unsupported-format",
                f"{subject} is a MetaImage header whose pixels are in a separate file ({data_file.group(1)}); "
                "only single-file .mha is accepted. Save the image as .mha.",
            )
        return re.search(r"^\s*Element(Spacing|Size)\s*=", header, re.MULTILINE) is not None
    if re.search(r"^\s*data\s?file\s*:", header, re.MULTILINE | re.IGNORECASE):
        raise ImagingError(
            "unsupported-format",
            f"{subject} is an NRRD header whose pixels are in a separate file; only .nrrd with attached data is "
            "accepted. Save the image as a single .nrrd file.",
        )
    return re.search(r"^\s*(spacings|space directions)\s*:", header, re.MULTILINE) is not None


def _text_header(data: bytes, kind: str) -> str:
    """The text header of a MetaImage (up to ElementDataFile's line) or an NRRD (up to the blank line)."""
    head = data[:65536].decode("latin-1")
    if kind == "mha":
        end = re.search(r"^\s*ElementDataFile\s*=.*$", head, re.MULTILINE)
        return head[: end.end()] if end else head
    return re.split(r"\r?\n\r?\n", head, maxsplit=1)[0]


def _decode_itk(data: bytes, kind: str, max_pixels: int, subject: str) -> DecodedImage:
    spacing_stated = _check_itk_header(data, kind, subject)
    image = _read_itk(data, kind, max_pixels, subject)
    values = sitk.GetArrayFromImage(image)  # (..., H, W) or (..., H, W, components)
    components = image.GetNumberOfComponentsPerPixel()
    values = values.reshape(image.GetHeight(), image.GetWidth(), *((components,) if components > 1 else ()))
    if np.iscomplexobj(values) or components not in (1, 3, 4):
        raise ImagingError(
            "unsupported-photometric",
            f"{subject} has {components} {values.dtype} values per pixel; expected a grey or RGB image.",
        )
    pixels = _stretch(values, *_value_range(values)) if components == 1 else _luminance_stretched(values)
    x, y = image.GetSpacing()[:2]
    known = spacing_stated and all(math.isfinite(value) and value > 0 for value in (x, y))
    return _finish(
        pixels,
        format=kind,
        spacing_mm=(float(x), float(y)) if known else None,
        spacing_source="header" if known else "none",
        source_bytes_deidentified=data,
        bits_stored=values.dtype.itemsize * 8,
    )


def _luminance_stretched(rgb: np.ndarray) -> np.ndarray:
    """(H, W, >=3) colour of any range -> (H, W) uint16 luminance stretched from its real range."""
    luma = rgb[..., :3].astype(np.float64) @ _LUMA_WEIGHTS
    return _stretch(luma, *_value_range(luma))


def _read_itk(data: bytes, kind: str, max_pixels: int, subject: str) -> sitk.Image:
    """Read through a temporary file with the suffix SimpleITK needs, checking the declared size first."""
    io_name, suffix = _ITK_IO[kind]
    if kind == "nifti" and data.startswith(b"\x1f\x8b"):
        suffix = ".nii.gz"
    with tempfile.TemporaryDirectory(prefix="kamp-imaging-") as folder:
        path = Path(folder) / f"upload{suffix}"
        path.write_bytes(data)
        reader = sitk.ImageFileReader()
        reader.SetImageIO(io_name)
        reader.SetFileName(str(path))
        try:
            reader.ReadImageInformation()
        except RuntimeError as exc:
            raise _truncated_image(subject) from exc
        _check_itk_size(reader.GetSize(), max_pixels, subject)
        try:
            return reader.Execute()
        except RuntimeError as exc:
            raise _truncated_image(subject) from exc


def _check_itk_size(size: Sequence[int], max_pixels: int, subject: str) -> None:
    """A 2-D image, or 3-D and more with a single slice (every size after the first two is 1)."""
    if len(size) > 2 and any(extent != 1 for extent in size[2:]):
        raise ImagingError(
            "not-2d",
            f"{subject} is a {len(size)}-D volume of size {' x '.join(map(str, size))}; landmarks are placed on a "
            "single 2-D image. Save one slice or projection as its own file.",
        )
    _check_size(int(size[0]), int(size[1]), max_pixels, subject)
