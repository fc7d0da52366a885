"""The Clean Descriptors option's free-text descriptions, kept for a clinic that chooses to keep them.

De-identification removes them (server.imaging.deid): a study description can hold a patient's name, as the
outside attack of issue 17 found. A clinic whose descriptions are known to be clean, and that needs them (to tell
a lateral from a PA cephalogram in a viewer, say), may keep them verbatim; the stored file then records that the
option was not applied ((0012,0063) says "descriptors kept", (0012,0064) lacks the Clean Descriptors code).
"""

from __future__ import annotations

from dataclasses import replace

from pydicom.dataset import Dataset

from server.imaging.deid import dicom_bytes, record_method
from server.imaging.types import DecodedImage

#: The descriptions kept: attributes of PS3.15 Table E.1-1 that the Clean Descriptors option cleans, short text
#: that a viewer shows and that describe the image, not the patient.
DESCRIPTORS = (
    "StudyDescription",
    "SeriesDescription",
    "ProtocolName",
    "ImageComments",
    "AcquisitionDeviceProcessingDescription",
)


def descriptors_of(source: Dataset) -> dict[str, str]:
    """The non-empty ``DESCRIPTORS`` of an uploaded dataset, as text, by keyword."""
    found = {keyword: str(source.get(keyword, "") or "").strip() for keyword in DESCRIPTORS}
    return {keyword: text for keyword, text in found.items() if text}


def with_descriptors(image: DecodedImage) -> DecodedImage:
    """`image` (a de-identified DICOM decode) with its source's descriptors written back, the method record
    changed to say so and its stored file rewritten; any other image as it is."""
    if image.dicom is None or not image.descriptors:
        return image
    ds = shallow_copy(image.dicom)
    for keyword, text in image.descriptors.items():
        setattr(ds, keyword, text)
    record_method(ds, descriptors_kept=True)
    return replace(
        image,
        dicom=ds,
        source_bytes_deidentified=dicom_bytes(ds, "The image"),
        deid_method=str(ds.DeidentificationMethod),
    )


def shallow_copy(ds: Dataset) -> Dataset:
    """A new dataset holding the same elements (pydicom's copy shares its element dictionary), so that adding
    or replacing one leaves `ds` as it was."""
    out = Dataset()
    for element in ds:
        out.add(element)
    out.file_meta = ds.file_meta
    out.set_original_encoding(*ds.original_encoding)
    return out
