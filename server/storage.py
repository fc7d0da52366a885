"""Blob storage behind one small interface: content-addressed (sha256), written atomically.

The local folder is the embedded default; API nodes and workers on several hosts share blobs through S3-compatible
object storage (server.s3_storage, chosen by KAMP_BLOB_URL=s3://bucket/prefix) or a common volume. `blob_store`
answers the one the settings name.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from models.atomic_file import write_bytes_atomically

if TYPE_CHECKING:
    from .settings import Settings

#: Name prefix of a blob being written (a temporary file; one a dead writer left is swept, worker.sweep).
INCOMING = ".incoming-"

_KEY = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class StoredFile:
    """One thing in a store, for its sweep: a blob (`name` is its key) or a temporary file a writer left."""

    name: str
    modified: float  # Unix seconds
    temporary: bool = False


class BlobStore(Protocol):
    def put(self, data: bytes) -> str: ...
    def get(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def delete(self, key: str) -> None: ...
    def listing(self) -> list[StoredFile]: ...
    def discard(self, stored: StoredFile) -> bool: ...


def check_key(key: str) -> str:
    if not _KEY.match(key):
        raise ValueError(f"not a blob key: {key!r}")
    return key


def blob_store(settings: Settings) -> BlobStore:
    """The store the settings name: KAMP_BLOB_URL's object storage, else the folder KAMP_BLOB_DIR."""
    if settings.blob_url:
        from .s3_storage import S3BlobStore

        return S3BlobStore.from_url(settings.blob_url, endpoint_url=settings.s3_endpoint_url)
    return LocalBlobStore(settings.resolved_blob_dir)


class LocalBlobStore:
    """Blobs at <root>/<key[:2]>/<key>, key = sha256 of the content. Writing the same content twice stores it
    once; a write is a temporary file renamed into place, so a reader never sees half a blob."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / key[:2] / check_key(key)

    def put(self, data: bytes) -> str:
        """Stores `data` under its key. Content stored already is not written again but made young again (its time
        refreshed): an upload of the very bytes of an old orphan must not lose them to the sweep before its row
        commits (worker.sweep deletes only unreferenced blobs older than its cut-off)."""
        key = hashlib.sha256(data).hexdigest()
        target = self.path(key)
        try:
            os.utime(target)
            return key
        except FileNotFoundError:
            pass
        write_bytes_atomically(target, data, prefix=INCOMING)
        return key

    def get(self, key: str) -> bytes:
        path = self.path(key)
        if not path.is_file():
            raise FileNotFoundError(f"blob {key} is missing from {self.root}")
        return path.read_bytes()

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def files(self) -> list[Path]:
        """Every file under the root: blobs (named by their key) and temporary `.incoming-*` files."""
        return [p for p in self.root.glob("*/*") if p.is_file()] if self.root.is_dir() else []

    def listing(self) -> list[StoredFile]:
        return [StoredFile(p.name, p.stat().st_mtime, p.name.startswith(INCOMING)) for p in self.files()]

    def discard(self, stored: StoredFile) -> bool:
        """Remove a listed file (a blob or a temporary one), if it is still there and no younger than listed (a
        blob put again since the listing belongs to an upload on its way); whether it was removed."""
        folder = stored.name[:2] if not stored.temporary else None
        candidates = [self.root / folder / stored.name] if folder else list(self.root.glob(f"*/{stored.name}"))
        removed = False
        for path in candidates:
            try:
                if path.stat().st_mtime <= stored.modified:
                    path.unlink()
                    removed = True
            except FileNotFoundError:
                pass
        return removed

    def delete(self, key: str) -> None:
        """Remove a blob; a missing one is no error (deleting twice is harmless). Only for blobs that one owner
        made unique to itself (e.g. a prediction job's inputs): content addressing shares equal blobs."""
        self.path(key).unlink(missing_ok=True)
