"""Atomic file writes, the one rule every stored file follows (blobs, checkpoints, training states, benchmark
results): a reader sees the old file or the new one, never part of either, and a writer killed at any moment
leaves at most a temporary file of its own, never a damaged target."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def write_atomically(path: Path, write: Callable[[BinaryIO], object], *, prefix: str | None = None) -> None:
    """Call `write` on a temporary file beside `path` (the writer's own, named `<prefix>...`, by default
    `<path's name>...tmp`), flush it to disk and rename it into place; on any failure remove it and re-raise.
    The parent folder is created if missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix or path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes_atomically(path: Path, data: bytes, *, prefix: str | None = None) -> None:
    """`data` written to `path` by `write_atomically`."""
    write_atomically(path, lambda f: f.write(data), prefix=prefix)
