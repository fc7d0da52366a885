"""Text hidden in a DICOM's compressed pixel data: the comment and application segments of each encapsulated
JPEG, JPEG-LS or JPEG 2000 frame (a COM segment or an EXIF block can carry a name, a date, an ID). They hold no
pixel, so they are cut out losslessly, marker by marker, without decoding the image.

Kept: the segments a decoder needs (frame, scan, tables, restart intervals, JPEG-LS parameters) and two
application segments that only describe colour, APP0 (JFIF) and APP14 (Adobe), each cut to its fixed-length header
(``kept_app_segment``, which JPEG files share). Dropped: COM (0xFFFE), APP1-APP13 and APP15 of JPEG and JPEG-LS,
and an APP0 or APP14 under any other identifier; COM (0xFF64) of a JPEG 2000 codestream, in its main header and
in every tile-part header (each tile-part's length, Psot, is corrected; a TLM, whose lengths would then be wrong,
is dropped: it is optional). A frame ends at its end marker (JPEG's EOI, JPEG 2000's EOC): bytes after it are no
pixel and can hold any text. RLE frames hold no markers and pass as they are.
"""

from __future__ import annotations

from collections.abc import Iterator

from pydicom.encaps import encapsulate, generate_frames

#: The application segments kept, by marker: the identifier their payload must start with and the length kept of
#: it. APP0 keeps JFIF's header (version, density) without the thumbnail after it, whose pixels could show or say
#: anything; APP14 keeps Adobe's 12 bytes (version, flags, colour transform).
_KEPT_APP = {0xE0: (b"JFIF\x00", 14), 0xEE: (b"Adobe", 12)}
_JPEG_LS_SOF = 0xF7


class MarkerError(ValueError):
    """A frame's markers cannot be walked (a truncated or malformed codestream)."""


def strip_frames(pixel_data: bytes, frames: int) -> bytes:
    """Encapsulated pixel data (PS3.5 A.4) -> the same frames without text segments, re-encapsulated with a basic
    offset table. Raises MarkerError for a frame that is not a well-formed JPEG-family codestream."""
    return encapsulate([strip_frame(f) for f in generate_frames(pixel_data, number_of_frames=frames)], has_bot=True)


def strip_frame(frame: bytes) -> bytes:
    """One compressed frame without its text segments (JPEG, JPEG-LS, JPEG 2000); other codestreams as they are."""
    if frame[:2] == b"\xff\xd8":
        return b"".join(_jpeg_segments(frame))
    if frame[:2] == b"\xff\x4f":
        return _j2k_without_comments(frame)
    return frame


def kept_app_segment(segment: bytes) -> bytes:
    """An APPn marker segment (marker, length, payload) as it is kept: an APP0 JFIF header without its thumbnail or
    an APP14 Adobe header, cut to its fixed length; b"" for any other (EXIF, XMP, ICC, a JFXX thumbnail, text)."""
    identifier, length = _KEPT_APP.get(segment[1], (b"", 0))
    payload = segment[4:]
    if not identifier or not payload.startswith(identifier) or len(payload) < length:
        return b""
    kept = bytearray(payload[:length])
    if segment[1] == 0xE0:
        kept[12:14] = b"\x00\x00"  # the thumbnail's width and height: none follows
    return segment[:2] + (length + 2).to_bytes(2, "big") + bytes(kept)


def _jpeg_segments(data: bytes) -> Iterator[bytes]:
    """The kept pieces of a JPEG or JPEG-LS codestream, in order (SOI first)."""
    yield data[:2]
    pos, jpeg_ls = 2, False
    while pos < len(data):
        if data[pos] != 0xFF:
            raise MarkerError(f"no marker at byte {pos}")
        marker = data[pos + 1] if pos + 1 < len(data) else 0xD9
        if marker == 0xFF:  # a fill byte before a marker
            pos += 1
            continue
        if marker == 0xD9:  # EOI ends the frame; what follows it is no pixel (encapsulate pads an odd frame again)
            yield data[pos : pos + 2]
            return
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # TEM, RSTn: no length
            yield data[pos : pos + 2]
            pos += 2
            continue
        if pos + 4 > len(data):
            raise MarkerError(f"a marker segment is cut off at byte {pos}")
        end = pos + 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if end > len(data):
            raise MarkerError(f"marker 0xFF{marker:02X} at byte {pos} runs past the frame")
        jpeg_ls = jpeg_ls or marker == _JPEG_LS_SOF
        if 0xE0 <= marker <= 0xEF:
            yield kept_app_segment(data[pos:end])
        elif marker != 0xFE:
            yield data[pos:end]
        pos = end
        if marker == 0xDA:  # SOS: its entropy-coded data runs to the next marker
            scan_end = _next_marker(data, pos, jpeg_ls)
            yield data[pos:scan_end]
            pos = scan_end
    raise MarkerError("the frame has no EOI")


def _next_marker(data: bytes, pos: int, jpeg_ls: bool) -> int:
    """Where the entropy-coded data from `pos` ends: the next 0xFF that starts a marker (JPEG: not followed by
    a stuffed 0x00 or a restart marker; JPEG-LS: followed by a byte with its high bit set), or the end."""
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0 or pos + 1 >= len(data):
            return len(data)
        following = data[pos + 1]
        if jpeg_ls:
            if following >= 0x80:
                return pos
        elif following != 0x00 and not 0xD0 <= following <= 0xD7:
            return pos
        pos += 1


def _j2k_without_comments(data: bytes) -> bytes:
    """A JPEG 2000 codestream without its COM segments (main and tile-part headers)."""
    out, pos, changed_tiles = [data[:2]], 2, False
    while pos < len(data):
        marker = int.from_bytes(data[pos : pos + 2], "big")
        if marker == 0xFFD9:  # EOC ends the codestream; what follows it is no pixel
            out.append(data[pos : pos + 2])
            break
        if marker == 0xFF90:  # SOT: a tile-part, Psot bytes long from here (0: to the end)
            tile, pos = _j2k_tile_part(data, pos)
            changed_tiles = changed_tiles or tile[1]
            out.append(tile[0])
            continue
        end = _j2k_segment_end(data, pos)
        if marker != 0xFF64:
            out.append(data[pos:end])
        pos = end
    if changed_tiles:
        out = [piece for piece in out if piece[:2] != b"\xff\x55"]  # TLM: its tile-part lengths no longer hold
    return b"".join(out)


def _j2k_tile_part(data: bytes, sot: int) -> tuple[tuple[bytes, bool], int]:
    """((the tile-part without its header's COM segments, whether any was cut), where the next one starts)."""
    psot = int.from_bytes(data[sot + 6 : sot + 10], "big")
    end = len(data) if psot == 0 else sot + psot
    if end > len(data):
        raise MarkerError(f"a JPEG 2000 tile-part at byte {sot} runs past the frame")
    header, pos = [], _j2k_segment_end(data, sot)
    while int.from_bytes(data[pos : pos + 2], "big") != 0xFF93:  # up to SOD
        seg_end = _j2k_segment_end(data, pos)
        if int.from_bytes(data[pos : pos + 2], "big") != 0xFF64:
            header.append(data[pos:seg_end])
        pos = seg_end
        if pos >= end:
            raise MarkerError(f"a JPEG 2000 tile-part at byte {sot} has no SOD")
    if psot == 0:  # the last tile-part, up to EOC: packet data never holds 0xFF followed by a byte over 0x8F
        end = data.find(b"\xff\xd9", pos)
        if end < 0:
            raise MarkerError(f"a JPEG 2000 tile-part at byte {sot} has no EOC after it")
    body = b"".join(header) + data[pos:end]
    sot_segment = bytearray(data[sot : _j2k_segment_end(data, sot)])
    cut = (end - sot) - (len(sot_segment) + len(body))
    if psot:
        sot_segment[6:10] = (psot - cut).to_bytes(4, "big")
    return (bytes(sot_segment) + body, cut > 0), end


def _j2k_segment_end(data: bytes, pos: int) -> int:
    if pos + 4 > len(data) or data[pos] != 0xFF:
        raise MarkerError(f"no JPEG 2000 marker segment at byte {pos}")
    end = pos + 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    if end > len(data):
        raise MarkerError(f"a JPEG 2000 marker segment at byte {pos} runs past the frame")
    return end
