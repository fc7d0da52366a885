"""De-identification of a DICOM header, and the de-identified dataset written back as a file.

Only the header is de-identified: the pixel data is stored as it was encoded.
"""

from __future__ import annotations

import io

import dicognito
import pydicom
from dicognito.anonymizer import Anonymizer
from pydicom.dataset import Dataset

from server.imaging.dicom_header import as_text
from server.imaging.errors import ImagingError

_IDENTIFYING_KEYWORDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "OtherPatientIDs",
    "InstitutionName",
    "ReferringPhysicianName",
    "AccessionNumber",
)


def deidentify(ds: Dataset, subject: str) -> str:
    """De-identify the header in place (dicognito, then the identifiers it kept, then private tags); pixels untouched.

    Returns the method, e.g. "dicognito 0.19.0; private tags removed".
    """
    originals = {keyword: as_text(ds.get(keyword)) for keyword in _IDENTIFYING_KEYWORDS}
    try:
        Anonymizer().anonymize(ds)
    except Exception as exc:  # never store or return a dataset that failed de-identification
        raise ImagingError(
            "invalid-dicom",
            f"{subject} could not be de-identified, so it is not stored. Export the image again from the PACS.",
        ) from exc
    for keyword, original in originals.items():
        if original and keyword in ds and as_text(ds.get(keyword)) == original:
            ds[keyword].value = ""
    ds.remove_private_tags()
    ds.preamble = b"\x00" * 128  # a preamble may carry another format's header (DICOM-TIFF), identifiers included
    return f"dicognito {dicognito.__version__}; private tags removed"


def dicom_bytes(ds: Dataset, subject: str) -> bytes:
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
