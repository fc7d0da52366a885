"""Keyed identifiers for instances stored through STOW-RS.

De-identification gives every upload new random UIDs, so two instances of one study sent one by one would land in
two studies. PS3.15's Basic Profile asks for replacement UIDs "internally consistent within a set of instances":
here the study, series and frame-of-reference UIDs are replaced by keyed digests of the originals (HMAC-SHA256
under the service's pseudonym key and the clinic's id), so every instance of one study and series meets again,
and nobody without the key can tell the original from the stored one. The Patient ID, emptied by the profile, is
replaced the same way, so a viewer can group one patient's studies. A UID that already is one of the clinic's
stored study or series UIDs (a viewer adding an instance to a study it found here) is kept as it is.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Callable
from dataclasses import replace

from pydicom.dataset import Dataset

from ..imaging import DecodedImage
from ..imaging.deid import dicom_bytes
from ..imaging.descriptors import shallow_copy

#: The UIDs made consistent across uploads (each one that the source has).
CONSISTENT_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID")


def _digest(key: bytes, clinic_id: uuid.UUID, kind: str, original: str) -> bytes:
    return hmac.new(key, b"\0".join([kind.encode(), clinic_id.bytes, original.encode()]), hashlib.sha256).digest()


def keyed_uid(key: bytes, clinic_id: uuid.UUID, original: str) -> str:
    """A UID under the 2.25 root (PS3.5 B.2) made from 128 bits of the keyed digest of `original`."""
    return f"2.25.{int.from_bytes(_digest(key, clinic_id, 'uid', original)[:16], 'big')}"


def patient_pseudonym(key: bytes, clinic_id: uuid.UUID, original: str) -> str:
    return _digest(key, clinic_id, "patient", original).hex()[:32]


def consistent(
    image: DecodedImage, source: Dataset, key: bytes, clinic_id: uuid.UUID, known: Callable[[str], bool]
) -> DecodedImage:
    """`image` (decoded and de-identified) with its study, series and frame-of-reference UIDs and its Patient ID
    replaced by the keyed ones of `source`'s (the upload as sent), its stored file rewritten to match. `known(uid)`
    says whether a UID already is a stored one of the clinic (then it is kept)."""
    if image.dicom is None:
        return image
    ds = shallow_copy(image.dicom)
    for keyword in CONSISTENT_UIDS:
        original = str(source.get(keyword, "") or "")
        if original and keyword in ds:
            uid = original if known(original) else keyed_uid(key, clinic_id, original)
            ds.add_new(ds[keyword].tag, "UI", uid)  # a new element: the decoded dataset's stays as it was
    patient = str(source.get("PatientID", "") or "").strip()
    if patient:
        ds.add_new(0x00100020, "LO", patient_pseudonym(key, clinic_id, patient))
    return replace(image, dicom=ds, source_bytes_deidentified=dicom_bytes(ds, "The instance"))
