"""Reading request bodies within limits, gzip and deflate included, without trusting the sender."""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator

from freshsales_destination.ingest.responses import IngestError

SUPPORTED_ENCODINGS = ("identity", "gzip", "x-gzip", "deflate")


class BodyReader:
    """Collects a body chunk by chunk, inflating gzip, and refuses it past `limit` bytes.

    Exactly one compressed stream: trailing bytes or a second gzip member are refused (400),
    never dropped. A gzip bomb is refused as soon as its inflated size passes the limit:
    inflation is bounded per call (``max_length``), so the process never holds more than
    `limit` + 1 bytes of output and never inflates the rest of the stream.
    """

    __slots__ = ("_limit", "_out", "_inflater", "_compressed_seen")

    def __init__(self, *, encoding: str | None, limit: int) -> None:
        coding = (encoding or "identity").strip().lower()
        if coding not in SUPPORTED_ENCODINGS:
            raise IngestError(
                415, "unsupported_encoding", f"Content-Encoding {coding[:20]!r} is not supported"
            )
        self._limit = limit
        self._out = bytearray()
        self._compressed_seen = 0
        self._inflater: zlib._Decompress | None = None
        if coding != "identity":
            wbits = 16 + zlib.MAX_WBITS if coding in ("gzip", "x-gzip") else zlib.MAX_WBITS
            self._inflater = zlib.decompressobj(wbits)

    def _too_large(self) -> IngestError:
        return IngestError(
            413, "request_too_large", f"request body is larger than {self._limit} bytes"
        )

    def feed(self, chunk: bytes) -> None:
        out, limit, inflater = self._out, self._limit, self._inflater
        if inflater is None:
            out += chunk
            if len(out) > limit:
                raise self._too_large()
            return
        self._compressed_seen += len(chunk)
        if self._compressed_seen > limit:
            raise self._too_large()
        data = chunk
        try:
            while data:
                out += inflater.decompress(data, limit + 1 - len(out))
                if len(out) > limit:
                    raise self._too_large()
                data = inflater.unconsumed_tail
        except zlib.error:
            raise IngestError(400, "invalid_encoding", "the body is not valid gzip data") from None
        if inflater.unused_data:
            raise _trailing_data()

    def finish(self) -> bytes:
        inflater, out = self._inflater, self._out
        if inflater is not None:
            try:
                out += inflater.flush()
            except zlib.error:
                raise IngestError(
                    400, "invalid_encoding", "the body is not valid gzip data"
                ) from None
            if len(out) > self._limit:
                raise self._too_large()
            if not inflater.eof:
                raise IngestError(400, "invalid_encoding", "the gzip stream is truncated")
            if inflater.unused_data:
                raise _trailing_data()
        return bytes(out)


def _trailing_data() -> IngestError:
    """Bytes after the end of the compressed stream (garbage, or a second gzip member): the
    body would otherwise be cut silently at the first member's end."""
    return IngestError(
        400, "invalid_encoding",
        "the body has data after the end of its compressed stream (one gzip member only)",
    )


async def read_limited(
    chunks: AsyncIterator[bytes], *, encoding: str | None, limit: int
) -> bytes:
    """Read the whole body from `chunks` with a :class:`BodyReader`."""
    reader = BodyReader(encoding=encoding, limit=limit)
    async for chunk in chunks:
        reader.feed(chunk)
    return reader.finish()
