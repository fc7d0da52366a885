"""A prediction job's images in blob storage, kept only until the job ends.

Each image is stored as its (de-identified) upload wrapped in an envelope that names the job: the store is
content-addressed, so without it a job's blob could be the very blob of a study or of another job, and deleting
it when the job ends would take theirs too. The worker decodes the upload again and checks that the pixels are
the ones validated at submission. Web-free: the API writes these, the worker reads and deletes them.
"""

from __future__ import annotations

import uuid
from typing import Any

from ..imaging import DecodedImage
from ..storage import BlobStore

_MAGIC = b"KAMP-PREDICTION-JOB-INPUT\n"


def pack(job_id: uuid.UUID, data: bytes) -> bytes:
    """The blob to store for one upload of the job."""
    return _MAGIC + job_id.bytes + data


def unpack(job_id: uuid.UUID, blob: bytes) -> bytes:
    """The upload back out of its blob; refuses a blob of another job or of something else."""
    head = _MAGIC + job_id.bytes
    if not blob.startswith(head):
        raise ValueError(f"blob is not an input of prediction job {job_id}")
    return blob[len(head) :]


def store(blobs: BlobStore, job_id: uuid.UUID, image: DecodedImage, filename: str) -> dict[str, Any]:
    """Store one validated image; answers its entry for `PredictionJob.inputs`. `filename`: a neutral name
    (server.studies.names.neutral_name), never the uploaded one."""
    key = blobs.put(pack(job_id, image.source_bytes_deidentified))
    return {
        "blob": key,
        "filename": filename,
        "width": image.width,
        "height": image.height,
        "spacing": list(image.spacing_mm) if image.spacing_mm else None,
        "spacing_source": str(image.spacing_source),
        "pixel_sha256": image.pixel_sha256,
    }


def user_spacing(entry: dict[str, Any]) -> tuple[float, float] | None:
    """The spacing the client gave at submission (to decode the upload again as it was), else None."""
    spacing = entry.get("spacing")
    return (float(spacing[0]), float(spacing[1])) if spacing and entry.get("spacing_source") == "user" else None


def delete(blobs: BlobStore, entries: list[dict[str, Any]]) -> None:
    """Remove the job's image blobs; those already gone are skipped."""
    for entry in entries:
        blobs.delete(entry["blob"])
