"""Text in DICOM pixel data (a JPEG COM or EXIF segment, a JPEG 2000 comment, bytes after a frame's end marker or
past a native image's last pixel) is cut on ingest, and the pixels stay the same, on real files of pydicom-data and
deid-data with text put into their frames."""

from __future__ import annotations

import io
from pathlib import Path

import data_store
import deid_data
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate, generate_frames

from server.imaging import ImagingError, decode_image
from server.imaging.deid import deidentify
from server.imaging.pixel_text import MarkerError, strip_frame

PYDICOM_DATA = Path(data_store.__file__).parent / "data"
DEID_DATA = Path(deid_data.__file__).parent / "data"
SECRET = b"DOE^JOHN 19700101 MRN 0042"


def segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload


def with_first_frame(path: Path, edit) -> bytes:  # type: ignore[no-untyped-def]
    """The file with its first (only) frame edited, re-encapsulated."""
    ds = pydicom.dcmread(path)
    frames = list(generate_frames(ds.PixelData, number_of_frames=int(ds.get("NumberOfFrames", 1) or 1)))
    ds.PixelData = encapsulate([edit(frames[0]), *frames[1:]], has_bot=True)
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


def jpeg_with_text(frame: bytes) -> bytes:
    """COM and an EXIF APP1 after SOI, and a COM before EOI."""
    assert frame[:2] == b"\xff\xd8"
    end = frame.rindex(b"\xff\xd9")
    exif = segment(0xE1, b"Exif\x00\x00" + SECRET)
    return b"".join([frame[:2], segment(0xFE, SECRET), exif, frame[2:end], segment(0xFE, SECRET), frame[end:]])


def j2k_with_text(frame: bytes) -> bytes:
    """COM after SIZ in the main header, and another in the first tile-part's header (its Psot grown to match)."""
    assert frame[:4] == b"\xff\x4f\xff\x51"
    siz_end = 4 + int.from_bytes(frame[4:6], "big")
    com = segment(0x64, b"\x00\x01" + SECRET)  # Rcom 1: Latin text
    out = bytearray(frame[:siz_end] + com + frame[siz_end:])
    sot = out.index(b"\xff\x90")
    psot = int.from_bytes(out[sot + 6 : sot + 10], "big")
    if psot:
        out[sot + 6 : sot + 10] = (psot + len(com)).to_bytes(4, "big")
    return bytes(out[: sot + 12] + com + out[sot + 12 :])


def text_after_the_end(frame: bytes) -> bytes:
    """SECRET after the frame's EOI or EOC (and the pad byte an odd codestream has), inside the fragment."""
    return frame + SECRET


@pytest.mark.parametrize(
    ("path", "edit"),
    [
        (PYDICOM_DATA / "JPEG-LL.dcm", jpeg_with_text),  # JPEG lossless
        (DEID_DATA / "humans" / "ctbrain1.dcm", jpeg_with_text),  # JPEG baseline, YBR
        (PYDICOM_DATA / "693_J2KR.dcm", j2k_with_text),  # JPEG 2000 lossless
        (PYDICOM_DATA / "RG1_J2KI.dcm", j2k_with_text),  # JPEG 2000 lossy
        (DEID_DATA / "humans" / "ctbrain1.dcm", text_after_the_end),
        (PYDICOM_DATA / "693_J2KR.dcm", text_after_the_end),  # an odd codestream: EOC, then a pad byte
        (PYDICOM_DATA / "RG1_J2KI.dcm", text_after_the_end),
    ],
    ids=["jpeg-lossless", "jpeg-baseline", "j2k-lossless", "j2k-lossy", "after-eoi", "after-eoc-pad", "after-eoc"],
)
def test_text_in_compressed_frames_is_cut_and_the_pixels_stay(path: Path, edit) -> None:  # type: ignore[no-untyped-def]
    ds = pydicom.dcmread(path)
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    assert strip_frame(edit(frame)) == strip_frame(frame)  # exactly the frame less its text, Psot restored
    original = decode_image(path.read_bytes())
    tainted = with_first_frame(path, edit)
    assert SECRET in tainted
    image = decode_image(tainted)
    assert SECRET not in image.source_bytes_deidentified
    assert np.array_equal(image.pixels, original.pixels)
    again = decode_image(image.source_bytes_deidentified)  # what is stored still decodes to the same pixels
    assert np.array_equal(again.pixels, original.pixels)
    stored = pydicom.dcmread(io.BytesIO(image.source_bytes_deidentified))
    assert "ExtendedOffsetTable" not in stored


def last_tile_part_to_eoc(frame: bytes) -> bytes:
    """The (single) tile-part's Psot set to 0, "up to EOC", and SECRET after the codestream."""
    out = bytearray(frame)
    sot = out.index(b"\xff\x90")
    out[sot + 6 : sot + 10] = bytes(4)
    return bytes(out) + SECRET


def test_the_last_tile_part_ends_at_eoc() -> None:
    """Psot 0: the last tile-part runs to EOC, not to the end of the fragment (a pad byte, or text)."""
    path = PYDICOM_DATA / "693_J2KR.dcm"
    frame = next(generate_frames(pydicom.dcmread(path).PixelData, number_of_frames=1))
    expected = bytearray(strip_frame(frame))  # less its COM and pad byte
    sot = expected.index(b"\xff\x90")
    expected[sot + 6 : sot + 10] = bytes(4)
    assert strip_frame(last_tile_part_to_eoc(frame)) == expected
    image = decode_image(with_first_frame(path, last_tile_part_to_eoc))
    assert SECRET not in image.source_bytes_deidentified
    assert np.array_equal(decode_image(image.source_bytes_deidentified).pixels, decode_image(path.read_bytes()).pixels)


def test_text_past_the_last_native_pixel_is_cut() -> None:
    """Native pixel data longer than rows x columns x samples x bytes: pydicom decodes it, the rest is not stored."""
    path = Path(get_testdata_file("CT_small.dcm"))  # 128 x 128, 16 bits allocated
    ds = pydicom.dcmread(path)
    pixels = ds.PixelData
    ds.PixelData = pixels + SECRET
    buffer = io.BytesIO()
    ds.save_as(buffer)
    image = decode_image(buffer.getvalue())
    assert SECRET not in image.source_bytes_deidentified
    assert pydicom.dcmread(io.BytesIO(image.source_bytes_deidentified)).PixelData == pixels
    assert np.array_equal(decode_image(image.source_bytes_deidentified).pixels, decode_image(path.read_bytes()).pixels)


def test_the_kept_segments_are_those_a_decoder_needs() -> None:
    """APP0 and APP14 keep their fixed-length JFIF and Adobe headers: not a JFIF thumbnail, nor any other APP0."""
    jfif, adobe = b"JFIF\x00\x01\x02\x00\x00\x01\x00\x01", b"Adobe\x00\x64\x00\x00\x00\x00\x01"
    app0, app14 = segment(0xE0, jfif + b"\x00\x00"), segment(0xEE, adobe)
    scan = segment(0xDA, b"\x01\x01\x00\x00\x3f\x00") + b"\x12\xff\x00\x34\xff\xd0\x56"  # stuffed FF00, RST0
    frame = b"\xff\xd8" + app0 + segment(0xFE, SECRET) + app14 + segment(0xED, SECRET) + scan + b"\xff\xd9"
    assert strip_frame(frame) == b"\xff\xd8" + app0 + app14 + scan + b"\xff\xd9"
    thumbnail = segment(0xE0, jfif + bytes([len(SECRET), 1]) + SECRET * 3)
    texts = thumbnail + segment(0xE0, b"JFXX\x00\x10" + SECRET) + segment(0xEE, adobe + SECRET)
    assert strip_frame(b"\xff\xd8" + texts + scan + b"\xff\xd9") == b"\xff\xd8" + app0 + app14 + scan + b"\xff\xd9"
    assert strip_frame(b"RLE frame bytes") == b"RLE frame bytes"


def test_a_malformed_frame_is_refused_not_stored() -> None:
    with pytest.raises(MarkerError):
        strip_frame(b"\xff\xd8" + segment(0xFE, SECRET)[:-4])  # the comment runs past the frame
    with pytest.raises(MarkerError):
        strip_frame(b"\xff\xd8\x00\x00")
    ds = pydicom.dcmread(PYDICOM_DATA / "JPEG-LL.dcm")
    ds.PixelData = encapsulate([b"\xff\xd8" + segment(0xFE, SECRET)[:8]])  # decodes nowhere, walks nowhere
    with pytest.raises(ImagingError) as info:
        deidentify(ds, ds.file_meta.TransferSyntaxUID, "the upload")
    assert info.value.code == "invalid-dicom" and "frame by frame" in info.value.message


def test_jpeg_ls_frames_keep_their_scan_and_lose_their_text() -> None:
    """JPEG-LS stuffs bits, not bytes: an 0xFF in its scan is followed by a byte under 0x80, never a marker."""
    ds = pydicom.dcmread(PYDICOM_DATA / "emri_small_jpeg_ls_lossless.dcm")
    frame = next(generate_frames(ds.PixelData, number_of_frames=10))
    assert b"\xff\xf7" in frame[:64]  # SOF55
    assert strip_frame(jpeg_with_text(frame)) == frame[: frame.rindex(b"\xff\xd9") + 2]  # less its pad byte
    ds.NumberOfFrames = 1
    ds.PixelData = encapsulate([jpeg_with_text(frame)])
    buffer = io.BytesIO()
    ds.save_as(buffer)
    image = decode_image(buffer.getvalue())
    assert SECRET not in image.source_bytes_deidentified and image.pixels.shape == (64, 64)
