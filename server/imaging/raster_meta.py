"""The stored copy of a PNG, JPEG, BMP or TIFF upload, without the text these formats carry beside the pixels.

A PNG's tEXt/zTXt/iTXt/eXIf/tIME chunks and any bytes after the zlib stream of its IDAT chunks, a JPEG's
comments, EXIF, XMP and IPTC segments, a JFIF thumbnail or any other payload in APP0 and APP14 (and whatever
follows its end marker), a TIFF's ImageDescription, Artist or DateTime tags, and whatever a BMP holds after its
pixels or between its header and them can all name the patient. PNG and JPEG are filtered chunk by chunk and
segment by segment, the compressed pixels copied byte for byte; a JPEG keeps its EXIF orientation alone, so the
copy displays as the upload did. A TIFF or a BMP is written again, losslessly, from its decoded pixels (a TIFF's
orientation applied) with nothing beyond the image's structure.
"""

from __future__ import annotations

import io
import struct
import zlib

from PIL import ExifTags, Image

from server.imaging.inflate import ZLIB, stream_end
from server.imaging.pixel_text import kept_app_segment

#: Chunks that decode and display the pixels; every other chunk (text, time, EXIF, ICC, private) is dropped.
_PNG_KEPT = {b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"sBIT", b"pHYs"}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

_SOI, _EOI, _SOS, _COM = 0xD8, 0xD9, 0xDA, 0xFE
#: JPEG markers without a length: restart markers and TEM.
_STANDALONE = {0x01, *range(0xD0, 0xD8)}


def without_metadata(data: bytes, image_format: str, image: Image.Image) -> bytes:
    """`data` (an upload of `image_format`, decoded as `image` with its orientation applied) without its text."""
    if image_format == "png":
        return png_without_text(data)
    if image_format == "jpeg":
        return jpeg_without_text(data)
    return rewritten(image, image_format)


def png_without_text(data: bytes) -> bytes:
    """The PNG's signature and its _PNG_KEPT chunks, each as it was (CRC included), up to IEND; the IDAT chunks
    only up to the end of their zlib stream (``_pixels_only``)."""
    out = [_PNG_SIGNATURE]
    idat: list[bytes] = []
    pos = len(_PNG_SIGNATURE)
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if kind != b"IDAT" and idat:  # the IDAT chunks are consecutive
            out.extend(_pixels_only(idat))
            idat = []
        if kind == b"IDAT":
            idat.append(data[pos:end])
        elif kind in _PNG_KEPT:
            out.append(data[pos:end])
        if kind == b"IEND":
            break
        pos = end
    return b"".join(out + _pixels_only(idat))


def _pixels_only(idat: list[bytes]) -> list[bytes]:
    """IDAT chunks as they were where their zlib stream ends with them; else one IDAT holding the stream alone:
    zlib stops at the stream's end, and the bytes after it can hold any text."""
    if not idat:
        return []
    stream = b"".join(chunk[8:-4] for chunk in idat)
    end, _ = stream_end(stream, 0, ZLIB)
    if end == len(stream):
        return idat
    return [struct.pack(">I", end) + b"IDAT" + stream[:end] + struct.pack(">I", zlib.crc32(b"IDAT" + stream[:end]))]


def jpeg_without_text(data: bytes) -> bytes:
    """The JPEG's frame, tables and scans as they were; the headers of APP0 (JFIF) and APP14 (Adobe, its colour
    transform) kept (``kept_app_segment``), every other APPn and COM segment dropped, the EXIF orientation written
    back alone, nothing after EOI."""
    out = [bytes([0xFF, _SOI])]
    orientation = _exif_orientation(data)
    if orientation not in (None, 1):
        out.append(_exif_segment(orientation))
    pos = 2
    while pos + 1 < len(data):
        if data[pos] != 0xFF:
            raise ValueError("not a JPEG marker")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker == _EOI:
            out.append(data[pos : pos + 2])
            break
        if marker in _STANDALONE:
            out.append(data[pos : pos + 2])
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        end = pos + 2 + length
        if marker == _SOS:
            end = _scan_end(data, end)
            out.append(data[pos:end])
        elif 0xE0 <= marker <= 0xEF:
            out.append(kept_app_segment(data[pos:end]))
        elif marker != _COM:
            out.append(data[pos:end])
        pos = end
    return b"".join(out)


def _scan_end(data: bytes, pos: int) -> int:
    """Where the entropy-coded data from `pos` ends: at the first marker that is neither a stuffed 0xFF00 nor a
    restart marker."""
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0 or pos + 1 >= len(data):
            return len(data)
        following = data[pos + 1]
        if following == 0x00 or 0xD0 <= following <= 0xD7:
            pos += 2
            continue
        return pos


def _exif_orientation(data: bytes) -> int | None:
    try:
        with Image.open(io.BytesIO(data)) as image:
            value = image.getexif().get(ExifTags.Base.Orientation)
    except Exception:  # a damaged EXIF block: the upload decoded without it
        return None
    return int(value) if isinstance(value, int) else None


def _exif_segment(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    payload = b"Exif\x00\x00" + exif.tobytes()
    return bytes([0xFF, 0xE1]) + struct.pack(">H", len(payload) + 2) + payload


def rewritten(image: Image.Image, image_format: str) -> bytes:
    """The decoded TIFF (orientation applied) as a new deflate-compressed TIFF with only its structural tags, or
    the decoded BMP as a new BMP: its header, palette and pixels, and nothing in a gap or after them."""
    clean = image.copy()  # a plain image: Pillow would carry over a TIFF's IPTC, XMP and Photoshop tags
    clean.info = {}  # and its ICC profile
    buffer = io.BytesIO()
    if image_format == "tiff":
        clean.save(buffer, format="TIFF", compression="tiff_deflate")
    else:
        clean.save(buffer, format="BMP")
    return buffer.getvalue()
