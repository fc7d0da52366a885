"""models.atomic_file: the new content replaces the old whole; a failed write keeps the old file and leaves no
temporary file; the temporary file's name carries the prefix a sweeper looks for."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import pytest

from models.atomic_file import write_atomically, write_bytes_atomically


def test_replaces_the_file_and_creates_its_folder(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b.bin"
    write_bytes_atomically(path, b"old")
    write_bytes_atomically(path, b"new")
    assert path.read_bytes() == b"new"
    assert [p.name for p in path.parent.iterdir()] == ["b.bin"]


def test_a_writer_that_fails_halfway_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "b.bin"
    write_bytes_atomically(path, b"old")

    def half(f: BinaryIO) -> None:
        f.write(b"ne")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(path, half)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["b.bin"]


def test_the_temporary_file_is_named_by_the_prefix(tmp_path: Path) -> None:
    seen: list[str] = []

    def record(f: BinaryIO) -> None:
        seen.extend(p.name for p in tmp_path.iterdir())
        f.write(b"x")

    write_atomically(tmp_path / "blob", record, prefix=".incoming-")
    assert len(seen) == 1 and seen[0].startswith(".incoming-") and seen[0].endswith(".tmp")
    assert (tmp_path / "blob").read_bytes() == b"x"
