"""Decode a DICOM upload: read, check, decode and display its pixels, then de-identify the header."""

from __future__ import annotations

from server.imaging.deid import deidentify, dicom_bytes
from server.imaging.dicom_file import read_dicom
from server.imaging.dicom_header import dicom_spacing, optional_int, optional_str
from server.imaging.dicom_pixels import (
    check_dicom_geometry,
    decodable_transfer_syntax,
    decode_dicom_pixels,
    dicom_grey,
)
from server.imaging.types import DecodedImage, finish


def decode_dicom(data: bytes, max_pixels: int, subject: str, *, force: bool) -> DecodedImage:
    ds = read_dicom(data, max_pixels, subject, force=force)
    check_dicom_geometry(ds, max_pixels, subject)
    transfer_syntax = decodable_transfer_syntax(ds, subject)
    stored, photometric_out = decode_dicom_pixels(ds, transfer_syntax, subject)
    pixels = dicom_grey(stored, photometric_out, ds, subject)
    spacing, source = dicom_spacing(ds)
    facts = {
        "modality": optional_str(ds.get("Modality")),
        "photometric": optional_str(ds.get("PhotometricInterpretation")),
        "bits_stored": optional_int(ds.get("BitsStored")),
        "transfer_syntax": str(transfer_syntax),
    }
    deid_method = deidentify(ds, subject)
    return finish(
        pixels,
        format="dicom",
        spacing_mm=spacing,
        spacing_source=source,
        source_bytes_deidentified=dicom_bytes(ds, subject),
        dicom=ds,
        deid_method=deid_method,
        **facts,
    )
