"""The multipart/related parser and writer on bodies with known answers."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from server.dicomweb.multipart import BodySpool, MultipartError, boundary_of, encode, media_type, parts, stream


def _contents(body: bytes, boundary: bytes) -> list[bytes]:
    return [body[p.start : p.end] for p in parts(body, boundary)]


def test_parts_with_preamble_padding_headers_and_epilogue() -> None:
    body = (
        b"preamble, ignored\r\n--b1 \t\r\nContent-Type: application/dicom\r\nX-Extra: 1\r\n\r\nFIRST --b1 and more"
        b"\r\n--b1\r\n\r\nsecond\r\n--b1--\r\nepilogue --b1\r\n"
    )
    located = parts(body, b"b1")
    # A boundary string inside content ("--b1 and more" does not start a line) stays content.
    assert [body[p.start : p.end] for p in located] == [b"FIRST --b1 and more", b"second"]
    assert located[0].headers == {"content-type": "application/dicom", "x-extra": "1"} and located[1].headers == {}
    assert located[0].size == 19


def test_binary_content_round_trips_through_the_writer() -> None:
    items = [("application/dicom", bytes(range(256)) * 4), ("application/dicom", b"\r\n--x\r\n"), ("text/plain", b"")]
    body = encode(items, "x-boundary")
    located = parts(body, b"x-boundary")
    assert [body[p.start : p.end] for p in located] == [content for _, content in items]
    assert [p.content_type for p in located] == [kind for kind, _ in items]


def test_a_streamed_body_reads_each_content_when_its_part_is_due() -> None:
    loaded: list[int] = []

    def loader(n: int) -> Callable[[], bytes]:
        def load() -> bytes:
            loaded.append(n)
            return bytes([n]) * 1000

        return load

    pieces = stream([("application/dicom", loader(n)) for n in range(3)], "s")
    body = next(pieces)
    assert loaded == [0]  # the first part begins; the others are not read yet
    while loaded != [0, 1]:
        body += next(pieces)
    assert body.endswith(b"\r\n--s\r\nContent-Type: application/dicom\r\n\r\n")
    body += b"".join(pieces)
    assert loaded == [0, 1, 2] and _contents(body, b"s") == [bytes([n]) * 1000 for n in range(3)]
    assert body == encode([("application/dicom", bytes([n]) * 1000) for n in range(3)], "s")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"no boundary here", "boundary does not occur"),
        (b"--b\r\nContent-Type: a\r\n\r\ndata without end", "closing boundary is missing"),
        (b"--b\r\nContent-Type a\r\n\r\nx\r\n--b--", "header line is malformed"),
        (b"--bjunk\r\n\r\nx\r\n--b--", "does not end with CRLF"),
        (b"--b\r\nContent-Type: a" + b"x" * 20000, "headers do not end"),
    ],
)
def test_broken_bodies_are_refused(body: bytes, message: str) -> None:
    with pytest.raises(MultipartError, match=message):
        parts(body, b"b")


def test_media_types_and_boundaries() -> None:
    kind, params = media_type('Multipart/Related; type="application/dicom"; boundary="a;b=c"; transfer-syntax=*')
    assert kind == "multipart/related" and params == {
        "type": "application/dicom",
        "boundary": "a;b=c",
        "transfer-syntax": "*",
    }
    assert boundary_of('multipart/related; boundary="0f3cf5c0-70e0"') == b"0f3cf5c0-70e0"
    for bad in ("application/dicom; boundary=x", "multipart/related", "multipart/related; boundary=" + "x" * 71):
        with pytest.raises(MultipartError):
            boundary_of(bad)


def test_a_spooled_body_is_read_through_its_map() -> None:
    spool = BodySpool()
    try:
        assert spool.view() == b""
        body = encode([("application/dicom", b"A" * 3_000_000)], "m")
        for i in range(0, len(body), 65536):
            spool.write(body[i : i + 65536])
        assert _contents(spool.view(), b"m") == [b"A" * 3_000_000]  # type: ignore[arg-type]
    finally:
        spool.close()
