"""The DICOM JSON model (PS3.18 F.2) of what DICOMweb answers: attributes keyed by tag ("0020000D"), each with its
VR and values; bulk data (pixels) is left out, never inlined."""

from __future__ import annotations

from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.tag import Tag

DicomJson = dict[str, Any]

#: VRs whose values are bytes: never stored in the index, and left out of metadata when large.
BULK_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
#: A binary attribute larger than this is bulk data (PS3.18 leaves the threshold to the server).
BULK_THRESHOLD = 1024
_PIXELS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def tag_hex(tag: int) -> str:
    return f"{tag:08X}"


def tag_of(name: str) -> int:
    """A tag from a keyword ("StudyDate") or eight hex digits ("00080020"); ValueError for neither."""
    text = name.strip()
    if len(text) == 8 and all(c in "0123456789abcdefABCDEF" for c in text):
        return int(text, 16)
    tag = tag_for_keyword(text)
    if tag is None:
        raise ValueError(f"{name!r} is neither a DICOM keyword nor a tag of eight hex digits")
    return int(tag)


def keyword_of(tag: int) -> str:
    return keyword_for_tag(tag) or tag_hex(tag)


def vr_of(tag: int) -> str:
    """The tag's VR from the data dictionary ("UN" for a tag it does not know)."""
    try:
        return str(dictionary_VR(Tag(tag))).split(" or ")[0]
    except KeyError:
        return "UN"


def empty(tag: int) -> DicomJson:
    """An attribute present without a value (what a query answers for a requested attribute the instance lacks)."""
    return {"vr": vr_of(tag)}


def value(vr: str, values: list[Any]) -> DicomJson:
    return {"vr": vr, "Value": values} if values else {"vr": vr}


def index_attributes(ds: Dataset) -> DicomJson:
    """The top-level attributes a query may answer: no sequences, no binary values, no file meta."""
    kept = Dataset()
    for element in ds:
        if element.VR != "SQ" and element.VR not in BULK_VRS and element.tag.group != 0x0002:
            kept.add(element)
    return kept.to_json_dict(suppress_invalid_tags=True)


def metadata(ds: Dataset) -> DicomJson:
    """The whole dataset (sequences included) without its pixels and other large binary attributes."""
    light = Dataset()  # a new element dictionary (pydicom's copy would share `ds`'s)
    for element in ds:
        if not (element.keyword in _PIXELS or (element.VR in BULK_VRS and _length(element.value) > BULK_THRESHOLD)):
            light.add(element)
    return light.to_json_dict(suppress_invalid_tags=True)


def _length(raw: object) -> int:
    return len(raw) if isinstance(raw, bytes | bytearray) else 0


def first(attributes: DicomJson, tag: int) -> Any:
    """The first value of an attribute in a DICOM JSON object, or None."""
    values = attributes.get(tag_hex(tag), {}).get("Value") or [None]
    return values[0]
