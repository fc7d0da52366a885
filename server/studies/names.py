"""Uploaded file names are identifiers (PACS exports are named like MUELLER_JUERGEN_<id>.dcm), so none is stored.

A study keeps only a keyed digest of its name's stem (HMAC-SHA256 under the service's pseudonym key), enough for
an annotation import to match its files to the uploads by name; a prediction job keeps each image's position and
extension. The key comes from KAMP_PSEUDONYM_KEY, or else from a random key file created once under the data
folder: replicas of the API that do not share that folder must share the setting.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import secrets
from pathlib import Path, PurePosixPath

from server.settings import Settings

KEY_FILE = "pseudonym.key"


def pseudonym_key(settings: Settings) -> bytes:
    """The key of every name digest: the setting's, else the data folder's key file (created on first use)."""
    if settings.pseudonym_key is not None:
        return settings.pseudonym_key.get_secret_value().encode()
    return _file_key(settings.data_dir.resolve() / KEY_FILE)


@functools.cache
def _file_key(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # made before, maybe by another process a moment ago: read it
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as f:
        f.write(secrets.token_hex(32).encode())
    return path.read_bytes().strip()


def _stem(filename: str) -> str:
    """The base name without its last extension, separators of both systems understood."""
    name = PurePosixPath(filename.replace("\\", "/")).name
    return name.rsplit(".", 1)[0] if "." in name[1:] else name


def name_key(filename: str | None, key: bytes) -> str | None:
    """The digest a study keeps of the file name it was uploaded under (None for none)."""
    stem = _stem(filename) if filename else ""
    return _digest(stem, key) if stem else None


def reference_keys(reference: str, key: bytes) -> list[str]:
    """The digests an import's file reference ("001", "001.jpg", "dir/001.txt") may match a study by: as a stem,
    then without its extension."""
    name = PurePosixPath(reference.replace("\\", "/")).name
    return list(dict.fromkeys(_digest(stem, key) for stem in (name, _stem(name)) if stem))


def _digest(stem: str, key: bytes) -> str:
    return hmac.new(key, stem.encode(), hashlib.sha256).hexdigest()


#: The extensions a prediction job keeps: the decoder recognises a MetaImage header by its extension.
_KEPT_SUFFIXES = (".mha", ".mhd")


def neutral_name(position: int, filename: str | None) -> str:
    """What a prediction job keeps of its `position`-th image's name (1-based): "image-3", or "image-3.mha" where
    the decoder needs the extension."""
    suffix = PurePosixPath((filename or "").replace("\\", "/")).suffix.lower()
    return f"image-{position}{suffix if suffix in _KEPT_SUFFIXES else ''}"
