"""Sorting: acknowledged requests (inbox entries) become one queued message per event.

Ingest answers 200 once a request's body is committed to the inbox (one row per request);
sorting, off the request path, splits each entry into its messages (`slices`, by entry kind:
`BATCH`, `WEBHOOK` or a single message's type), normalises them as Segment does, and appends
them (duplicates skipped) in the same transaction that removes the entries (`write_chunk`).
An entry that cannot be expanded, or whose messages the store refuses (`write_entry`,
`discard`), is kept whole as one discarded message holding its body. What a request handler
checks before its 200: the body is a JSON object (or, for the webhook, an object or array)
within the limits; everything about single messages (type, ids, size, `integrations`) is
decided here and recorded on the message, as Segment does. `Sorter` keeps the counters of what
sorting did (`IngestCounters`' message fields, `SortCounts`); when to sort, and which process
does, is ingest/sort_loop.py's.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from typing import Any

import orjson

from freshsales_destination.core.segment import (
    MESSAGE_TYPES,
    TRACKING_TYPES,
    RequestTimes,
    normalize,
)
from freshsales_destination.errors import StoreRefused
from freshsales_destination.store.base import InboxEntry, NewMessage, SortRaced, Store

log = logging.getLogger(__name__)

# Entry kinds besides a single message's type (ingest/app.py stores them, `Sorter` reads them).
BATCH = "batch"
WEBHOOK = "webhook"


@dataclass
class IngestCounters:
    """Requests (counted by ingest/app.py when answered: `requests`, `refused`) and messages
    (counted by `Sorter.record` when sorted: the rest) since start."""

    requests: int = 0
    refused: int = 0
    accepted: int = 0
    duplicates: int = 0
    discarded: int = 0
    filtered: int = 0
    sorted_entries: int = 0


@dataclass
class SortCounts:
    """Sorting transactions since start (what they did to messages is in `IngestCounters`)."""

    chunks: int = 0  # committed: a chunk, or after a failed chunk one entry alone
    isolated: int = 0  # entries the store refused, kept as one discarded message each
    raced: int = 0  # chunks another process sorted first (work thrown away)


def message_row(
    item: Any,
    *,
    source: str,
    destination: str,
    received_at: float,
    times: RequestTimes,
    new_id: Callable[[], str],
    limit: int,
    forced_type: str | None = None,
    context: dict[str, Any] | None = None,
    shared: int = 0,
    integrations: dict[str, Any] | None = None,
    allowed: frozenset[str] = TRACKING_TYPES,
) -> NewMessage:
    """One message as the store keeps it: normalised (`core/segment.py` `normalize`, with the
    request's `times`), its status and reason, and its raw form without any `writeKey`.
    `received_at` is the row's arrival (what the dedup window counts from); `shared` is the
    encoded size of the batch `context`, which a message with it may not push past twice
    `limit`. Sorting calls this for each message of an inbox entry, `import` (ingest/
    importer.py) for each message of a file."""
    dumps = orjson.dumps
    if item.__class__ is dict and "writeKey" in item:
        item = {key: value for key, value in item.items() if key != "writeKey"}
    raw = dumps(item)
    oversize = len(raw) > limit or len(raw) + shared > 2 * limit
    result = normalize(
        item,
        received_at=times.received_at,
        new_id=new_id,
        forced_type=forced_type,
        batch_context=None if oversize else context,
        batch_integrations=integrations,
        allowed_types=allowed,
        times=times,
    )
    status, reason, message = result.status, result.reason, result.message
    if oversize:
        status, reason = "discarded", (
            f"message is larger than {limit} bytes" if len(raw) > limit
            else f"message with the batch context is larger than {2 * limit} bytes"
        )
        message = {"messageId": result.message_id, "receivedAt": times.received}
    return NewMessage(
        source=source,
        destination=destination,
        message_id=result.message_id,
        type=result.type,
        status=status,
        reason=reason,
        lane=result.lane,
        received_at=received_at,
        event_at=result.event_at,
        raw=raw,
        message=dumps(message),
    )


class Sorter:
    """Expands inbox entries into message rows, writes them back, and keeps the counters of
    what sorting did (`counters`: messages; `counts`: transactions)."""

    def __init__(
        self,
        *,
        max_message_bytes: int,
        counters: IngestCounters | None = None,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        self.max_message_bytes = max_message_bytes
        self.counters = counters if counters is not None else IngestCounters()
        self.new_id = new_id
        self.counts = SortCounts()
        self._last_times: tuple[int, RequestTimes] | None = None

    def expand(self, entries: Sequence[InboxEntry]) -> list[NewMessage]:
        """All rows of `entries`, in order; an entry that fails becomes one discarded row."""
        expanded: list[NewMessage] = []
        for entry in entries:
            try:
                rows = [row for part in self.slices(entry, 1_000) for row in part]
            except Exception as exc:  # noqa: BLE001 - one entry never blocks the inbox
                rows = [self.unsortable(entry, exc)]
            expanded += rows
        return expanded

    def slices(self, entry: InboxEntry, size: int) -> Iterator[list[NewMessage]]:
        """An entry's rows, `size` at a time, so that a caller may pause in between. Raises
        if the entry cannot be sorted (a caller then keeps it whole, see `unsortable`)."""
        rows = self._entry_rows(entry)
        while part := list(islice(rows, size)):
            yield part

    # -- writing back (in the caller's store thread) --------------------------------------------

    def write_chunk(
        self, store: Store, entries: Sequence[InboxEntry], messages: Sequence[NewMessage]
    ) -> list[bool] | None:
        """The chunk's one transaction: its messages appended (duplicates skipped, `fresh`
        says which were new) and its entries removed. None, counted in `raced`, when another
        process sorted some of them first (nothing written: read again). Any other failure is
        raised; the caller then retries entry by entry (`write_entry`)."""
        try:
            return store.inbox_sorted(entries, messages)
        except SortRaced:
            self.counts.raced += 1
            return None

    def write_entry(
        self, store: Store, entry: InboxEntry, rows: Sequence[NewMessage]
    ) -> list[bool] | None:
        """One entry in a transaction of its own; None when another process sorted it first.
        Raises `StoreRefused` when the store refuses these rows (then `discard` the entry),
        anything else when the store is failing (then nothing may be discarded)."""
        try:
            return store.inbox_sorted([entry], rows)
        except SortRaced:
            return None

    def discard(
        self, store: Store, entry: InboxEntry, exc: StoreRefused
    ) -> tuple[list[NewMessage], list[bool]] | None:
        """An entry whose rows the store refused, kept as one discarded message holding its
        body (counted in `isolated`): the row and `fresh`, or None when another process
        sorted the entry first. A failure of the store is raised."""
        log.error("inbox entry %s was refused by the store (%s); kept as one "
                  "discarded message", entry.seq, exc.message)
        rows = [self.unsortable(entry, exc)]
        try:
            fresh = store.inbox_sorted([entry], rows)
        except SortRaced:
            return None
        self.counts.isolated += 1
        return rows, fresh

    def record(self, entries: int, messages: Sequence[NewMessage], fresh: Sequence[bool]) -> None:
        """Count a committed sorting transaction of `entries` and its messages."""
        self.counts.chunks += 1
        counters = self.counters
        counters.sorted_entries += entries
        for row, new in zip(messages, fresh, strict=True):
            if not new:
                counters.duplicates += 1
            elif row.status == "pending":
                counters.accepted += 1
            elif row.status == "filtered":
                counters.filtered += 1
            else:
                counters.discarded += 1

    # -- one entry -----------------------------------------------------------------------------

    def _entry_rows(self, entry: InboxEntry) -> Iterator[NewMessage]:
        body = orjson.loads(entry.body)
        batch: dict[str, Any] | None = None
        forced_type: str | None = None
        allowed = TRACKING_TYPES
        if entry.kind == BATCH:
            batch = body
            items = body["batch"]
        elif entry.kind == WEBHOOK:
            items = body if isinstance(body, list) else [body]
            allowed = MESSAGE_TYPES
        else:
            items = [body]
            forced_type = entry.kind
        return self._rows(entry, items, forced_type=forced_type, batch=batch, allowed=allowed)

    def _rows(
        self,
        entry: InboxEntry,
        items: list[Any],
        *,
        forced_type: str | None,
        batch: dict[str, Any] | None,
        allowed: frozenset[str],
    ) -> Iterator[NewMessage]:
        received = entry.received_at
        context = batch.get("context") if batch else None
        integrations = batch.get("integrations") if batch else None
        times = self._times(received, batch.get("sentAt") if batch else None)
        context = context if isinstance(context, dict) else None
        integrations = integrations if isinstance(integrations, dict) else None
        limit = self.max_message_bytes
        source, destination = entry.source, entry.destination
        new_id = self.new_id
        # The batch's context is copied into each message; with it, a message may be at most
        # twice the limit (a 400 KB context must not become 2,500 copies after the 200).
        shared = len(orjson.dumps(context)) if context else 0
        for item in items:
            yield message_row(
                item, source=source, destination=destination, received_at=received,
                times=times, new_id=new_id, limit=limit, forced_type=forced_type,
                context=context, shared=shared, integrations=integrations, allowed=allowed,
            )

    def unsortable(self, entry: InboxEntry, exc: Exception) -> NewMessage:
        """An entry that failed to expand is kept whole, discarded with the reason."""
        log.error("inbox entry %s could not be sorted: %r", entry.seq, exc)
        message_id = self.new_id()
        return NewMessage(
            source=entry.source,
            destination=entry.destination,
            message_id=message_id,
            type=entry.kind,
            status="discarded",
            reason=f"the request could not be sorted: {type(exc).__name__}",
            lane=None,
            received_at=entry.received_at,
            event_at=entry.received_at,
            raw=entry.body,
            message=orjson.dumps({"messageId": message_id}),
        )

    def _times(self, received: float, sent_at: Any) -> RequestTimes:
        """A request's times; reused within one millisecond (the precision of receivedAt)."""
        if sent_at is not None:
            return RequestTimes.of(datetime.fromtimestamp(received, UTC), sent_at)
        millisecond = int(received * 1000)
        cached = self._last_times
        if cached is not None and cached[0] == millisecond:
            return cached[1]
        times = RequestTimes.of(datetime.fromtimestamp(received, UTC))
        self._last_times = (millisecond, times)
        return times
