"""Where a zlib or gzip stream ends inside a file. The stored copies of PNG, MetaImage and NRRD uploads keep their
compressed pixels up to there: the bytes after a stream's end are no pixel and may hold any text."""

from __future__ import annotations

import zlib

#: wbits of a zlib stream (a PNG's), and of either a zlib or a gzip one (MetaImage's and NRRD's).
ZLIB, ZLIB_OR_GZIP = zlib.MAX_WBITS, zlib.MAX_WBITS | 32
#: Compressed bytes inflated at a time; what they inflate to is counted, not kept.
_CHUNK = 1 << 16


def stream_end(data: bytes, start: int, wbits: int) -> tuple[int, int]:
    """(where the compressed stream that starts at `start` ends, how many bytes it inflates to); ValueError where
    `data` ends before the stream does."""
    inflater, pos, inflated = zlib.decompressobj(wbits), start, 0
    while not inflater.eof:
        if pos >= len(data):
            raise ValueError("the compressed pixels are cut off")
        inflated += len(inflater.decompress(data[pos : pos + _CHUNK]))
        pos += _CHUNK
    return min(pos, len(data)) - len(inflater.unused_data), inflated
