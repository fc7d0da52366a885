"""Decode single-file MetaImage (.mha), NRRD with attached data and NIfTI (.nii, .nii.gz) through SimpleITK into
(H, W) uint16 grey, with the header's pixel spacing. Only 2-D images (or volumes of one slice) are accepted."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from server.imaging.detect import nifti_header
from server.imaging.errors import ImagingError
from server.imaging.grey import luminance_stretched, stretch, value_range
from server.imaging.refusals import check_size, truncated_image
from server.imaging.types import DecodedImage, ImageLimits, finish, plausible_spacing
from server.imaging.volume_meta import metaio_true, without_volume_text

_ITK_IO = {"mha": ("MetaImageIO", ".mha"), "nrrd": ("NrrdImageIO", ".nrrd"), "nifti": ("NiftiImageIO", ".nii")}


def decode_volume(data: bytes, kind: str, limits: ImageLimits, subject: str) -> DecodedImage:
    spacing_stated = _check_itk_header(data, kind, subject)
    image = _read_itk(data, kind, limits, subject)
    values = sitk.GetArrayFromImage(image)  # (..., H, W) or (..., H, W, components)
    components = image.GetNumberOfComponentsPerPixel()
    values = values.reshape(image.GetHeight(), image.GetWidth(), *((components,) if components > 1 else ()))
    if np.iscomplexobj(values) or components not in (1, 3, 4):
        raise ImagingError(
            "unsupported-photometric",
            f"{subject} has {components} {values.dtype} values per pixel; expected a grey or RGB image.",
        )
    pixels = stretch(values, *value_range(values)) if components == 1 else luminance_stretched(values)
    x, y = image.GetSpacing()[:2]
    known = spacing_stated and plausible_spacing(x, y)
    return finish(
        pixels,
        format=kind,
        spacing_mm=(float(x), float(y)) if known else None,
        spacing_source="header" if known else "none",
        source_bytes_deidentified=_stored_copy(data, kind, limits, subject),
        bits_stored=values.dtype.itemsize * 8,
    )


def _stored_copy(data: bytes, kind: str, limits: ImageLimits, subject: str) -> bytes:
    try:
        return without_volume_text(data, kind, limits, subject)
    except ImagingError:
        raise
    except Exception as exc:  # a header SimpleITK read but the filter cannot walk: never store it unfiltered
        raise ImagingError(
            "truncated-image", f"{subject} could not be stored without its header's text. Save the image again."
        ) from exc


def _check_itk_header(data: bytes, kind: str, subject: str) -> bool:
    """Refuse headers that point to other files (a detached .raw, or any path on the server) or whose pixels the
    stored copy cannot be cut after (see _refuse_undelimited_pixels); return whether the header states a pixel
    spacing (ITK reports 1.0 when it does not)."""
    if kind == "nifti":
        head = nifti_header(data) or b""
        is_nifti1 = head[344:348] == b"n+1\x00"
        order = "<" if int.from_bytes(head[:4], "little") in (348, 540) else ">"
        pixdim = np.frombuffer(head, f"{order}f4", 2, 80) if is_nifti1 else np.frombuffer(head, f"{order}f8", 2, 112)
        return bool(np.all(np.isfinite(pixdim)) and np.all(pixdim > 0))
    header = _text_header(data, kind)
    _refuse_undelimited_pixels(header, kind, subject)
    if kind == "mha":
        data_file = re.search(r"^\s*ElementDataFile\s*=\s*(\S*)", header, re.MULTILINE)
        if data_file is None:
            raise truncated_image(subject)
        if data_file.group(1).upper() != "LOCAL":
            raise ImagingError(
                "unsupported-format",
                f"{subject} is a MetaImage header whose pixels are in a separate file ({data_file.group(1)}); "
                "only single-file .mha is accepted. Save the image as .mha.",
            )
        return re.search(r"^\s*Element(Spacing|Size)\s*=", header, re.MULTILINE) is not None
    if re.search(r"^\s*data\s?file\s*:", header, re.MULTILINE | re.IGNORECASE):
        raise ImagingError(
            "unsupported-format",
            f"{subject} is an NRRD header whose pixels are in a separate file; only .nrrd with attached data is "
            "accepted. Save the image as a single .nrrd file.",
        )
    return re.search(r"^\s*(spacings|space directions)\s*:", header, re.MULTILINE) is not None


def _refuse_undelimited_pixels(header: str, kind: str, subject: str) -> None:
    """Refuse pixels held as text (NRRD ascii or hex, MetaImage BinaryData = False) and bytes skipped before the
    pixels (NRRD byte and line skips, a MetaImage HeaderSize): the stored copy ends where the pixels do
    (server.imaging.volume_meta), and neither the end of text pixels nor skipped bytes can be told from text that
    names the patient. Checked before SimpleITK reads the file: NrrdIO's ascii reader overruns a buffer on a long
    word and takes the process down."""
    if kind == "mha":
        binary = re.search(r"^\s*BinaryData\s*=\s*(\S*)", header, re.MULTILINE)
        as_text = binary is not None and not metaio_true(binary.group(1))
        skip = re.search(r"^\s*HeaderSize\s*=\s*(\S+)", header, re.MULTILINE)
    else:
        encoding = re.search(r"^\s*encoding\s*:(?!=)\s*(.*?)\s*$", header, re.MULTILINE | re.IGNORECASE)
        as_text = encoding is not None and encoding.group(1).lower() not in ("raw", "gzip", "gz")
        skip = re.search(r"^\s*(?:line|byte)\s?skip\s*:(?!=)\s*(\S+)", header, re.MULTILINE | re.IGNORECASE)
    if as_text:
        raise ImagingError(
            "unsupported-format",
            f"{subject} holds its pixels as text or in an encoding this service does not store. "
            "Save the image again with raw or gzip-compressed binary pixels.",
        )
    if skip is not None and skip.group(1) != "0":
        raise ImagingError(
            "unsupported-format",
            f"{subject} skips bytes before its pixels (a byte skip, line skip or HeaderSize), which this service "
            "does not store. Save the image again as a single file without skipped bytes.",
        )


def _text_header(data: bytes, kind: str) -> str:
    """The text header of a MetaImage (up to ElementDataFile's line) or an NRRD (up to the blank line)."""
    head = data[:65536].decode("latin-1")
    if kind == "mha":
        end = re.search(r"^\s*ElementDataFile\s*=.*$", head, re.MULTILINE)
        return head[: end.end()] if end else head
    return re.split(r"\r?\n\r?\n", head, maxsplit=1)[0]


def _read_itk(data: bytes, kind: str, limits: ImageLimits, subject: str) -> sitk.Image:
    """Read through a temporary file with the suffix SimpleITK needs, checking the declared size first."""
    io_name, suffix = _ITK_IO[kind]
    if kind == "nifti" and data.startswith(b"\x1f\x8b"):
        suffix = ".nii.gz"
    with tempfile.TemporaryDirectory(prefix="kamp-imaging-") as folder:
        path = Path(folder) / f"upload{suffix}"
        path.write_bytes(data)
        reader = sitk.ImageFileReader()
        reader.SetImageIO(io_name)
        reader.SetFileName(str(path))
        try:
            reader.ReadImageInformation()
        except RuntimeError as exc:
            raise truncated_image(subject) from exc
        _check_itk_size(reader, limits, subject)
        try:
            return reader.Execute()
        except RuntimeError as exc:
            raise truncated_image(subject) from exc


def _check_itk_size(reader: sitk.ImageFileReader, limits: ImageLimits, subject: str) -> None:
    """A 2-D image, or 3-D and more with a single slice (every size after the first two is 1), within `limits`
    (its bytes: components x the component type's size, as ITK will hold it)."""
    size = reader.GetSize()
    if len(size) > 2 and any(extent != 1 for extent in size[2:]):
        raise ImagingError(
            "not-2d",
            f"{subject} is a {len(size)}-D volume of size {' x '.join(map(str, size))}; landmarks are placed on a "
            "single 2-D image. Save one slice or projection as its own file.",
        )
    component = sitk.Image([1] * reader.GetDimension(), reader.GetPixelID()).GetSizeOfPixelComponent()
    check_size(int(size[0]), int(size[1]), limits, subject, reader.GetNumberOfComponents() * component)
