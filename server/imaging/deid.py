"""De-identification of a DICOM upload to DICOM PS3.15 Annex E's Basic Application Level Confidentiality Profile.

The stored dataset is rebuilt by retention rather than by removal: it holds only the attributes that display and
measure the image (the pixel modules, the grey-scale transforms, the pixel spacing, a few coded terms checked
against their defined terms), new UIDs, the profile's type-2 attributes emptied, and the record of the method
(0012,0062)-(0012,0064). Everything else is dropped, whatever its tag: every attribute the profile lists (names,
dates, identifiers, descriptions, comments, device serial numbers...), the Clean Descriptors option's
descriptions (applied as removal), private tags, overlays, curves and every sequence but the two LUT ones. An
attribute the profile does not list yet, or a vendor's misuse of a standard one, cannot leak either.

The pixel data is stored as it was encoded, less the comment and application segments of compressed frames and
anything after their end markers (server.imaging.pixel_text: a JPEG COM or EXIF block can carry a name or an ID)
and anything past the bytes a native image needs; text burned into the pixels themselves is not found here
(BurnedInAnnotation is kept where the source states it).
"""

from __future__ import annotations

import io
from collections.abc import Iterable

import pydicom
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels.utils import get_expected_length
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, UID_dictionary, generate_uid

from server.imaging.errors import ImagingError
from server.imaging.pixel_text import MarkerError, strip_frames

#: Pixel-module and geometry attributes of binary or numeric VRs, kept as they are (numeric strings re-checked).
RETAINED = (
    "SamplesPerPixel",
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "PlanarConfiguration",
    "NumberOfFrames",
    "PixelAspectRatio",
    "SmallestImagePixelValue",
    "LargestImagePixelValue",
    "PixelPaddingValue",
    "PixelPaddingRangeLimit",
    "RescaleIntercept",
    "RescaleSlope",
    "WindowCenter",
    "WindowWidth",
    "PixelSpacing",
    "ImagerPixelSpacing",
    "NominalScannedPixelSpacing",
    "EstimatedRadiographicMagnificationFactor",
    "LossyImageCompressionRatio",
    "PixelIntensityRelationshipSign",
    "RedPaletteColorLookupTableDescriptor",
    "GreenPaletteColorLookupTableDescriptor",
    "BluePaletteColorLookupTableDescriptor",
    "RedPaletteColorLookupTableData",
    "GreenPaletteColorLookupTableData",
    "BluePaletteColorLookupTableData",
    "SegmentedRedPaletteColorLookupTableData",
    "SegmentedGreenPaletteColorLookupTableData",
    "SegmentedBluePaletteColorLookupTableData",
    "ExtendedOffsetTable",
    "ExtendedOffsetTableLengths",
    "PixelData",
    "FloatPixelData",
    "DoubleFloatPixelData",
)


def _terms(words: str) -> frozenset[str]:
    return frozenset(words.split(","))


_LUT_TYPES = _terms("US,OD,HU,MGML,Z_EFF,ED,EDW,HU_MOD,PCT")


#: Coded text attributes, kept only where every value is one of the defined terms (PS3.3), so that no free text
#: survives in them.
_CODED: dict[str, frozenset[str]] = {
    "Modality": _terms(
        "AR,ASMT,AU,BDUS,BI,BMD,CFM,CR,CT,CTPROTOCOL,DMS,DG,DOC,DX,ECG,EEG,EMG,EOG,EPS,ES,FID,GM,HC,HD,IO,IOL,IVOCT,"
        "IVUS,KER,KO,LEN,LS,MG,MR,M3D,NM,OAM,OCT,OP,OPM,OPT,OPTBSV,OPTENF,OPV,OSS,OT,PLAN,POS,PR,PT,PX,REG,RESP,RF,"
        "RG,RTDOSE,RTIMAGE,RTINTENT,RTPLAN,RTRAD,RTRECORD,RTSEGANN,RTSTRUCT,RWV,SEG,SM,SMR,SR,SRF,STAIN,TEXTUREMAP,"
        "TG,US,VA,XA,XAPROTOCOL,XC"
    ),
    "PhotometricInterpretation": _terms(
        "MONOCHROME1,MONOCHROME2,PALETTE COLOR,RGB,YBR_FULL,YBR_FULL_422,YBR_PARTIAL_422,YBR_PARTIAL_420,YBR_ICT,"
        "YBR_RCT,XYB"
    ),
    "RescaleType": _LUT_TYPES,
    "VOILUTFunction": frozenset({"LINEAR", "LINEAR_EXACT", "SIGMOID"}),
    "PresentationLUTShape": frozenset({"IDENTITY", "INVERSE"}),
    "PixelIntensityRelationship": frozenset({"LIN", "LOG", "DISP"}),
    "PixelSpacingCalibrationType": frozenset({"GEOMETRY", "FIDUCIAL"}),
    "LossyImageCompression": frozenset({"00", "01"}),
    "LossyImageCompressionMethod": _terms(
        "ISO_10918_1,ISO_14495_1,ISO_15444_1,ISO_15444_15,ISO_13818_2,ISO_14496_10,ISO_23008_2,ISO_18181_1"
    ),
    "BurnedInAnnotation": frozenset({"YES", "NO"}),
}

#: The grey-scale LUT sequences, rebuilt item by item from these attributes only (their explanations dropped).
_SEQUENCES: dict[str, tuple[str, ...]] = {
    "ModalityLUTSequence": ("LUTDescriptor", "LUTData", "ModalityLUTType"),
    "VOILUTSequence": ("LUTDescriptor", "LUTData"),
}

#: UIDs the profile replaces (U); each upload gets new ones, so two uploads of one image are two studies.
_REPLACED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID")

#: Type-2 attributes of the Patient, General Study, Series and Equipment modules the profile empties (Z).
_EMPTIED = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "SeriesNumber",
    "InstanceNumber",
    "Manufacturer",
)

_SECONDARY_CAPTURE = UID("1.2.840.10008.5.1.4.1.1.7")

#: (0012,0063) and the API's `deid_method`: the profile and how its Clean Descriptors option was applied.
METHOD = "PS3.15 E.1 Basic Profile; descriptors removed; retain list"
#: The same where the clinic keeps the descriptors (server.imaging.descriptors).
METHOD_DESCRIPTORS_KEPT = "PS3.15 E.1 Basic Profile; descriptors kept; retain list"

#: (0012,0064), CID 7050.
_METHOD_CODES = (
    ("113100", "Basic Application Confidentiality Profile"),
    ("113105", "Clean Descriptors Option"),
)


def deidentify(ds: Dataset, transfer_syntax: UID, subject: str) -> Dataset:
    """A new dataset holding only what the profile lets through (see the module's docstring), with file meta for
    `transfer_syntax`; `ds` is left as it was. Raises ImagingError where the source cannot be rebuilt."""
    try:
        out = Dataset()
        _copy_retained(ds, out)
        _strip_pixel_text(out, transfer_syntax)
        _native_pixels_only(ds, out, transfer_syntax)
        _replace_uids(ds, out)
        for keyword in _EMPTIED:
            setattr(out, keyword, "")
        record_method(out)
        out.file_meta = _file_meta(out, transfer_syntax)
        out.set_original_encoding(*ds.original_encoding)
    except ImagingError:
        raise
    except Exception as exc:  # never store a dataset that failed de-identification
        raise ImagingError(
            "invalid-dicom",
            f"{subject} could not be de-identified, so it is not stored. Export the image again from the PACS.",
        ) from exc
    return out


def _copy_retained(source: Dataset, out: Dataset) -> None:
    for keyword in RETAINED:
        if keyword in source and _numeric_or_binary(source[keyword]):
            out[source[keyword].tag] = source[keyword]
    for keyword, terms in _CODED.items():
        if keyword in source and _all_in(source[keyword].value, terms):
            out[source[keyword].tag] = source[keyword]
    for keyword, kept in _SEQUENCES.items():
        if keyword in source and isinstance(source[keyword].value, Sequence):
            items = [_lut_item(item, kept) for item in source[keyword].value]
            setattr(out, keyword, Sequence([item for item in items if item is not None]))
    sop_class = UID(str(source.get("SOPClassUID", "")))
    out.SOPClassUID = sop_class if sop_class in UID_dictionary else _SECONDARY_CAPTURE


def _strip_pixel_text(out: Dataset, transfer_syntax: UID) -> None:
    """Compressed pixel data again without the text segments of its frames (server.imaging.pixel_text), as a new
    element (the source's stays as it was); the extended offset table, which the new lengths would belie, is
    dropped (the basic one is rebuilt)."""
    if "PixelData" not in out or not transfer_syntax.is_encapsulated:
        return
    frames = int(out.get("NumberOfFrames", 1) or 1)
    try:
        stripped = strip_frames(out.PixelData, frames)
    except (MarkerError, ValueError) as exc:
        raise ImagingError(
            "invalid-dicom", f"the compressed pixel data cannot be read frame by frame ({exc}), so it is not stored"
        ) from exc
    element = DataElement(out["PixelData"].tag, out["PixelData"].VR, stripped, is_undefined_length=True)
    out[element.tag] = element
    for keyword in ("ExtendedOffsetTable", "ExtendedOffsetTableLengths"):
        if keyword in out:
            del out[keyword]


def _native_pixels_only(source: Dataset, out: Dataset, transfer_syntax: UID) -> None:
    """Native pixel data cut to the bytes its image needs (rows x columns x samples x bits allocated, as pydicom
    read the source), with a zero byte where that is odd: pydicom decodes an element that is longer and ignores the
    rest, which can hold any text. As a new element, like the compressed one."""
    for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
        if keyword not in out or transfer_syntax.is_encapsulated:
            continue
        needed = get_expected_length(source, unit="bytes")
        value = out[keyword].value
        if len(value) >= needed and value[needed:] != bytes(needed % 2):
            trimmed = value[:needed] + bytes(needed % 2)
            out[out[keyword].tag] = DataElement(out[keyword].tag, out[keyword].VR, trimmed)


def _lut_item(item: Dataset, kept: tuple[str, ...]) -> Dataset | None:
    """A LUT item with only `kept` (the LUT type checked like _CODED); None where it has no LUT left."""
    out = Dataset()
    for keyword in kept:
        if keyword not in item:
            continue
        element = item[keyword]
        if keyword == "ModalityLUTType":
            if _all_in(element.value, _LUT_TYPES):
                out[element.tag] = element
        elif _numeric_or_binary(element):
            out[element.tag] = element
    return out if "LUTDescriptor" in out and "LUTData" in out else None


def _numeric_or_binary(element: DataElement) -> bool:
    """True for binary VRs, and for DS/IS strings whose every value is a number (no text hides in them); false
    for any VR the data dictionary does not give the tag: an explicit-VR file declares its own VRs, and text
    declared OB, OW, UN or SQ in a retained attribute must not pass as binary."""
    if not _declared_as_defined(element):
        return False
    if element.VR not in ("DS", "IS"):
        return element.VR not in ("AE", "AS", "CS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UR", "UT")
    value = element.value
    values = value if isinstance(value, Iterable) and not isinstance(value, str) else [value]
    try:
        for value in values:
            float(value)
    except (TypeError, ValueError):
        return False
    return True


def _declared_as_defined(element: DataElement) -> bool:
    """Whether the element's VR is one the DICOM dictionary gives its tag ("US or SS" allows either)."""
    try:
        defined = dictionary_VR(element.tag)
    except KeyError:
        return False
    return element.VR in {vr.strip() for vr in defined.split(" or ")}


def _all_in(value: object, terms: frozenset[str]) -> bool:
    values = [value] if isinstance(value, str) else list(value) if isinstance(value, Iterable) else [value]
    return bool(values) and all(isinstance(v, str) and v.strip() in terms for v in values)


def _replace_uids(source: Dataset, out: Dataset) -> None:
    for keyword in _REPLACED_UIDS:
        if keyword in source or keyword != "FrameOfReferenceUID":  # the first three are type 1
            setattr(out, keyword, generate_uid(prefix=None))  # 2.25.<random UUID>


def record_method(out: Dataset, *, descriptors_kept: bool = False) -> None:
    """(0012,0062)-(0012,0064) and (0028,0303): the profile, and the Clean Descriptors option unless the
    descriptors were kept."""
    out.PatientIdentityRemoved = "YES"
    out.DeidentificationMethod = METHOD_DESCRIPTORS_KEPT if descriptors_kept else METHOD
    items = []
    for value, meaning in _METHOD_CODES[:1] if descriptors_kept else _METHOD_CODES:
        code = Dataset()
        code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = value, "DCM", meaning
        items.append(code)
    out.DeidentificationMethodCodeSequence = Sequence(items)
    out.LongitudinalTemporalInformationModified = "REMOVED"  # every date and time is gone


def _file_meta(out: Dataset, transfer_syntax: UID) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = out.SOPClassUID
    meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return meta


def dicom_bytes(ds: Dataset, subject: str) -> bytes:
    """The de-identified dataset as a Part-10 file (zero preamble), pixel data as it was encoded."""
    buffer = io.BytesIO()
    try:
        pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    except Exception as exc:
        raise ImagingError(
            "invalid-dicom", f"{subject} could not be written back after de-identification. Export the image again."
        ) from exc
    return buffer.getvalue()
