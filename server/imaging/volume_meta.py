"""The stored copy of an MHA, NRRD or NIfTI upload, without the free text their headers may carry.

NIfTI's descrip, aux_file, intent_name and db_name fields and whatever lies between its header and its voxels
(extensions, where converters put DICOM headers, or any bytes at all whatever the extension flag says), MetaImage
keys beyond the image's geometry and type (a `Comment`, a `PatientName`; also ObjectSubType, AnatomicalOrientation,
ElementMin and ElementMax, which MetaIO takes as any text), NRRD comments, key/value pairs, axis labels, units (free
text in quotes) and min, max, old min and old max (teem reads them past any text), and anything after the pixel
data can all name the patient. The copy keeps every field that places, types and encodes the pixels, and the pixel
bytes as they were, up to the last of them. A kept field whose value holds more than its numbers, flag or defined
words (MetaIO and teem read those and ignore text after them) makes the upload refused rather than stored.

Headers that skip bytes before their pixels (NRRD byte and line skips, a MetaImage HeaderSize) or hold their
pixels as text (NRRD ascii or hex, MetaImage BinaryData = False), where the end of the pixels cannot be told
from text after them, are refused before decoding (server.imaging.volume); here they raise ValueError.
"""

from __future__ import annotations

import gzip
import math
import re
import struct
import zlib

from server.imaging.errors import ImagingError
from server.imaging.inflate import ZLIB_OR_GZIP, stream_end
from server.imaging.types import ImageLimits

#: NIfTI text fields, (offset, length) in the NIfTI-1 and NIfTI-2 headers.
_NIFTI1_TEXT = ((4, 10), (14, 18), (148, 80), (228, 24), (328, 16))
_NIFTI2_TEXT = ((240, 80), (320, 24), (508, 16))

#: Bytes per value of each NIfTI datatype code (nifti1.h: uint8, int16, int32, float32, complex64, float64, rgb24,
#: int8, uint16, uint32, int64, uint64, float128, complex128, complex256, rgba32); the voxels are dim[1] x ... x
#: dim[dim[0]] values.
_NIFTI_BYTES = dict(
    zip(
        (2, 4, 8, 16, 32, 64, 128, 256, 512, 768, 1024, 1280, 1536, 1792, 2048, 2304),
        (1, 2, 4, 4, 8, 8, 3, 1, 2, 4, 8, 8, 16, 16, 32, 4),
        strict=True,
    )
)


def _sizes(names_by_size: dict[int, str]) -> dict[str, int]:
    """{bytes: "name,name,..."} -> {name: bytes}."""
    return {name: size for size, names in names_by_size.items() for name in names.split(",")}


#: Bytes per value of each MetaImage ElementType (MetaIO's MET_ValueTypeSize; MET_LONG is 4 bytes there).
_MET_BYTES = _sizes(
    {
        1: "MET_CHAR,MET_UCHAR",
        2: "MET_SHORT,MET_USHORT",
        4: "MET_INT,MET_UINT,MET_LONG,MET_ULONG,MET_FLOAT",
        8: "MET_LONG_LONG,MET_ULONG_LONG,MET_DOUBLE",
    }
)
#: Bytes per value of each NRRD type name (teem's names and their equivalents, compared in lower case).
_NRRD_BYTES = _sizes(
    {
        1: "signed char,int8,int8_t,uchar,unsigned char,uint8,uint8_t",
        2: "short,short int,signed short,signed short int,int16,int16_t,ushort,unsigned short,unsigned short int,"
        "uint16,uint16_t",
        4: "int,signed int,int32,int32_t,uint,unsigned int,uint32,uint32_t,float",
        8: "longlong,long long,long long int,signed long long,signed long long int,int64,int64_t,ulonglong,"
        "unsigned long long,unsigned long long int,uint64,uint64_t,double",
    }
)

#: One number (no two without a blank between them, so that no value can be split two ways).
_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[-+]?\d+)?|[-+]?(?:nan|inf)"
_ITEM = rf"{_NUMBER}|none|\(\s*(?:{_NUMBER})(?:\s*,\s*(?:{_NUMBER}))*\s*\)"
#: A numeric field's value (stripped): numbers, NRRD's vectors of them and "none", blank-separated.
_NUMBERS = rf"(?:(?:{_ITEM})(?:\s+(?:{_ITEM}))*)?"
_FLAG = r"true|false|t|f|1|0"
#: Words of a field's defined terms; teem refuses any word it does not define in these fields.
_WORDS = r"[\w\s?-]*"

#: The MetaImage keys kept, and what each value may hold (in any case): MetaIO reads a number or a flag and
#: ignores any text after it, so a value with more than its pattern allows is refused rather than stored.
_MHA_KEYS = {
    "objecttype": "image",
    "ndims": _NUMBERS,
    "binarydata": _FLAG,
    "binarydatabyteordermsb": _FLAG,
    "elementbyteordermsb": _FLAG,
    "compresseddata": _FLAG,
    "compresseddatasize": _NUMBERS,
    "transformmatrix": _NUMBERS,
    "rotation": _NUMBERS,
    "orientation": _NUMBERS,
    "offset": _NUMBERS,
    "position": _NUMBERS,
    "origin": _NUMBERS,
    "centerofrotation": _NUMBERS,
    "elementspacing": _NUMBERS,
    "dimsize": _NUMBERS,
    "elementsize": _NUMBERS,
    "elementnumberofchannels": _NUMBERS,
    "elementtype": r"met_\w+",
    "elementdatafile": "local",
}
#: The NRRD fields kept, and what each value may hold, likewise (teem reads numbers past trailing text too).
_NRRD_FIELDS = {
    "type": _WORDS,
    "dimension": _NUMBERS,
    "space": _WORDS,
    "space dimension": _NUMBERS,
    "sizes": _NUMBERS,
    "space directions": _NUMBERS,
    "spacings": _NUMBERS,
    "thicknesses": _NUMBERS,
    "axis mins": _NUMBERS,
    "axismins": _NUMBERS,
    "axis maxs": _NUMBERS,
    "axismaxs": _NUMBERS,
    "centers": _WORDS,
    "centerings": _WORDS,
    "kinds": _WORDS,
    "space origin": _NUMBERS,
    "measurement frame": _NUMBERS,
    "endian": _WORDS,
    "encoding": _WORDS,
}


def without_volume_text(data: bytes, kind: str, limits: ImageLimits, subject: str) -> bytes:
    """`data` (an upload of `kind`: "mha", "nrrd" or "nifti") without the text of its header."""
    if kind == "nifti":
        if data.startswith(b"\x1f\x8b"):
            inflated = _inflated_nifti(data, limits, subject)
            return gzip.compress(_nifti_without_text(inflated), mtime=0)  # no name in the gzip header
        return _nifti_without_text(data)
    if kind == "mha":
        return _mha_without_text(data)
    return _nrrd_without_text(data)


def _nifti_without_text(data: bytes) -> bytes:
    out = bytearray(data)
    header, voxels_at, voxels = _nifti_layout(data)
    for offset, length in _NIFTI2_TEXT if header == 540 else _NIFTI1_TEXT:
        out[offset : offset + length] = bytes(length)
    out[header:voxels_at] = bytes(voxels_at - header)  # extensions, or any bytes, whatever the extension flag says
    return _part(out, 0, voxels_at + voxels)


def _nifti_layout(data: bytes) -> tuple[int, int, int]:
    """(the header's size, where the voxels start, the voxels' bytes) of a NIfTI-1 or NIfTI-2 file, from its
    header (the first 540 bytes suffice); ValueError for a header without a valid dim[0] or datatype."""
    order = "<" if int.from_bytes(data[:4], "little") in (348, 540) else ">"
    if struct.unpack_from(f"{order}i", data)[0] == 540:
        header, datatype = 540, struct.unpack_from(f"{order}h", data, 12)[0]
        dims = struct.unpack_from(f"{order}8q", data, 16)
        voxels_at = struct.unpack_from(f"{order}q", data, 168)[0]
    else:
        header, datatype = 348, struct.unpack_from(f"{order}h", data, 70)[0]
        dims = struct.unpack_from(f"{order}8h", data, 40)
        voxels_at = int(struct.unpack_from(f"{order}f", data, 108)[0])
    if not 1 <= dims[0] <= 7 or datatype not in _NIFTI_BYTES:
        raise ValueError("a NIfTI header without a valid dim[0] or datatype")
    voxels_at = max(header, voxels_at)  # an offset inside the header: the voxels follow it (as nifti1_io reads)
    return header, voxels_at, math.prod(max(1, n) for n in dims[1 : dims[0] + 1]) * _NIFTI_BYTES[datatype]


def _mha_without_text(data: bytes) -> bytes:
    end = re.search(rb"^[ \t]*ElementDataFile[ \t]*=.*?(\r?\n|$)", data[:65536], re.MULTILINE)
    if end is None:
        raise ValueError("no ElementDataFile line")
    lines = data[: end.end()].decode("latin-1").splitlines()
    kept = [line for line in lines if line.split("=", 1)[0].strip().lower() in _MHA_KEYS]
    fields = _values(kept, "=", _MHA_KEYS)
    if not metaio_true(fields.get("binarydata", "T")):
        raise ValueError("MetaImage pixels held as text")
    ndims = int(fields["ndims"])
    size = math.prod(int(n) for n in fields["dimsize"].split()[:ndims])
    size *= int(fields.get("elementnumberofchannels", 1)) * _MET_BYTES[fields["elementtype"].upper()]
    start = end.end()
    if metaio_true(fields.get("compresseddata", "F")):
        pixels_end = _inflated_end(data, start, size)
        if int(fields.get("compresseddatasize", -1)) != pixels_end - start:  # MetaIO reads this many bytes
            raise ValueError("CompressedDataSize is not the length of the compressed pixels")
    else:
        pixels_end = start + size
    return ("\n".join(kept) + "\n").encode("latin-1") + _part(data, start, pixels_end)


def metaio_true(flag: str) -> bool:
    """A MetaImage flag's value as MetaIO reads it: true where it starts with T, t or 1."""
    return flag[:1] in ("T", "t", "1")


def _nrrd_without_text(data: bytes) -> bytes:
    split = re.search(rb"\r?\n\r?\n", data[:65536])
    if split is None:
        raise ValueError("no blank line after the NRRD header")
    magic, *fields = data[: split.start()].decode("latin-1").splitlines()
    kept = [line for line in fields if ":=" not in line and line.split(":", 1)[0].strip().lower() in _NRRD_FIELDS]
    values = _values(kept, ":", _NRRD_FIELDS)
    size = math.prod(int(n) for n in values["sizes"].split()) * _NRRD_BYTES[" ".join(values["type"].lower().split())]
    start, encoding = split.end(), values["encoding"].lower()
    if encoding == "raw":
        pixels_end = start + size
    elif encoding in ("gzip", "gz"):
        pixels_end = _inflated_end(data, start, size)
    else:
        raise ValueError(f"NRRD pixels encoded as {encoding}")
    return ("\n".join([magic, *kept]) + "\n\n").encode("latin-1") + _part(data, start, pixels_end)


def _values(lines: list[str], separator: str, patterns: dict[str, str]) -> dict[str, str]:
    """{field: value} of kept header lines; ValueError where a value holds more than its field's pattern."""
    values = {}
    for line in lines:
        key, value = (part.strip() for part in line.split(separator, 1))
        if not re.fullmatch(patterns[key.lower()], value, re.IGNORECASE):
            raise ValueError(f"the header field {key!r} holds more than its values")
        values[key.lower()] = value
    return values


def _inflated_end(data: bytes, start: int, size: int) -> int:
    """Where the zlib or gzip streams from `start` that inflate to `size` bytes end (a gzip file may hold
    several members; NrrdIO reads on until it has the pixels)."""
    pos = start
    while size > 0:
        pos, inflated = stream_end(data, pos, ZLIB_OR_GZIP)
        size -= inflated
    return pos


def _part(data: bytes | bytearray, start: int, end: int) -> bytes:
    """`data` from `start` up to `end`, where the pixels end: what follows them is no pixel and may be any text."""
    if end > len(data):
        raise ValueError("the pixels run past the end of the file")
    return bytes(memoryview(data)[start:end])


#: Room for a NIfTI header and its extensions before the pixels, beside the decoded-bytes limit.
_NIFTI_HEADER_ROOM = 16 * 2**20
_INFLATE_PIECE = 2**20


def _inflated_nifti(data: bytes, limits: ImageLimits, subject: str) -> bytes:
    """A .nii.gz upload's NIfTI file, inflated in pieces only up to where its header says the pixels end: what the
    stream holds beyond is never inflated, and is left out of the stored copy. A header that declares more than
    the decoded-bytes limit (and room for header extensions) is refused."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = bytearray(inflater.decompress(data, 540))
    _, voxels_at, voxels = _nifti_layout(bytes(out))
    end = voxels_at + voxels
    if end > limits.decoded_bytes + _NIFTI_HEADER_ROOM:
        raise ImagingError(
            "image-too-large",
            f"{subject} is a NIfTI file whose header declares {end:,} bytes (header, extensions and pixels), "
            f"more than the limit of {limits.decoded_bytes + _NIFTI_HEADER_ROOM:,}. Save the image again without "
            "header extensions, or at a lower resolution.",
        )
    pending = inflater.unconsumed_tail
    while len(out) < end:
        if inflater.eof:  # a stream of several gzip members (as bgzip writes) goes on in the next one
            if not inflater.unused_data:
                break
            pending, inflater = inflater.unused_data, zlib.decompressobj(16 + zlib.MAX_WBITS)
        piece = inflater.decompress(pending, min(end - len(out), _INFLATE_PIECE))
        if not piece and not inflater.eof and len(inflater.unconsumed_tail) == len(pending):
            break  # the stream ends before the pixels do: keep what there is, as SimpleITK read it
        out += piece
        pending = inflater.unconsumed_tail
    del out[end:]
    return bytes(out)
