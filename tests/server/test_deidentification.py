"""De-identification to DICOM PS3.15's Basic Application Level Confidentiality Profile, on real DICOM files with
an identifier planted in every text attribute of pydicom's data dictionary (the profile's attributes among them),
in nested sequences, private tags, overlays and the file meta: none survives in the stored blobs, the database,
the API's answers or the logs, and the stored file still decodes to the same pixels and spacing. PNG, JPEG and
TIFF uploads lose their text chunks, segments and tags the same way, MHA, NRRD and NIfTI their header's text."""

from __future__ import annotations

import copy
import gzip
import io
import logging
import struct
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from PIL import ExifTags, Image
from PIL.PngImagePlugin import PngInfo
from pydicom.datadict import DicomDictionary
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from sqlalchemy import select

from server.db.base import Base
from server.db.session import session_factory
from server.imaging import ImagingError, decode_image
from server.imaging.deid import METHOD, RETAINED

from .conftest import Api

pydicom_data = pytest.importorskip("pydicom.data")
deid_data = pytest.importorskip("deid_data", reason="deid-data (the dev extra) holds the DX test file")

MARK = "ZQPHI"
#: What a planted value of each VR looks like; every one is searched for in whatever is stored or answered.
PLANTED_BY_VR = {
    "DA": "19800101",
    "DT": "19800101121314",
    "TM": "235959.4711",
    "AS": "044Y",
    "DS": "4711.25",
    "IS": "947112",
}
UID_ROOT = "1.2.826.0.1.3680043.4711"
#: Needles: no stored byte or answered character may hold any of them.
NEEDLES = [MARK, MARK.lower(), "Juergen", "MUELLER", "Mueller", UID_ROOT, *PLANTED_BY_VR.values()]
#: Attributes not planted: ones the decoder needs intact (a planted value would refuse the file, not test it),
#: and the geometry numbers the profile keeps (pixel spacing, magnification...).
NEEDED = {"SpecificCharacterSet", "PhotometricInterpretation", *RETAINED}
SOURCES = ["deid:animals/cat.dcm", "RG1_UNCR.dcm", "MR_small_bigendian.dcm", "JPEG2000.dcm"]


def read_source(name: str) -> bytes:
    if name.startswith("deid:"):
        return (Path(deid_data.__file__).parent / "data" / name.removeprefix("deid:")).read_bytes()
    return Path(pydicom_data.get_testdata_file(name)).read_bytes()


def planted_value(vr: str, n: int) -> str | None:
    if vr in PLANTED_BY_VR:
        return PLANTED_BY_VR[vr]
    if vr == "PN":
        return f"{MARK}{n}^Juergen"
    if vr == "UI":
        return f"{UID_ROOT}.{n}"
    if vr == "UR":
        return f"http://{MARK.lower()}.example/{n}"
    if vr in ("AE", "CS", "SH", "LO", "ST", "LT", "UT", "UC"):
        return f"{MARK}{n}"
    return None  # binary VRs and sequences: sequences are planted below


def planted(source: Dataset) -> Dataset:
    """`source` with a planted identifier in every text attribute of the dictionary it has not an image-critical
    value in, nested sequences, a private block, an overlay and the file meta."""
    ds = copy.deepcopy(source)
    for n, (tag, (vr, _vm, _name, _retired, keyword)) in enumerate(DicomDictionary.items()):
        value = planted_value(vr.split(" or ")[0], n)
        if tag >> 16 in (0x0000, 0x0002) or not keyword or keyword in NEEDED or value is None:
            continue
        if keyword in ds and ds[keyword].VR not in ("PN", "LO", "SH", "ST", "LT", "UT", "DA", "TM", "DT", "UI"):
            continue  # a value the image has (Rows, WindowCenter...): left as it is
        ds.add_new(tag, vr.split(" or ")[0], value)
    inner = Dataset()
    inner.ScheduledProcedureStepDescription = f"{MARK} patient Juergen Mueller born 1980-01-01"
    inner.ScheduledPerformingPhysicianName = f"{MARK}^Doctor"
    inner.ReferencedSOPInstanceUID = f"{UID_ROOT}.1"
    outer = Dataset()
    outer.ScheduledProcedureStepSequence = Sequence([inner])
    outer.RequestedProcedureDescription = f"{MARK} nested"
    ds.RequestAttributesSequence = Sequence([outer])
    ds.VOILUTSequence = Sequence([_lut_with_explanation()])
    block = ds.private_block(0x0011, f"{MARK} CREATOR", create=True)
    block.add_new(0x01, "LO", f"{MARK} private Mueller")
    block.add_new(0x02, "SQ", Sequence([copy.deepcopy(inner)]))
    ds.add_new(0x60000022, "LO", f"{MARK} overlay")
    ds.file_meta.SourceApplicationEntityTitle = MARK
    return ds


def _lut_with_explanation() -> Dataset:
    item = Dataset()
    item.add_new(0x00283002, "US", [256, 0, 16])  # LUTDescriptor
    item.add_new(0x00283006, "US", list(range(0, 65536, 256)))  # LUTData
    item.LUTExplanation = f"{MARK} Mueller's window"
    return item


def to_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def assert_no_needle(where: str, text: bytes | str) -> None:
    for needle in NEEDLES:
        probe = needle.encode() if isinstance(text, bytes) else needle
        assert probe not in text, f"{needle!r} survives in {where}"


@pytest.fixture(scope="module", params=SOURCES)
def planted_file(request: pytest.FixtureRequest) -> tuple[bytes, bytes]:
    """(the source file, the source with identifiers planted); the planted one still decodes."""
    raw = read_source(request.param)
    return raw, to_bytes(planted(pydicom.dcmread(io.BytesIO(raw))))


def test_no_planted_identifier_survives_in_the_stored_file(planted_file: tuple[bytes, bytes]) -> None:
    raw, dirty = planted_file
    assert sum(dirty.count(n.encode()) for n in NEEDLES) > 1000  # planted widely
    image = decode_image(dirty, filename="MUELLER_JUERGEN_ZQPHI.dcm")
    assert_no_needle("the stored file", image.source_bytes_deidentified)
    assert image.modality is None or MARK not in image.modality
    stored = pydicom.dcmread(io.BytesIO(image.source_bytes_deidentified))
    assert stored.PatientIdentityRemoved == "YES" and stored.DeidentificationMethod == METHOD
    assert [c.CodeValue for c in stored.DeidentificationMethodCodeSequence] == ["113100", "113105"]
    assert stored.LongitudinalTemporalInformationModified == "REMOVED"
    assert stored.preamble == b"\0" * 128 and "SourceApplicationEntityTitle" not in stored.file_meta
    found: list[str] = []
    stored.walk(lambda _, elem: found.append(str(elem.tag)) if elem.tag.is_private else None)
    assert found == []
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "StudyDate", "AccessionNumber"):
        assert stored[keyword].value in ("", None), keyword  # type 2: present, empty
    original = pydicom.dcmread(io.BytesIO(raw))
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        assert stored[keyword].value != original.get(keyword) and stored[keyword].value.startswith("2.25.")


def test_the_stored_file_decodes_as_the_upload_did(planted_file: tuple[bytes, bytes]) -> None:
    _, dirty = planted_file
    first = decode_image(dirty)  # its planted VOI LUT shows it otherwise than the source: kept
    again = decode_image(first.source_bytes_deidentified)
    assert np.array_equal(first.pixels, again.pixels)
    assert (first.spacing_mm, first.spacing_source) == (again.spacing_mm, again.spacing_source)


def every_real_dicom() -> Iterator[Path]:
    yield from (Path(p) for p in pydicom_data.get_testdata_files() if Path(p).is_file())
    yield from sorted((Path(deid_data.__file__).parent / "data").rglob("*.dcm"))


def test_every_decodable_real_file_decodes_the_same_after_deidentification() -> None:
    """All of pydicom-data's and deid-data's files the service accepts (well over a hundred, every transfer
    syntax it decodes): same pixels, spacing and modality from the stored file as from the upload."""
    checked = 0
    for path in every_real_dicom():
        try:
            first = decode_image(path.read_bytes(), filename=path.name)
        except ImagingError:
            continue
        again = decode_image(first.source_bytes_deidentified)
        assert np.array_equal(first.pixels, again.pixels), path.name
        assert (first.spacing_mm, first.modality) == (again.spacing_mm, again.modality), path.name
        checked += 1
    assert checked >= 100


def test_no_identifier_is_stored_answered_or_logged(
    api: Api, planted_file: tuple[bytes, bytes], caplog: pytest.LogCaptureFixture
) -> None:
    _, dirty = planted_file
    _, admin = api.clinic()
    name = "MUELLER_JUERGEN_ZQPHI.dcm"
    caplog.set_level(logging.DEBUG)
    r = api.client.post("/v1/studies", files={"file": (name, dirty)}, headers=api.headers(admin))
    assert r.status_code == 201, r.text
    assert r.json()["deid_method"] == METHOD and "filename" not in r.json()
    answers = [r.text, api.client.get("/v1/studies", headers=api.headers(admin)).text]
    answers.append(api.client.get(f"/v1/studies/{r.json()['id']}", headers=api.headers(admin)).text)
    for i, text in enumerate(answers):
        assert_no_needle(f"answer {i}", text)
    for path in api.settings.resolved_blob_dir.rglob("*"):
        if path.is_file():
            assert_no_needle(f"blob {path.name}", path.read_bytes())
    assert_no_needle("the database", _database_text(api))
    assert_no_needle("the logs", caplog.text)


def _database_text(api: Api) -> str:
    """Every value of every row of every table, as text."""
    rows: list[str] = []
    with session_factory(api.settings.resolved_database_url)() as session:
        for table in Base.metadata.sorted_tables:
            rows.extend(repr(tuple(row)) for row in session.execute(select(table)))
    return "\n".join(rows)


# ------------------------------------------------------------------ PNG, JPEG and TIFF: text beside the pixels


def _grey_picture() -> Image.Image:
    values = np.add.outer(np.arange(48), 3 * np.arange(64)).astype(np.uint8)
    return Image.fromarray(values, mode="L")


def planted_png() -> bytes:
    info = PngInfo()
    info.add_text("Patient", f"{MARK} Juergen Mueller")
    info.add_text("Comment", f"{MARK} born 19800101", zip=True)
    info.add_itxt("Description", f"{MARK} Mueller", lang="de")
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[ExifTags.Base.Artist] = f"{MARK} Mueller"
    _grey_picture().save(buffer, format="PNG", pnginfo=info, exif=exif.tobytes())
    return buffer.getvalue()


def planted_jpeg() -> bytes:
    exif = Image.Exif()
    exif[ExifTags.Base.Artist] = f"{MARK} Mueller"
    exif[ExifTags.Base.Orientation] = 6  # shown turned by 90 degrees: the copy must keep this
    buffer = io.BytesIO()
    _grey_picture().save(buffer, format="JPEG", exif=exif.tobytes(), comment=f"{MARK} Juergen".encode())
    data = buffer.getvalue()
    xmp = b"http://ns.adobe.com/xap/1.0/\x00<x:xmpmeta>" + f"{MARK} Mueller".encode() + b"</x:xmpmeta>"
    iptc = b"Photoshop 3.0\x00" + f"8BIM {MARK} Mueller".encode()
    app = ((0xE1, xmp), (0xED, iptc))
    segments = b"".join(b"\xff" + bytes([m]) + struct.pack(">H", len(p) + 2) + p for m, p in app)
    return data[:2] + segments + data[2:] + f"{MARK} trailing Mueller".encode()


def planted_tiff() -> bytes:
    tags = {270: f"{MARK} Juergen Mueller", 315: f"{MARK} Mueller", 306: "1980:01:01 12:13:14", 274: 6}
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(_grey_picture(), np.uint16) * 257).save(buffer, format="TIFF", tiffinfo=tags)
    return buffer.getvalue()


@pytest.mark.parametrize("make", [planted_png, planted_jpeg, planted_tiff], ids=["png", "jpeg", "tiff"])
def test_no_text_of_a_picture_survives_in_its_stored_copy(make: Callable[[], bytes]) -> None:
    upload = make()
    assert upload.count(MARK.encode()) >= 2
    image = decode_image(upload, filename="MUELLER_JUERGEN.img")
    assert_no_needle("the stored copy", image.source_bytes_deidentified)
    assert b"1980:01:01" not in image.source_bytes_deidentified
    again = decode_image(image.source_bytes_deidentified)
    assert (again.format, again.width, again.height) == (image.format, image.width, image.height)
    assert again.pixel_sha256 == image.pixel_sha256  # displays as the upload did (a JPEG's orientation kept)
    if image.format == "jpeg":
        assert (image.width, image.height) == (48, 64)  # turned by its EXIF orientation


# ----------------------------------------------------------- MHA, NRRD and NIfTI: text in the header


def _raw_pixels() -> bytes:
    return (np.add.outer(np.arange(48), 3 * np.arange(64)).astype("<u2") * 300).tobytes()


def planted_mha() -> bytes:
    header = [
        "ObjectType = Image",
        "NDims = 2",
        f"Comment = {MARK} Juergen Mueller",
        f"PatientName = {MARK}^Mueller",
        "BinaryData = True",
        "BinaryDataByteOrderMSB = False",
        "ElementSpacing = 0.1 0.1",
        "DimSize = 64 48",
        "ElementType = MET_USHORT",
        "ElementDataFile = LOCAL",
    ]
    return ("\n".join(header) + "\n").encode() + _raw_pixels()


def planted_nrrd() -> bytes:
    header = [
        "NRRD0004",
        f"# {MARK} Juergen Mueller",
        "type: uint16",
        "dimension: 2",
        "sizes: 64 48",
        "spacings: 0.1 0.1",
        f"patient:={MARK} Mueller",
        f'labels: "{MARK}" "y"',
        "endian: little",
        "encoding: raw",
    ]
    return ("\n".join(header) + "\n\n").encode() + _raw_pixels()


def planted_nifti(gz: bool) -> bytes:
    image = sitk.GetImageFromArray(np.frombuffer(_raw_pixels(), "<u2").reshape(48, 64))
    image.SetSpacing((0.1, 0.1))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "x.nii"
        sitk.WriteImage(image, str(path))
        data = bytearray(path.read_bytes())
    data[148:228] = f"{MARK} Juergen Mueller".encode().ljust(80, b"\0")  # descrip
    data[228:252] = f"{MARK}.aux".encode().ljust(24, b"\0")  # aux_file
    return gzip.compress(bytes(data)) if gz else bytes(data)


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (planted_mha, "x.mha"),
        (planted_nrrd, "x.nrrd"),
        (lambda: planted_nifti(False), "x.nii"),
        (lambda: planted_nifti(True), "x.nii.gz"),
    ],
    ids=["mha", "nrrd", "nifti", "nifti-gz"],
)
def test_no_text_of_a_volume_header_survives_in_its_stored_copy(make: Callable[[], bytes], name: str) -> None:
    upload = make()
    assert MARK.encode() in (gzip.decompress(upload) if upload.startswith(b"\x1f\x8b") else upload)
    image = decode_image(upload, filename=name)
    assert image.spacing_mm == pytest.approx((0.1, 0.1))
    assert_no_needle("the stored copy", image.source_bytes_deidentified)
    again = decode_image(image.source_bytes_deidentified, filename=name)
    assert (again.width, again.height, again.pixel_sha256) == (image.width, image.height, image.pixel_sha256)
    assert again.spacing_mm == pytest.approx(image.spacing_mm)


def test_text_declared_with_another_vr_in_a_kept_attribute_is_dropped() -> None:
    """An explicit-VR file declares its own VRs: text in a kept geometry attribute declared OB, OW or SQ (a
    sequence holding a patient's name) must not pass as binary into the stored file."""
    from pydicom.dataelem import DataElement
    from pydicom.sequence import Sequence

    ds = pydicom.dcmread(io.BytesIO(read_source("693_UNCR.dcm")))
    text = f"DOE^JOHN {MARK} 0012345 ".encode()
    ds.add(DataElement(0x00181114, "OB", text))  # EstimatedRadiographicMagnificationFactor, a DS
    ds.add(DataElement(0x00280034, "OW", text))  # PixelAspectRatio, an IS
    nested = Dataset()
    nested.PatientName = f"SEQ^{MARK}"
    ds.add(DataElement(0x00182010, "SQ", Sequence([nested])))  # NominalScannedPixelSpacing, a DS
    image = decode_image(to_bytes(ds))
    assert_no_needle("the stored file", image.source_bytes_deidentified)
    stored = pydicom.dcmread(io.BytesIO(image.source_bytes_deidentified))
    kept = ("EstimatedRadiographicMagnificationFactor", "PixelAspectRatio", "NominalScannedPixelSpacing")
    assert not any(k in stored for k in kept)
