"""Reading request bodies within limits, gzip included, without trusting the sender."""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator

from freshsales_destination.ingest.responses import IngestError


async def read_limited(
    chunks: AsyncIterator[bytes], *, encoding: str | None, limit: int
) -> bytes:
    """Read the whole body, inflating gzip, and refuse it once it passes `limit` bytes.

    A gzip bomb is refused as soon as its inflated size passes the limit: inflation is bounded
    per chunk (`max_length`), so the process never holds more than `limit` + one chunk.
    """
    coding = (encoding or "identity").strip().lower()
    if coding not in ("identity", "gzip", "x-gzip", "deflate"):
        raise IngestError(415, "unsupported_encoding", f"Content-Encoding {coding[:20]!r} is not supported")
    too_large = IngestError(
        413, "request_too_large", f"request body is larger than {limit} bytes"
    )
    out = bytearray()
    if coding == "identity":
        async for chunk in chunks:
            out += chunk
            if len(out) > limit:
                raise too_large
        return bytes(out)

    wbits = 16 + zlib.MAX_WBITS if coding in ("gzip", "x-gzip") else zlib.MAX_WBITS
    inflater = zlib.decompressobj(wbits)
    compressed_seen = 0
    try:
        async for chunk in chunks:
            compressed_seen += len(chunk)
            if compressed_seen > limit:
                raise too_large
            data = chunk
            while data:
                room = limit + 1 - len(out)
                out += inflater.decompress(data, room)
                if len(out) > limit:
                    raise too_large
                data = inflater.unconsumed_tail
        out += inflater.flush()
    except zlib.error:
        raise IngestError(400, "invalid_encoding", "the body is not valid gzip data") from None
    if len(out) > limit:
        raise too_large
    if not inflater.eof:
        raise IngestError(400, "invalid_encoding", "the gzip stream is truncated")
    return bytes(out)
