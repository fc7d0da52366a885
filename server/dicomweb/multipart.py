"""multipart/related (RFC 2387 over RFC 2046) as STOW-RS sends it and WADO-RS answers it.

A request body is spooled to a temporary file and read through a memory map, so a body of many instances is never
held in memory whole: a part is located by offsets first, and only a part within the per-instance limit is copied
out. The structure of the whole body is checked before any part is used, so a malformed body stores nothing.
"""

from __future__ import annotations

import mmap
import secrets
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

#: The most bytes one part's headers may take (they are a few short lines).
MAX_PART_HEADERS = 16 * 1024
_CRLF = b"\r\n"


class MultipartError(ValueError):
    """The body or its Content-Type is not well-formed multipart/related."""


@dataclass(frozen=True)
class Part:
    """One body part: its headers (names lower-cased) and where its content lies in the body."""

    headers: dict[str, str]
    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


def media_type(value: str) -> tuple[str, dict[str, str]]:
    """A Content-Type or media range -> (the lower-cased type, its parameters, names lower-cased, quotes removed)."""
    head, _, rest = value.partition(";")
    params: dict[str, str] = {}
    while rest:
        name, _, rest = rest.partition("=")
        rest = rest.lstrip()
        if rest.startswith('"'):
            end = rest.find('"', 1)
            end = len(rest) if end < 0 else end
            param, rest = rest[1:end], rest[end + 1 :]
            rest = rest.partition(";")[2]
        else:
            param, _, rest = rest.partition(";")
        if name.strip():
            params[name.strip().lower()] = param.strip()
    return head.strip().lower(), params


def boundary_of(content_type: str) -> bytes:
    """The boundary of a multipart Content-Type; MultipartError if it has none or an invalid one (RFC 2046 5.1.1)."""
    kind, params = media_type(content_type)
    boundary = params.get("boundary", "")
    if not kind.startswith("multipart/"):
        raise MultipartError(f"the body is {kind or 'untyped'}, not multipart")
    if not 1 <= len(boundary) <= 70 or not boundary.isascii():
        raise MultipartError("the multipart Content-Type has no valid boundary parameter")
    return boundary.encode("ascii")


class TooManyParts(MultipartError):
    """The body holds more parts than the caller takes."""


def parts(body: bytes | mmap.mmap, boundary: bytes, max_parts: int | None = None) -> list[Part]:
    """Every part of `body`, located (not copied); MultipartError where the structure is broken anywhere,
    TooManyParts past `max_parts` (each part costs memory and an answer item, however small the body)."""
    located: list[Part] = []
    for part in _iter_parts(body, boundary):
        if max_parts is not None and len(located) == max_parts:
            raise TooManyParts(f"the body holds more than {max_parts} parts")
        located.append(part)
    return located


def _iter_parts(body: bytes | mmap.mmap, boundary: bytes) -> Iterator[Part]:
    delimiter = b"--" + boundary
    pos = _first_delimiter(body, delimiter)
    while True:
        pos += len(delimiter)
        if body[pos : pos + 2] == b"--":  # the close delimiter
            return
        pos = _line_end(body, pos)
        headers, start = _headers(body, pos)
        end = body.find(_CRLF + delimiter, start)
        if end < 0:
            raise MultipartError("the body ends inside a part: its closing boundary is missing")
        yield Part(headers, start, end)
        pos = end + 2


def _first_delimiter(body: bytes | mmap.mmap, delimiter: bytes) -> int:
    """Offset of the first delimiter at the start of a line (what comes before it is the preamble)."""
    pos = body.find(delimiter)
    while pos > 0 and body[pos - 2 : pos] != _CRLF:
        pos = body.find(delimiter, pos + 1)
    if pos < 0:
        raise MultipartError("the body holds no part: its boundary does not occur")
    return pos


def _line_end(body: bytes | mmap.mmap, pos: int) -> int:
    """After a delimiter: skip its transport padding and CRLF; the offset of the next line."""
    while body[pos : pos + 1] in (b" ", b"\t"):
        pos += 1
    if body[pos : pos + 2] != _CRLF:
        raise MultipartError("a boundary line does not end with CRLF")
    return pos + 2


def _headers(body: bytes | mmap.mmap, pos: int) -> tuple[dict[str, str], int]:
    """(the part's headers, the offset its content starts at)."""
    if body[pos : pos + 2] == _CRLF:
        return {}, pos + 2
    end = body.find(_CRLF * 2, pos, pos + MAX_PART_HEADERS)
    if end < 0:
        raise MultipartError("a part's headers do not end with a blank line")
    headers: dict[str, str] = {}
    for line in bytes(body[pos:end]).decode("latin-1").split("\r\n"):
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            raise MultipartError(f"a part's header line is malformed: {line[:60]!r}")
        headers[name.strip().lower()] = value.strip()
    return headers, end + 4


def encode(items: Sequence[tuple[str, bytes]], boundary: str) -> bytes:
    """A multipart body of (Content-Type, content) items, as WADO-RS answers."""
    return b"".join(stream(((kind, _given(content)) for kind, content in items), boundary))


def _given(content: bytes) -> Callable[[], bytes]:
    return lambda: content


def stream(items: Iterable[tuple[str, Callable[[], bytes]]], boundary: str) -> Iterator[bytes]:
    """The same body in pieces, each item's content loaded only when its part is due: an answer of many
    instances holds one of them in memory at a time, not all."""
    delimiter = b"--" + boundary.encode()
    for content_type, load in items:
        content = load()
        yield b"".join([delimiter, _CRLF, b"Content-Type: ", content_type.encode(), _CRLF * 2])
        yield content
        yield _CRLF
    yield delimiter + b"--" + _CRLF


def new_boundary() -> str:
    return f"kamp-{secrets.token_hex(16)}"


class BodySpool:
    """A request body written to an anonymous temporary file, then read through a memory map."""

    def __init__(self) -> None:
        self._file: BinaryIO = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close())
        self._map: mmap.mmap | None = None
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self._file.write(chunk)
        self.size += len(chunk)

    def view(self) -> bytes | mmap.mmap:
        """The whole body (an empty body is b"": a file of 0 bytes cannot be mapped)."""
        if self.size == 0:
            return b""
        self._file.flush()
        self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        return self._map

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
        self._file.close()
