from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from server.storage import LocalBlobStore


def test_content_addressed_and_stored_once(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    key = store.put(b"hello")
    assert key == hashlib.sha256(b"hello").hexdigest()
    assert store.put(b"hello") == key
    assert store.get(key) == b"hello" and store.exists(key)
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [key]


def test_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalBlobStore(tmp_path)

    def broken_replace(*_: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        store.put(b"data")
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_bad_and_missing_keys(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    with pytest.raises(ValueError):
        store.get("../../etc/passwd")
    with pytest.raises(FileNotFoundError):
        store.get("0" * 64)
    assert not store.exists("0" * 64)


def test_delete_is_idempotent(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    key = store.put(b"job input")
    store.delete(key)
    store.delete(key)
    assert not store.exists(key) and [p for p in tmp_path.rglob("*") if p.is_file()] == []
