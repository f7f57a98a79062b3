"""The store interface every backend implements, and the records that cross it.

The store is the only shared state of the service: several processes (and later several
machines, with PostgreSQL) may use one store at once, so nothing here assumes one process.
Methods are synchronous and short; async callers run them in a worker thread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@dataclass(slots=True)
class NewMessage:
    """A message as ingest hands it to the store (treat as read-only).

    Not frozen on purpose: ingest builds one per event, and a frozen dataclass costs about a
    microsecond more to build, several per cent of the whole ingest path.
    """

    source: str  # the source's id (never its write key)
    destination: str
    message_id: str
    type: str
    status: str  # pending | discarded | filtered
    reason: str | None
    lane: str | None
    received_at: float
    event_at: float
    raw: bytes  # the message as the client sent it (JSON)
    message: bytes  # the normalised message (JSON)


@dataclass(slots=True)
class InboxEntry:
    """One acknowledged request, stored as received until it is sorted into messages.

    Ingest commits one of these per request (however many messages it holds) and answers 200;
    sorting (ingest/sorting.py) later turns it into `NewMessage` rows in one transaction with
    the entry's removal, so each entry is sorted exactly once.
    """

    source: str  # the source's id (never its write key)
    destination: str
    kind: str  # "batch" | "webhook" | the type of a single-message request ("track", ...)
    received_at: float
    count: int  # messages in the body: sorting takes entries by message count
    body: bytes  # the body's JSON, without its top-level writeKey
    seq: int = 0  # assigned by the store


def within_limits(
    rows: Iterable[R], size: Callable[[R], tuple[int, int]], max_messages: int, max_bytes: int
) -> list[R]:
    """The leading `rows` while their (messages, body bytes), by `size`, fit in `max_messages`
    and `max_bytes`: always at least one. Stops reading `rows` at the first that does not fit
    (a lazy cursor then never reads the rest)."""
    taken: list[R] = []
    messages = total = 0
    for row in rows:
        count, length = size(row)
        if taken and (messages + count > max_messages or total + length > max_bytes):
            break
        taken.append(row)
        messages += count
        total += length
    return taken


def inbox_entry(row: Sequence[Any]) -> InboxEntry:
    """An entry from a row: seq, source, destination, kind, received_at, count, body."""
    seq, source, destination, kind, received_at, count, body = row
    return InboxEntry(
        source=str(source), destination=str(destination), kind=str(kind),
        received_at=float(received_at), count=int(count), body=bytes(body), seq=int(seq),
    )


class SortRaced(Exception):
    """Another sorter took some of the entries first; nothing was changed."""


@dataclass(frozen=True, slots=True)
class StoredMessage:
    seq: int
    source: str
    destination: str
    message_id: str
    type: str
    status: str
    reason: str | None
    lane: str | None
    received_at: float
    event_at: float
    attempts: int
    available_at: float
    last_error: str | None
    raw: bytes
    message: bytes
    first_failure_at: float | None = None
    finished_at: float | None = None

    def normalized(self) -> dict[str, Any]:
        import orjson

        value = orjson.loads(self.message)
        assert isinstance(value, dict)
        return value


@dataclass(slots=True)
class JourneyRow:
    """One stored step of a message's journey (``journey`` table): a Freshsales call, a retry,
    an outcome or an operator's action. ``detail`` is compact JSON, bounded by its writer
    (delivery/journal.py); it never holds a header, a key or a token.

    Not frozen (treat as read-only), like `NewMessage`: delivery builds several per unit."""

    seq: int
    at: float
    kind: str
    detail: bytes = b"{}"
    n: int = 0  # its number in the message's journey (from 1; gaps where steps were cut)


@dataclass(frozen=True, slots=True)
class MessageQuery:
    """What `Store.search` and the dead-letter actions select; None (or empty) means any.

    ``lane`` is a lane key (``u:<userId>``, ``a:<anonymousId>``); ``needles`` are byte strings
    the normalised message must contain (one of them), checked with ``lane`` as an OR when both
    are given; ``reason`` is a case-insensitive substring of the reason or the last error;
    ``retrying``: only messages with a last error (with status ``pending``: those waiting for
    a retry).
    """

    destination: str | None = None
    lane: str | None = None
    needles: tuple[bytes, ...] = ()
    message_id: str | None = None
    status: str | None = None
    type: str | None = None
    reason: str | None = None
    since: float | None = None
    until: float | None = None
    seqs: tuple[int, ...] = ()
    retrying: bool = False


@dataclass(frozen=True, slots=True)
class SearchPage:
    """Messages newest first; ``next_before``: pass as ``before`` to go on (None: the end).
    A page may hold fewer than asked while ``next_before`` is set: the scan is bounded."""

    messages: list[StoredMessage]
    next_before: int | None


@dataclass(frozen=True, slots=True)
class StatusCount:
    """Messages of one destination and status finished (or received) in one time bucket."""

    destination: str
    status: str
    bucket: int
    count: int


@dataclass(frozen=True, slots=True)
class FailureRow:
    destination: str
    status: str  # dead | discarded | filtered | retrying
    reason: str
    count: int
    first_seen: float
    last_seen: float
    samples: list[int]  # seqs, newest first, at most 5


@dataclass(frozen=True, slots=True)
class LaneClaim:
    """A lane leased to one worker: its oldest pending messages, in order."""

    destination: str
    lane: str
    owner: str
    lease_until: float
    messages: list[StoredMessage]


class Store(Protocol):
    """What ingest and delivery need from durable storage."""

    def open(self) -> None:
        """Create or migrate the schema; idempotent."""

    def close(self) -> None: ...

    def append(self, messages: Sequence[NewMessage]) -> list[bool]:
        """Commit messages durably in one transaction.

        Returns, per message, True when it was stored and False when (source, message_id) was
        already there (a duplicate within the dedup window). Either all are committed or none.
        """
        ...

    def inbox_append(self, entries: Sequence[InboxEntry]) -> None:
        """Commit inbox entries durably in one transaction, with increasing seqs in the
        given order (all or none)."""

    def inbox_oldest(self, max_messages: int, max_bytes: int = 8 << 20) -> list[InboxEntry]:
        """The oldest inbox entries, in seq order, while their total `count` stays within
        `max_messages` and their bodies within `max_bytes`: at most max(1, max_messages)
        entries, and at least one if any.

        Seq order is the order requests were answered in, except for requests committed at
        the same moment by different processes (PostgreSQL), which had no order anyway:
        neither client had its 200 before the other was committed."""
        ...

    def inbox_sorted(
        self, entries: Sequence[InboxEntry], messages: Sequence[NewMessage]
    ) -> list[bool]:
        """In one transaction: delete `entries` from the inbox and append `messages` (what
        they expanded to) as `append` does; returns `append`'s answer.

        Raises `SortRaced`, having changed nothing, when some of the entries are gone (a
        sorter of another process took them first): each entry is sorted exactly once.
        Sorters and appends take turns, so messages keep the inbox's order.
        """
        ...

    def inbox_count(self) -> tuple[int, int]:
        """(entries, messages) waiting in the inbox to be sorted."""
        ...

    def ping(self) -> None:
        """Raise StoreUnavailable unless the store can commit a write now."""

    def get_message(self, source: str, message_id: str) -> StoredMessage | None: ...

    def get_by_seq(self, seq: int) -> StoredMessage | None: ...

    def count_by_status(self) -> dict[str, int]: ...

    def prune(self, *, older_than: float) -> int:
        """Forget finished messages received before `older_than` (epoch seconds).

        Pending and dead messages are kept whatever their age.
        """
        ...

    # -- delivery ------------------------------------------------------------------------------

    def claim_lane(
        self,
        destination: str,
        *,
        owner: str,
        now: float,
        lease_seconds: float,
        max_messages: int,
        head_types: Sequence[str] | None = None,
    ) -> LaneClaim | None:
        """Lease the lane holding the oldest ready pending message and return its head messages.

        A lane is skipped while another worker holds its lease or while it is held back for a
        retry (so later messages of a person never overtake an earlier one). With
        `head_types`, only a lane whose next pending message has one of those types (the
        same as `claim_lanes` with a limit of 1).
        """
        ...

    def claim_lanes(
        self,
        destination: str,
        *,
        owner: str,
        now: float,
        lease_seconds: float,
        max_messages: int,
        head_types: Sequence[str] | None = None,
        limit: int,
    ) -> list[LaneClaim]:
        """Lease up to `limit` distinct lanes at once, oldest head first, each as `claim_lane`
        would (neither leased nor held; with `head_types`, only a lane whose next pending
        message has one of them), in one write transaction and one scan for candidates.

        Lanes another claimer takes meanwhile are passed over, never shared; fewer than
        `limit` (or none) when fewer are ready.
        """
        ...

    def renew_lease(
        self, destination: str, lane: str, owner: str, *, now: float, lease_seconds: float
    ) -> bool:
        """Extend `owner`'s lease; False when it expired or another worker holds the lane."""
        ...

    def release_lane(self, destination: str, lane: str, owner: str) -> float | None:
        """Give the lane back. None when it has no pending message left; else the epoch
        second it may be claimed again (0: now; its hold's end if held), and a worker of every
        process that listens is told (PostgreSQL: NOTIFY on commit)."""
        ...

    def next_ready_at(self, destination: str, *, now: float) -> float | None:
        """When the first lane of `destination` that holds pending messages but is held or
        leased now becomes free (epoch seconds, after `now`); None if there is none."""
        ...

    def finish(
        self,
        seqs: Sequence[int],
        *,
        status: str,
        now: float,
        reason: str | None = None,
        steps: Sequence[JourneyRow] = (),
        attempted: bool = False,
    ) -> None:
        """Move messages to a final status (delivered, skipped, discarded, dead, dropped),
        recording `steps` in their journeys in the same transaction. With `attempted`, this
        finish ends a delivery attempt (Freshsales was called), so each message's `attempts`
        grows by one: `attempts` is then the number of delivery attempts made (the failed
        ones `reschedule` counted, plus this final one); without it (nothing was called:
        filtered, discarded, skipped before any call) it stays as it was."""
        ...

    def reschedule(
        self,
        seq: int,
        *,
        destination: str,
        lane: str,
        attempts: int,
        available_at: float,
        first_failure_at: float | None,
        last_error: str,
        steps: Sequence[JourneyRow] = (),
    ) -> None:
        """Keep a message pending for a later attempt and hold its whole lane until then,
        recording `steps` in the journeys in the same transaction."""
        ...

    def requeue(self, seqs: Sequence[int], *, now: float) -> int:
        """Put dead messages back to pending with fresh attempts (a ``requeued`` step each);
        returns how many were dead."""
        ...

    def drop_dead(self, seqs: Sequence[int], *, now: float) -> int:
        """Mark dead messages dropped (a ``dropped`` step each); returns how many were dead."""
        ...

    # -- the journey and the operations read model (admin/views.py) -----------------------------

    def add_steps(self, steps: Sequence[JourneyRow]) -> None:
        """Record journey steps (bounded per message: the first and the latest are kept)."""

    def steps_of(self, seq: int) -> list[JourneyRow]:
        """A message's stored journey steps, oldest first."""
        ...

    def search(
        self, query: MessageQuery, *, limit: int, before: int | None = None
    ) -> SearchPage:
        """Messages matching `query` with seq < `before`, newest first (a bounded scan)."""
        ...

    def dead_seqs(self, query: MessageQuery, *, limit: int = 100_000) -> list[int]:
        """Seqs of dead messages matching `query` (its status is ignored), newest first."""
        ...

    def finished_counts(
        self, *, start: float, end: float, bucket_seconds: int
    ) -> list[StatusCount]:
        """Messages finished in [start, end) by destination, status and bucket."""
        ...

    def received_counts(
        self, *, start: float, end: float, bucket_seconds: int
    ) -> list[StatusCount]:
        """Messages received in [start, end) by destination and bucket (status "received")."""
        ...

    def retry_counts(
        self, *, start: float, end: float, bucket_seconds: int
    ) -> list[StatusCount]:
        """``retry`` journey steps in [start, end) by destination and bucket."""
        ...

    def delivery_latencies(
        self, *, start: float, end: float
    ) -> list[tuple[str, float]]:
        """(destination, finished_at - received_at) of messages delivered in [start, end)."""
        ...

    def failure_groups(
        self, *, destination: str | None = None, since: float | None = None
    ) -> list[FailureRow]:
        """Dead, discarded, filtered and retrying (pending with a last error) messages grouped
        by destination, status and reason."""
        ...

    def backlog(self, destination: str) -> dict[str, int]:
        """The destination's ``pending`` messages, how many of them are ``retrying`` (pending
        with a last error), and its ``dead`` letters."""
        ...

    def oldest_pending(self, destination: str) -> float | None:
        """received_at of the destination's oldest pending message."""
        ...

    def list_messages(self, *, limit: int = 100, status: str | None = None) -> list[StoredMessage]:
        ...

    def pending_count(self, destination: str | None = None) -> int: ...

    def pending_by_type(self, destination: str) -> dict[str, int]:
        """Pending messages of `destination` by message type (what `status` splits the
        backlog by: records and events)."""
        ...

    # -- small durable state shared by all workers ---------------------------------------------

    def kv_get(self, namespace: str, key: str) -> bytes | None: ...

    def kv_put(self, namespace: str, key: str, value: bytes, *, now: float) -> None: ...

    def kv_update(
        self, namespace: str, key: str, update: Callable[[bytes | None], tuple[T, bytes]], *, now: float
    ) -> T:
        """Atomically read, transform and write one value (the rate budget uses this)."""
        ...

    def kv_prune(self, namespace_prefix: str, *, older_than: float) -> int:
        """Forget values of namespaces starting with the prefix, last written before then."""
        ...
