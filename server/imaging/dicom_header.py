"""Plain values read from a DICOM header: the pixel spacing with its source, and optional text or numbers."""

from __future__ import annotations

from pydicom.dataset import Dataset

from server.imaging.types import SpacingSource, plausible_spacing


def dicom_spacing(ds: Dataset) -> tuple[tuple[float, float] | None, SpacingSource]:
    """(x, y) = (column, row) spacing in mm from PixelSpacing, else ImagerPixelSpacing; absent or outside
    SPACING_RANGE_MM (zero, say) = unknown: a header's mistake must not turn into mm figures.

    ImagerPixelSpacing is measured at the detector, so for projection radiographs it includes the geometric
    magnification; it is still the best the file offers when PixelSpacing is absent.
    """
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        pair = _plausible_pair(ds, keyword)
        if pair is not None:
            row_spacing, column_spacing = pair
            return (column_spacing, row_spacing), keyword  # type: ignore[return-value]
    return None, "none"


def _plausible_pair(ds: Dataset, keyword: str) -> tuple[float, float] | None:
    try:
        values = [float(value) for value in ds.get(keyword) or ()]
    except (TypeError, ValueError):
        return None
    if len(values) != 2 or not plausible_spacing(*values):
        return None
    return values[0], values[1]


def as_text(value: object) -> str:
    return "" if value is None else str(value).strip()


def optional_str(value: object) -> str | None:
    return as_text(value) or None


def optional_int(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None
