"""The Clean Descriptors option's free-text descriptions, kept for a clinic that chooses to keep them.

De-identification removes them (server.imaging.deid): a study description can hold a patient's name, as the
outside attack of issue 17 found. A clinic whose descriptions are known to be clean, and that needs them (to tell
a lateral from a PA cephalogram in a viewer, say), may keep them verbatim; the stored file then records that the
option was not applied ((0012,0063) says "descriptors kept", (0012,0064) lacks the Clean Descriptors code).
"""

from __future__ import annotations

from dataclasses import replace

from pydicom.charset import python_encoding
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

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


def descriptors_of(source: Dataset) -> dict[str, str | list[str]]:
    """The non-empty ``DESCRIPTORS`` of an uploaded dataset by keyword, each as its values (a multi-valued one as
    the list of them, which is written back as the same values), and with them the source's SpecificCharacterSet
    where every term of it is one pydicom can encode in: written back without it, text beyond ASCII would become
    '?'."""
    found = {keyword: _values(source[keyword]) for keyword in DESCRIPTORS if keyword in source}
    kept = {keyword: value for keyword, value in found.items() if value}
    charset = _values(source["SpecificCharacterSet"]) if "SpecificCharacterSet" in source else ""
    terms = [charset] if isinstance(charset, str) else charset
    if kept and charset and all(term in python_encoding for term in terms):
        kept["SpecificCharacterSet"] = charset
    return kept


#: Text VRs whose leading spaces are part of the value (PS3.5 6.2); the others' padding is insignificant.
LEADING_SPACES_KEPT = frozenset({"ST", "LT", "UT"})


def _values(element: DataElement) -> str | list[str]:
    """An element's value as text without its insignificant padding (trailing spaces, and leading ones except
    where its VR keeps them): one string, or a list of strings where it has several; "" where it has none but
    blanks."""

    def text(item: object) -> str:
        return str(item).rstrip() if element.VR in LEADING_SPACES_KEPT else str(item).strip()

    value = element.value
    if isinstance(value, MultiValue | list | tuple):
        values = [text(item) for item in value]
        return values if any(v.strip() for v in values) else ""
    one = "" if value is None else text(value)
    return one if one.strip() else ""


def with_descriptors(image: DecodedImage) -> DecodedImage:
    """`image` (a de-identified DICOM decode) with its source's descriptors written back (in the source's character
    set), the method record changed to say so and its stored file rewritten; any other image as it is."""
    if image.dicom is None or not image.descriptors:
        return image
    ds = shallow_copy(image.dicom)
    for keyword, value in image.descriptors.items():
        setattr(ds, keyword, value)
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
