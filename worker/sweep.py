"""The reaper's sweep of the blob folder: blobs that no row refers to (an API process died between writing a
study's or a prediction job's blobs and committing its row) and temporary `.incoming-*` files a dead writer left,
once older than `orphan_blob_after_s`, so that no upload still on its way to its commit loses its files.
"""

from __future__ import annotations

import logging
import time

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.db.entities import DicomInstance, ModelVersion, PredictionJob, Study
from server.db.session import session_factory
from server.settings import Settings
from server.storage import blob_store

log = logging.getLogger("kamp.worker")


def referenced_blobs(session: Session) -> set[str]:
    """Every blob key a row refers to: studies' source and pixels, versions' checkpoints, DICOM instances (a
    structured report is stored as an instance alone), prediction jobs' inputs and results."""
    keys: set[str] = set()
    for source, pixels in session.execute(select(Study.source_blob, Study.pixels_blob)):
        keys.update((source, pixels))
    keys.update(session.scalars(select(ModelVersion.checkpoint_blob)))
    keys.update(session.scalars(select(DicomInstance.blob)))
    for result, inputs in session.execute(select(PredictionJob.result_blob, PredictionJob.inputs)):
        keys.update([result] if result else [])
        keys.update(entry["blob"] for entry in inputs or [])
    return keys


def sweep_orphan_blobs(settings: Settings) -> list[str]:
    """Delete old unreferenced blobs and temporary files; returns the names of what was deleted."""
    store = blob_store(settings)
    cutoff = time.time() - settings.orphan_blob_after_s
    old = [f for f in store.listing() if f.modified < cutoff]
    if not old:
        return []
    with session_factory(settings.resolved_database_url)() as session:
        keep = referenced_blobs(session)  # read after listing: a row committed meanwhile is seen
    unreferenced = [f for f in old if f.temporary or f.name not in keep]
    removed = [f for f in unreferenced if store.discard(f)]
    if removed:
        log.warning("swept %d orphan blob or temporary files", len(removed))
    return [f.name for f in removed]
