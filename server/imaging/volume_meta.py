"""The stored copy of an MHA, NRRD or NIfTI upload, without the free text their headers may carry.

NIfTI's descrip, aux_file, intent_name and db_name fields and its header extensions (converters put DICOM
headers there), MetaImage keys beyond the image's geometry and type (a `Comment`, a `PatientName`), and NRRD
comments, key/value pairs and axis labels can all name the patient. The copy keeps every field that places,
types and encodes the pixels, and the pixel bytes as they were.
"""

from __future__ import annotations

import gzip
import re
import struct

#: NIfTI text fields, (offset, length) in the NIfTI-1 and NIfTI-2 headers.
_NIFTI1_TEXT = ((4, 10), (14, 18), (148, 80), (228, 24), (328, 16))
_NIFTI2_TEXT = ((240, 80), (320, 24), (508, 16))

_MHA_KEYS = {
    "objecttype",
    "objectsubtype",
    "ndims",
    "binarydata",
    "binarydatabyteordermsb",
    "elementbyteordermsb",
    "compresseddata",
    "compresseddatasize",
    "transformmatrix",
    "rotation",
    "orientation",
    "offset",
    "position",
    "origin",
    "centerofrotation",
    "anatomicalorientation",
    "elementspacing",
    "dimsize",
    "elementsize",
    "elementnumberofchannels",
    "elementtype",
    "headersize",
    "elementmin",
    "elementmax",
    "elementdatafile",
}
_NRRD_FIELDS = {
    "type",
    "dimension",
    "space",
    "space dimension",
    "sizes",
    "space directions",
    "spacings",
    "thicknesses",
    "axis mins",
    "axismins",
    "axis maxs",
    "axismaxs",
    "centers",
    "centerings",
    "kinds",
    "units",
    "space units",
    "space origin",
    "measurement frame",
    "min",
    "max",
    "old min",
    "oldmin",
    "old max",
    "oldmax",
    "endian",
    "encoding",
    "line skip",
    "lineskip",
    "byte skip",
    "byteskip",
    "block size",
    "blocksize",
}


def without_volume_text(data: bytes, kind: str) -> bytes:
    """`data` (an upload of `kind`: "mha", "nrrd" or "nifti") without the text of its header."""
    if kind == "nifti":
        if data.startswith(b"\x1f\x8b"):
            return gzip.compress(_nifti_without_text(gzip.decompress(data)), mtime=0)  # no name in the gzip header
        return _nifti_without_text(data)
    if kind == "mha":
        return _mha_without_text(data)
    return _nrrd_without_text(data)


def _nifti_without_text(data: bytes) -> bytes:
    out = bytearray(data)
    little = int.from_bytes(data[:4], "little") in (348, 540)
    order = "<" if little else ">"
    nifti2 = struct.unpack(f"{order}i", data[:4])[0] == 540
    for offset, length in _NIFTI2_TEXT if nifti2 else _NIFTI1_TEXT:
        out[offset : offset + length] = bytes(length)
    header, voxels_at = (
        (540, struct.unpack(f"{order}q", data[168:176])[0])
        if nifti2
        else (
            348,
            int(struct.unpack(f"{order}f", data[108:112])[0]),
        )
    )
    if len(data) >= header + 4 and data[header] != 0:  # header extensions, up to the pixels
        out[header : max(header + 4, voxels_at)] = bytes(max(4, voxels_at - header))
    return bytes(out)


def _mha_without_text(data: bytes) -> bytes:
    end = re.search(rb"^[ \t]*ElementDataFile[ \t]*=.*?(\r?\n|$)", data[:65536], re.MULTILINE)
    if end is None:
        raise ValueError("no ElementDataFile line")
    lines = data[: end.end()].decode("latin-1").splitlines()
    kept = [line for line in lines if line.split("=", 1)[0].strip().lower() in _MHA_KEYS]
    return ("\n".join(kept) + "\n").encode("latin-1") + data[end.end() :]


def _nrrd_without_text(data: bytes) -> bytes:
    split = re.search(rb"\r?\n\r?\n", data[:65536])
    if split is None:
        raise ValueError("no blank line after the NRRD header")
    magic, *fields = data[: split.start()].decode("latin-1").splitlines()
    kept = [line for line in fields if ":=" not in line and line.split(":", 1)[0].strip().lower() in _NRRD_FIELDS]
    return ("\n".join([magic, *kept]) + "\n\n").encode("latin-1") + data[split.end() :]
