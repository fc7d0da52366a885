"""Decode a DICOM upload: read, check, decode and display its pixels, then de-identify the header."""

from __future__ import annotations

from server.imaging.deid import METHOD, deidentify, dicom_bytes
from server.imaging.descriptors import descriptors_of
from server.imaging.dicom_file import read_dicom
from server.imaging.dicom_header import dicom_spacing, optional_int, optional_str
from server.imaging.dicom_pixels import (
    check_dicom_geometry,
    decodable_transfer_syntax,
    decode_dicom_pixels,
    dicom_grey,
)
from server.imaging.types import DecodedImage, ImageLimits, finish


def decode_dicom(data: bytes, limits: ImageLimits, subject: str, *, force: bool) -> DecodedImage:
    ds = read_dicom(data, limits.pixels, subject, force=force)
    check_dicom_geometry(ds, limits, subject)
    transfer_syntax = decodable_transfer_syntax(ds, subject)
    stored, photometric_out = decode_dicom_pixels(ds, transfer_syntax, subject)
    pixels = dicom_grey(stored, photometric_out, ds, subject)
    spacing, source = dicom_spacing(ds)
    stored_ds = deidentify(ds, transfer_syntax, subject)
    return finish(
        pixels,
        format="dicom",
        spacing_mm=spacing,
        spacing_source=source,
        source_bytes_deidentified=dicom_bytes(stored_ds, subject),
        dicom=stored_ds,
        deid_method=METHOD,
        modality=optional_str(stored_ds.get("Modality")),  # only a defined term: the source's may be any text
        photometric=optional_str(stored_ds.get("PhotometricInterpretation")),
        bits_stored=optional_int(ds.get("BitsStored")),
        transfer_syntax=str(transfer_syntax),
        descriptors=descriptors_of(ds),
    )
