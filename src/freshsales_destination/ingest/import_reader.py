"""Reading files of Segment messages for `import`, one message at a time, in flat memory.

Three forms: JSON lines (one message per line), a JSON array of messages, and a Segment
archive (gzipped JSON lines). Gzip is recognised by its magic bytes, whatever the file's name
(so ``-``, standard input, may be compressed too); after decompression, a first non-blank byte
``[`` makes the file an array, anything else JSON lines.

Nothing is read whole: lines are read one by one, and an array is cut into its items by a
scanner that only looks at strings and brackets (`_ArraySplitter`), so memory stays the size
of one read block plus one item, whatever the file's size. Each item is parsed on its own: an
item or line that is not JSON is reported (`BadItem`, with its line or item number) and the
rest of the file is read on. Only a file whose structure is lost (an array whose brackets do
not balance, a gzip stream cut short, an item larger than `MAX_ITEM_BYTES`) stops early, with
`ImportFileError` saying where; what was read before it stands.
"""

from __future__ import annotations

import gzip
import re
import zlib
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import IO, Any, Final

import orjson

from freshsales_destination.errors import FreshsalesDestinationError

GZIP_MAGIC: Final = b"\x1f\x8b"
BLOCK_BYTES: Final = 256 << 10
# An item of an array may be at most this large (the tracking API takes 32 KB per message;
# a larger one is still read, and then discarded by the size rule as the API would).
MAX_ITEM_BYTES: Final = 16 << 20
_WHITESPACE: Final = b" \t\r\n"
_BOM: Final = b"\xef\xbb\xbf"


class ImportFileError(FreshsalesDestinationError):
    """A file could not be read on (damaged compression, an array that lost its structure)."""

    def __init__(self, message: str, *, position: str) -> None:
        super().__init__(message)
        self.position = position  # where it happened ("line 12", "item 40", "byte 1234")


@dataclass(frozen=True, slots=True)
class Item:
    """One parsed message (any JSON value: the caller decides whether it is a message)."""

    number: int  # its line (JSON lines) or its index from 1 (array)
    value: Any


@dataclass(frozen=True, slots=True)
class BadItem:
    """A line or array item that is not JSON, and why."""

    number: int
    error: str


class _Counted:
    """A binary stream that counts the bytes read from it (the file's, before gunzip)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.count += len(data)
        return data

    def readable(self) -> bool:
        return True


class MessageFile:
    """The messages of one open binary stream; `items()` reads them once, in order.

    `kind` is known after the first item is asked for: ``"json lines"`` or ``"array"``, with
    ``" (gzip)"`` when compressed. `bytes_read` is how far the underlying stream has been read
    (compressed bytes for gzip), for progress against the file's size.
    """

    def __init__(self, stream: IO[bytes]) -> None:
        self._counted = _Counted(stream)
        self._head = b""
        self.kind = "unknown"

    @property
    def bytes_read(self) -> int:
        return self._counted.count

    def items(self) -> Iterator[Item | BadItem]:
        head = self._counted.read(2)
        compressed = head == GZIP_MAGIC
        reader: Any
        if compressed:
            prefixed: Any = _Prefixed(head, self._counted)
            reader = gzip.GzipFile(fileobj=prefixed, mode="rb")
            first = b""
        else:
            reader = self._counted
            first = head
        suffix = " (gzip)" if compressed else ""
        try:
            first += _read(reader, BLOCK_BYTES)
            stripped = first.lstrip(_WHITESPACE)
            while not stripped and first:
                more = _read(reader, BLOCK_BYTES)
                if not more:
                    break
                first += more
                stripped = first.lstrip(_WHITESPACE)
            if stripped.startswith(_BOM):  # a UTF-8 byte order mark (Windows exports)
                first = first.replace(_BOM, b"", 1)
                stripped = stripped[len(_BOM):].lstrip(_WHITESPACE)
            if stripped.startswith(b"["):
                self.kind = "array" + suffix
                yield from _ArraySplitter(reader, stripped[1:]).items()
            else:
                self.kind = "json lines" + suffix
                yield from _lines(reader, first)
        finally:
            if compressed:
                reader.close()


class _Prefixed:
    """`stream` with `head` (already read from it) put back in front."""

    def __init__(self, head: bytes, stream: _Counted) -> None:
        self.head = head
        self.stream = stream

    def read(self, size: int = -1) -> bytes:
        if self.head:
            if size < 0:
                data, self.head = self.head + self.stream.read(), b""
                return data
            data, self.head = self.head[:size], self.head[size:]
            if len(data) < size:
                data += self.stream.read(size - len(data))
            return data
        return self.stream.read(size)

    def readable(self) -> bool:
        return True


def _read(reader: Any, size: int) -> bytes:
    """A block of the (maybe decompressed) stream; damaged compression is `ImportFileError`."""
    try:
        # read1 where there is one (gzip): what was decompressed before damage is not lost.
        read = getattr(reader, "read1", None) or reader.read
        data: bytes = read(size)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise ImportFileError(
            f"the gzip stream is damaged or cut short ({exc})", position="the end of what was read"
        ) from None
    return data


def _parse(number: int, data: bytes) -> Item | BadItem:
    try:
        return Item(number, orjson.loads(data))
    except orjson.JSONDecodeError as exc:
        return BadItem(number, f"not valid JSON ({exc.msg}, at character {exc.pos + 1})")


def _lines(reader: Any, first: bytes) -> Iterator[Item | BadItem]:
    """JSON lines, blank lines skipped; a line is numbered as a text editor numbers it."""
    pending = first
    number = 0
    while True:
        block = _read(reader, BLOCK_BYTES)
        if block:
            pending += block
            cut = pending.rfind(b"\n")
            if cut < 0:
                if len(pending) > MAX_ITEM_BYTES:
                    raise ImportFileError(
                        f"line {number + 1} is longer than {MAX_ITEM_BYTES} bytes",
                        position=f"line {number + 1}",
                    )
                continue
            complete, pending = pending[: cut + 1], pending[cut + 1 :]
            complete = complete[:-1]
        else:
            complete, pending = pending, b""
        for line in complete.split(b"\n"):
            number += 1
            if line.strip(_WHITESPACE):
                yield _parse(number, line)
        if not block:
            return


# The tokens that matter inside an array: a string (escapes included; one cut short by the
# end of the buffer matches to the end, so the scanner can tell it is incomplete), a bracket
# or brace, a comma.
_TOKEN: Final = re.compile(rb'"(?:[^"\\]++|\\.?)*+"?|[\[\]{},]', re.DOTALL)


class _ArraySplitter:
    """The items of a JSON array, each cut out as bytes and parsed on its own."""

    def __init__(self, reader: Any, rest: bytes) -> None:
        self.reader = reader
        self.buffer = rest  # everything after the opening "[" not yet handed out
        self.number = 0
        self.consumed = 0  # bytes of the array before `buffer`, for error positions

    def items(self) -> Iterator[Item | BadItem]:
        eof = False
        while True:
            closed = yield from self._scan(eof)
            if closed:
                self._check_trailer(eof)
                return
            if eof:
                raise ImportFileError(
                    f"the array ends early: item {self.number + 1} is cut short at the end of the file",
                    position=f"item {self.number + 1}",
                )
            block = _read(self.reader, BLOCK_BYTES)
            if not block:
                eof = True
            elif len(self.buffer) > MAX_ITEM_BYTES:
                raise ImportFileError(
                    f"item {self.number + 1} is larger than {MAX_ITEM_BYTES} bytes",
                    position=f"item {self.number + 1}",
                )
            self.buffer += block

    def _scan(self, eof: bool) -> Generator[Item | BadItem, None, bool]:
        """Hand out the complete items of `buffer`, keep the rest; True once the array closed."""
        buffer = self.buffer
        depth = 0
        start = 0
        for match in _TOKEN.finditer(buffer):
            token = match.group()
            first = token[0]
            if first == 0x22:  # '"'
                if len(token) == 1 or token[-1] != 0x22 or _escaped_end(token):
                    if match.end() == len(buffer) and not eof:
                        break  # a string cut by the end of the block: read more first
                continue
            if first in (0x7B, 0x5B):  # '{' '['
                depth += 1
            elif first in (0x7D, 0x5D):  # '}' ']'
                if depth == 0:
                    if first == 0x7D:
                        raise self._broken(match.start(), "a '}' that closes nothing")
                    # The array's own "]": the last item, if any, ends here.
                    yield from self._item(buffer[start : match.start()], last=True)
                    self._advance(buffer, match.end())
                    return True
                depth -= 1
            elif depth == 0:  # ',' between items
                yield from self._item(buffer[start : match.start()], last=False)
                start = match.end()
        self._advance(buffer, start)
        return False

    def _item(self, data: bytes, *, last: bool) -> Iterator[Item | BadItem]:
        data = data.strip(_WHITESPACE)
        if not data and last and self.number == 0:
            return  # "[]"
        self.number += 1
        if not data:
            yield BadItem(self.number, "empty item (two commas, or a comma before ']')")
            return
        yield _parse(self.number, data)

    def _advance(self, buffer: bytes, offset: int) -> None:
        self.consumed += offset
        self.buffer = buffer[offset:]

    def _broken(self, offset: int, what: str) -> ImportFileError:
        return ImportFileError(
            f"the array lost its structure after item {self.number}: {what} "
            f"(byte {self.consumed + offset + 1} of the array)",
            position=f"item {self.number + 1}",
        )

    def _check_trailer(self, eof: bool) -> None:
        rest = self.buffer.strip(_WHITESPACE)
        if not rest and not eof:
            rest = _read(self.reader, 64).strip(_WHITESPACE)
        if rest:
            raise ImportFileError(
                f"text after the array's closing ']': {rest[:20]!r}", position="after the array"
            )


def _escaped_end(token: bytes) -> bool:
    """Whether a string token's last quote is escaped (an odd run of backslashes before it),
    i.e. the string did not end there."""
    backslashes = 0
    index = len(token) - 2
    while index >= 1 and token[index] == 0x5C:
        backslashes += 1
        index -= 1
    return backslashes % 2 == 1


__all__ = ["BadItem", "ImportFileError", "Item", "MessageFile"]
