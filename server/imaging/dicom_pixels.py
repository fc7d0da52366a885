"""DICOM pixels: the checks before decoding (geometry, transfer syntax), the decode, and the way to display grey
(modality LUT, the first VOI LUT or window, MONOCHROME1 inversion; colour as its luminance)."""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, apply_windowing, get_decoder
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from server.imaging.dicom_file import has_pixel_data, truncated_dicom
from server.imaging.errors import ImagingError
from server.imaging.grey import Transform, block_range, luminance, luminance_stretched, stretch
from server.imaging.refusals import check_size
from server.imaging.types import ImageLimits


def check_dicom_geometry(ds: Dataset, limits: ImageLimits, subject: str) -> None:
    """Refuse, before decoding, what has no pixels, more than one frame, too many pixels or too many bytes."""
    if not has_pixel_data(ds):
        raise ImagingError(
            "no-pixel-data",
            f"{subject} is a DICOM file without an image (no Pixel Data), e.g. a report or a structured document. "
            "Upload the DICOM image itself.",
        )
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
        frames = int(ds.get("NumberOfFrames") or 1)
        # pydicom's array: samples x whole bytes per sample (1-bit data is unpacked to a byte).
        bytes_per_pixel = int(ds.get("SamplesPerPixel") or 1) * max(1, -(-int(ds.get("BitsAllocated") or 16) // 8))
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
    check_size(columns, rows, limits, subject, bytes_per_pixel)


def decodable_transfer_syntax(ds: Dataset, subject: str) -> UID:
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


def decode_dicom_pixels(ds: Dataset, transfer_syntax: UID, subject: str) -> tuple[np.ndarray, str]:
    """Stored values, (H, W) grey or (H, W, 3) RGB (YBR converted), and the photometric interpretation they are in.

    Decodes through the decoder rather than ``ds.pixel_array`` so the dataset does not keep the array alive.
    """
    try:
        stored, meta = get_decoder(transfer_syntax).as_array(ds, index=0)
    except Exception as exc:  # the decoder plugins raise many types on damaged data; none may leak
        if "less than expected" in str(exc):
            raise truncated_dicom(subject) from exc
        raise ImagingError(
            "invalid-dicom",
            f"{subject} has pixel data that cannot be decoded: the file is damaged or its image header does not "
            "match its pixel data. "
            "Export the image again from the PACS or modality.",
        ) from exc
    return stored, str(meta.get("photometric_interpretation", ds.get("PhotometricInterpretation", ""))).upper()


def dicom_grey(stored: np.ndarray, photometric: str, ds: Dataset, subject: str) -> np.ndarray:
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
        return luminance_stretched(rgb)  # palettes declare 16 bits yet often hold 8-bit entries
    if photometric == "RGB" and stored.ndim == 3 and stored.shape[-1] == 3:
        return luminance(stored, 2 ** int(ds.get("BitsStored") or 8) - 1)
    raise ImagingError(
        "unsupported-photometric",
        f"{subject} has a photometric interpretation '{photometric}' with pixel array shape {stored.shape} that "
        "this service cannot turn into a grey image. Export it as MONOCHROME2 (or RGB).",
    )


def _monochrome_display(stored: np.ndarray, ds: Dataset, *, invert: bool) -> np.ndarray:
    """Modality LUT/rescale, then the first VOI LUT or window (else the real min..max), then MONOCHROME1 inversion,
    block by block (pydicom's LUTs make float64 copies of what they get: 8 bytes per pixel of the whole image).

    The inversion mirrors values inside the display range (lo + hi - v) before stretching, so a MONOCHROME1 image
    and its inverted MONOCHROME2 twin give the same pixels.
    """
    shown, window = _display_steps(ds, stored[:1])
    lo, hi = window if window is not None else block_range(stored, shown)
    return stretch(stored, lo, hi, mirror=invert, transform=shown)


def _display_steps(ds: Dataset, probe: np.ndarray) -> tuple[Transform, tuple[float, float] | None]:
    """Stored values -> displayed values (modality LUT, then the first VOI LUT or window), and the display range
    where a window fixes it (its full output range, so the window, not the data, fills 0..65535; None: the real
    min..max of the result). Each step is tried on `probe` (the first row): a malformed optional Modality LUT is
    skipped (the stored values shown), a malformed VOI (width < 1, odd LUT) falls back to min..max."""

    def modality(values: np.ndarray) -> np.ndarray:
        return apply_modality_lut(values, ds)

    def voi(values: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            return apply_voi_lut(modality(values), ds, index=0)

    if not _works(modality, probe):
        modality = _unchanged
    if not (_has_voi_lut(ds) or _has_window(ds)) or not _works(voi, probe):
        return modality, None
    if _has_voi_lut(ds):
        return voi, None
    ends = apply_windowing(np.array([-1e12, 1e12]), ds, index=0)
    return voi, (float(ends.min()), float(ends.max()))


def _works(step: Transform, probe: np.ndarray) -> bool:
    try:
        step(probe)
    except Exception:  # the LUT and windowing functions raise many types on malformed attributes
        return False
    return True


def _unchanged(values: np.ndarray) -> np.ndarray:
    return values


def _has_voi_lut(ds: Dataset) -> bool:
    sequence = ds.get("VOILUTSequence")
    return bool(sequence) and "LUTDescriptor" in sequence[0] and "LUTData" in sequence[0]


def _has_window(ds: Dataset) -> bool:
    return ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None
