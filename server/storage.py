"""Blob storage behind one small interface: content-addressed (sha256), written atomically.

The local folder is the embedded default. Several hosts (API nodes and GPU workers) share blobs through a
common volume, or through another `BlobStore` (e.g. object storage via fsspec) with the same six methods.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Protocol

_KEY = re.compile(r"^[0-9a-f]{64}$")


class BlobStore(Protocol):
    def put(self, data: bytes) -> str: ...
    def get(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def path(self, key: str) -> Path: ...
    def files(self) -> list[Path]: ...
    def delete(self, key: str) -> None: ...


class LocalBlobStore:
    """Blobs at <root>/<key[:2]>/<key>, key = sha256 of the content. Writing the same content twice stores it
    once; a write is a temporary file renamed into place, so a reader never sees half a blob."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        if not _KEY.match(key):
            raise ValueError(f"not a blob key: {key!r}")
        return self.root / key[:2] / key

    def put(self, data: bytes) -> str:
        key = hashlib.sha256(data).hexdigest()
        target = self.path(key)
        if target.is_file():
            return key
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
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

    def delete(self, key: str) -> None:
        """Remove a blob; a missing one is no error (deleting twice is harmless). Only for blobs that one owner
        made unique to itself (e.g. a prediction job's inputs): content addressing shares equal blobs."""
        self.path(key).unlink(missing_ok=True)
