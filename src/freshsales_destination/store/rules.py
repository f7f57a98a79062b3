"""The store's rules, written once for every SQL backend.

`SQLStore` holds each rule of the queue in one place: lanes (claim, renew, release, hold,
requeue), message states (finish, reschedule, prune), the inbox's sort step, the key-value
state (the budget's atomic update, pruning) and inspection. It runs named queries
(``store/sql/<dialect>.sql``, loaded by ``store/queries.py``); a backend (``store/sqlite.py``,
``store/postgres.py``) supplies its connection handling, its error translation and the few
steps whose *strategy* differs by engine (appending a batch, reading the inbox, binding a
list of seqs, picking a claim candidate), never a rule.

Errors: every public method is wrapped by `guarded` (applied by `SQLStore.__init_subclass__`
to each method of the `Store` protocol, in the base and in every backend), the one boundary
where a driver's exception becomes `StoreRefused` (the data: trying again fails again) or
`StoreUnavailable` (the store: trying again may pass), by the backend's `translate`.
Exceptions of the store's own vocabulary (`StoreError`, `SortRaced`) and those raised by
callers' code (a `kv_update` callback) pass through unchanged.
"""

from __future__ import annotations

import functools
from abc import abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, ClassVar, ParamSpec, TypeVar

from freshsales_destination.errors import StoreError
from freshsales_destination.store.base import (
    FailureRow,
    InboxEntry,
    JourneyRow,
    LaneClaim,
    MessageQuery,
    NewMessage,
    SearchPage,
    SortRaced,
    StatusCount,
    StoredMessage,
)
from freshsales_destination.store.queries import Dialect, queries

T = TypeVar("T")
P = ParamSpec("P")

# Statuses listed with a literal in the query, so the engine uses the partial index on them.
LITERAL_STATES = frozenset({"dead", "discarded", "filtered", "dropped", "skipped"})

# The methods of the `Store` protocol: each is guarded wherever it is defined.
PUBLIC_METHODS = frozenset({
    "open", "close", "append", "inbox_append", "inbox_oldest", "inbox_sorted", "inbox_count",
    "ping", "get_message", "get_by_seq", "count_by_status", "prune", "claim_lane", "claim_lanes",
    "renew_lease", "release_lane", "finish", "reschedule", "requeue", "list_messages",
    "pending_count", "pending_by_type", "kv_get", "kv_put", "kv_update", "kv_prune",
    "next_ready_at", "drop_dead", "add_steps",
    "steps_of", "search", "dead_seqs", "finished_counts", "received_counts", "retry_counts",
    "delivery_latencies", "failure_groups", "oldest_pending", "backlog",
})

# A message's journey keeps at most JOURNEY_CAP steps: its first JOURNEY_FIRST and the latest.
JOURNEY_CAP = 50
JOURNEY_FIRST = 10
# A search reads at most this many seqs per query, and SEARCH_MAX_SCAN per call; a page that
# stopped at the bound says where to go on (`SearchPage.next_before`).
SEARCH_WINDOW = 20_000
SEARCH_MAX_SCAN = 200_000
# Messages are appended in the order received, except across processes committing at once:
# the stats look this much earlier for the first message of a window.
RECEIVED_ORDER_SLACK = 300.0


def query_params(query: MessageQuery) -> dict[str, object]:
    """The named parameters of ``search_filters`` for `query`."""
    needles = [n for n in query.needles if n][:2]
    return {
        "destination": query.destination,
        "message_id": query.message_id,
        "status": query.status,
        "retrying": query.retrying,
        "type": query.type,
        "since": query.since,
        "until": query.until,
        "reason": None if not query.reason else "%" + escape_like(query.reason),
        "lane": query.lane,
        "needle1": needles[0] if needles else None,
        "needle2": needles[1] if len(needles) > 1 else None,
    }


def guarded(method: Callable[P, T]) -> Callable[P, T]:
    """The error boundary of one public store method (see the module docstring)."""
    if getattr(method, "__store_guarded__", False):
        return method

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return method(*args, **kwargs)
        except (StoreError, SortRaced):
            raise
        except Exception as exc:
            store = args[0]
            assert isinstance(store, SQLStore)
            translated = store.translate(exc, method.__name__)
            if translated is None:
                raise
            raise translated from None

    wrapper.__store_guarded__ = True  # type: ignore[attr-defined]
    return wrapper


def escape_like(prefix: str) -> str:
    """A LIKE pattern matching values that start with `prefix` (escape character ``\\``)."""
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


class SQLStore:
    """A `Store` on an SQL engine: every rule once; the backend fills in the engine."""

    dialect: ClassVar[Dialect]
    q: ClassVar[Mapping[str, str]]
    # How many lanes one claim may find busy before giving up for this call (the worker polls
    # again). A backend whose write transactions exclude each other never finds one busy.
    claim_tries: ClassVar[int] = 1

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "dialect" in cls.__dict__:
            cls.q = queries(cls.dialect)
        for name in PUBLIC_METHODS:
            method = cls.__dict__.get(name)
            if callable(method):
                setattr(cls, name, guarded(method))

    # -- what a backend supplies ---------------------------------------------------------------

    @abstractmethod
    def translate(self, exc: Exception, operation: str) -> StoreError | None:
        """The store error a driver's `exc` means (None: not a driver error, raise it as is)."""

    @abstractmethod
    def _write(self) -> AbstractContextManager[Any]:
        """One write transaction: committed when the block ends, rolled back if it raises."""

    @abstractmethod
    def _read(self) -> AbstractContextManager[Any]:
        """A connection for reads (a transaction where the engine needs one)."""

    @abstractmethod
    def _append_rows(self, conn: Any, messages: Sequence[NewMessage]) -> list[bool]:
        """Insert `messages` in the open transaction, skipping duplicates: `append`'s answer."""

    @abstractmethod
    def _insert_steps(
        self, conn: Any, rows: Sequence[tuple[int, int, float, str, bytes]]
    ) -> list[tuple[int, int]]:
        """Insert journey rows (seq, offset, at, kind, detail) in the open transaction, each
        numbered the message's last step number (before this statement) plus its offset;
        the (seq, number) of each row inserted."""

    @abstractmethod
    def _delete_inbox(self, conn: Any, seqs: Sequence[int]) -> int:
        """Delete the inbox entries `seqs` (distinct) in the open transaction; how many went."""

    @abstractmethod
    def _for_seqs(
        self,
        conn: Any,
        name: str,
        params: Sequence[object],
        seqs: Sequence[int],
        *,
        fetch: bool = False,
    ) -> list[Any]:
        """Run query `name` with `params` followed by the seqs (one at a time or as an array,
        as the dialect's query expects); with `fetch`, the rows it returned."""

    @abstractmethod
    def _candidate(
        self, conn: Any, destination: str, now: float, lost: Sequence[str]
    ) -> str | None:
        """The lane of the oldest ready pending message (not leased, not held, not in `lost`)."""

    @abstractmethod
    def _candidates(
        self,
        conn: Any,
        destination: str,
        now: float,
        head_types: Sequence[str] | None,
        lost: Sequence[str],
        limit: int,
    ) -> list[str]:
        """Up to `limit` distinct lanes, oldest head first, in one scan: each lane's next
        pending message is ready (the lane neither leased nor held), the lane is not in
        `lost`, and with `head_types` that message has one of them."""

    def _try_lane(self, conn: Any, destination: str, lane: str) -> bool:
        """Whether this claim may work on `lane` now (no other claimer is on it)."""
        return True

    def _append_turn(self, conn: Any) -> None:
        """Wait for concurrent appends (and sorts) to commit first, if the engine needs it."""

    def _wake(self, conn: Any, available_at: float | None, destination: str) -> None:
        """Tell idle workers of `destination` in other processes, on commit, that work is
        ready (now, or at `available_at`), if the engine can (PostgreSQL: NOTIFY; SQLite
        wakes in-process)."""

    def _message(self, row: Sequence[Any]) -> StoredMessage:
        (seq, source, destination, message_id, kind, status, reason, lane, received_at,
         event_at, attempts, available_at, last_error, raw, message, first_failure_at,
         finished_at) = row
        return StoredMessage(
            seq=int(seq),
            source=str(source),
            destination=str(destination),
            message_id=str(message_id),
            type=str(kind),
            status=str(status),
            reason=None if reason is None else str(reason),
            lane=None if lane is None else str(lane),
            received_at=float(received_at),
            event_at=float(event_at),
            attempts=int(attempts),
            available_at=float(available_at),
            last_error=None if last_error is None else str(last_error),
            raw=bytes(raw),
            message=bytes(message),
            first_failure_at=None if first_failure_at is None else float(first_failure_at),
            finished_at=None if finished_at is None else float(finished_at),
        )

    def _run(self, conn: Any, name: str, params: Sequence[object] | Mapping[str, object] = ()) -> Any:
        return conn.execute(self.q[name], params)

    # -- ingest --------------------------------------------------------------------------------

    def append(self, messages: Sequence[NewMessage]) -> list[bool]:
        if not messages:
            return []
        with self._write() as conn:
            return self._append_rows(conn, messages)

    def inbox_sorted(
        self, entries: Sequence[InboxEntry], messages: Sequence[NewMessage]
    ) -> list[bool]:
        if not entries:
            return self.append(messages)
        seqs = sorted({entry.seq for entry in entries})
        with self._write() as conn:
            # Sorters and appends take turns (so seq order is commit order); the entries must
            # still be there, or another sorter took them first. They are deleted last: the
            # delete updates the inbox's size row, which ingest's appends update too, so it
            # is held for the commit only, not for the messages' insert.
            self._append_turn(conn)
            stored = self._append_rows(conn, messages)
            if self._delete_inbox(conn, seqs) != len(seqs):
                raise SortRaced()  # rolls the transaction back, messages included
            return stored

    def inbox_count(self) -> tuple[int, int]:
        with self._read() as conn:
            entries, messages = self._run(conn, "inbox_count").fetchone()
        return int(entries), int(messages)

    # -- inspection ----------------------------------------------------------------------------

    def get_message(self, source: str, message_id: str) -> StoredMessage | None:
        with self._read() as conn:
            row = self._run(conn, "get_message", (source, message_id)).fetchone()
        return None if row is None else self._message(row)

    def get_by_seq(self, seq: int) -> StoredMessage | None:
        with self._read() as conn:
            row = self._run(conn, "get_by_seq", (seq,)).fetchone()
        return None if row is None else self._message(row)

    def list_messages(self, *, limit: int = 100, status: str | None = None) -> list[StoredMessage]:
        with self._read() as conn:
            if status is None:
                cursor = self._run(conn, "list_messages", (limit,))
            elif status in LITERAL_STATES:
                query = self.q["list_messages_in_state"].replace("{state}", status)
                cursor = conn.execute(query, (limit,))
            else:
                cursor = self._run(conn, "list_messages_by_status", (status, limit))
            rows = cursor.fetchall()
        return [self._message(row) for row in rows]

    def count_by_status(self) -> dict[str, int]:
        with self._read() as conn:
            rows = self._run(conn, "count_by_status").fetchall()
        return {str(status): int(count) for status, count in rows}

    def pending_count(self, destination: str | None = None) -> int:
        with self._read() as conn:
            if destination is None:
                row = self._run(conn, "pending_count").fetchone()
            else:
                row = self._run(conn, "pending_count_of_destination", (destination,)).fetchone()
        return int(row[0]) if row else 0

    def pending_by_type(self, destination: str) -> dict[str, int]:
        with self._read() as conn:
            rows = self._run(conn, "pending_by_type", (destination,)).fetchall()
        return {str(kind): int(count) for kind, count in rows}

    def prune(self, *, older_than: float) -> int:
        with self._write() as conn:
            self._run(conn, "prune_journey", (older_than, older_than))
            return int(self._run(conn, "prune", (older_than, older_than)).rowcount)

    # -- lanes ---------------------------------------------------------------------------------

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
        """The lane of the oldest ready pending message, if this claim can have it: no other
        claimer is on it and the lease is still free when taken (`_take_lanes`). A lane lost
        either way is passed over for the next, `claim_tries` times. With `head_types`, this
        is `claim_lanes` for one lane (its scan reads the pending messages of those types
        only); without, a cheaper scan that needs no check of the lane's head."""
        if head_types:
            claims = self.claim_lanes(
                destination, owner=owner, now=now, lease_seconds=lease_seconds,
                max_messages=max_messages, head_types=head_types, limit=1,
            )
            return claims[0] if claims else None
        lease_until = now + lease_seconds
        lost: list[str] = []
        with self._write() as conn:
            for _ in range(self.claim_tries):
                lane = self._candidate(conn, destination, now, lost)
                if lane is None:
                    return None
                if not self._take_lanes(conn, destination, [lane], owner, now, lease_until):
                    lost.append(lane)  # another claimer has it: the next lane
                    continue
                (messages,) = self._lane_heads(conn, destination, [lane], max_messages)
                return LaneClaim(
                    destination=destination,
                    lane=lane,
                    owner=owner,
                    lease_until=lease_until,
                    messages=messages,
                )
        return None

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
        """Up to `limit` lanes in one write transaction, found by one candidate scan, each
        taken as `claim_lane` takes one (`_take_lanes`). Lanes lost to other claimers are
        passed over: the scan runs again without them for the rest, until `claim_tries`
        lanes were lost."""
        if limit < 1:
            return []
        lease_until = now + lease_seconds
        lost: list[str] = []
        taken: list[str] = []
        with self._write() as conn:
            while len(taken) < limit:
                want = limit - len(taken)
                lanes = self._candidates(conn, destination, now, head_types, lost, want)
                got = self._take_lanes(conn, destination, lanes, owner, now, lease_until)
                taken.extend(got)
                lost.extend(sorted(set(lanes) - set(got)))
                if len(lanes) < want or len(taken) == limit or len(lost) >= self.claim_tries:
                    break  # no more candidates, enough, or too busy for this call
            heads = self._lane_heads(conn, destination, taken, max_messages)
            return [
                LaneClaim(destination=destination, lane=lane, owner=owner,
                          lease_until=lease_until, messages=messages)
                for lane, messages in zip(taken, heads, strict=True)
            ]

    def _take_lanes(
        self,
        conn: Any,
        destination: str,
        lanes: Sequence[str],
        owner: str,
        now: float,
        lease_until: float,
    ) -> list[str]:
        """Lease each of `lanes` to `owner` if no other claimer is on it (`_try_lane`) and its
        lease is still free when taken (`take_lane` re-checks): those taken, in order. A
        backend may do it for all lanes at once; the rule is the same."""
        taken: list[str] = []
        for lane in lanes:
            if not self._try_lane(conn, destination, lane):
                continue  # another worker is claiming it right now
            cursor = self._run(conn, "take_lane", {
                "destination": destination, "lane": lane, "owner": owner,
                "lease_until": lease_until, "now": now,
            })
            if cursor.rowcount == 1:  # else leased or held since the candidate query
                taken.append(lane)
        return taken

    def _lane_heads(
        self, conn: Any, destination: str, lanes: Sequence[str], max_messages: int
    ) -> list[list[StoredMessage]]:
        """Each lane's first `max_messages` pending messages, in seq order (one list a lane)."""
        return [
            [self._message(row) for row in
             self._run(conn, "lane_head", (destination, lane, max_messages)).fetchall()]
            for lane in lanes
        ]

    def renew_lease(
        self, destination: str, lane: str, owner: str, *, now: float, lease_seconds: float
    ) -> bool:
        with self._write() as conn:
            cursor = self._run(
                conn, "renew_lease", (now + lease_seconds, destination, lane, owner, now)
            )
            return bool(cursor.rowcount == 1)

    def release_lane(self, destination: str, lane: str, owner: str) -> float | None:
        with self._write() as conn:
            self._run(conn, "release_lane", (destination, lane, owner))
            # Forget lanes that hold nothing back any more, so the table stays small.
            self._run(conn, "forget_idle_lane", (destination, lane))
            # Messages left (more than one claim takes, or arrived meanwhile): a worker is
            # told, at once or when the lane's hold ends.
            row = self._run(conn, "lane_work_left", (destination, lane, destination, lane))
            left = row.fetchone()
            if left is None:
                return None
            ready_at = float(left[0])
            self._wake(conn, ready_at or None, destination)
            return ready_at

    def next_ready_at(self, destination: str, *, now: float) -> float | None:
        with self._read() as conn:
            row = self._run(conn, "next_ready_at", (destination, now)).fetchone()
        return None if row is None or row[0] is None else float(row[0])

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
        if not seqs and not steps:
            return
        with self._write() as conn:
            if seqs:
                self._for_seqs(
                    conn, "finish", (status, 1 if attempted else 0, now, reason), seqs
                )
            self._add_steps(conn, steps)

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
        with self._write() as conn:
            self._run(
                conn, "reschedule", (attempts, available_at, first_failure_at, last_error, seq)
            )
            self._add_steps(conn, steps)
            self._run(conn, "hold_lane", (destination, lane, available_at))
            self._wake(conn, available_at, destination)

    def requeue(self, seqs: Sequence[int], *, now: float) -> int:
        if not seqs:
            return 0
        distinct = sorted(set(seqs))
        with self._write() as conn:
            rows = self._for_seqs(conn, "dead_lanes", (), distinct, fetch=True)
            self._for_seqs(conn, "requeue", (), distinct)
            lanes = sorted({(str(d), str(lane)) for _, d, lane in rows if lane is not None})
            for lane_key in lanes:
                self._run(conn, "unhold_lane", lane_key)
            self._add_steps(conn, [JourneyRow(int(seq), now, "requeued") for seq, _, _ in rows])
            for destination in sorted({str(d) for _, d, _ in rows}):
                self._wake(conn, None, destination)
        return len(rows)

    def drop_dead(self, seqs: Sequence[int], *, now: float) -> int:
        if not seqs:
            return 0
        distinct = sorted(set(seqs))
        with self._write() as conn:
            rows = self._for_seqs(conn, "dead_lanes", (), distinct, fetch=True)
            self._for_seqs(conn, "drop_dead", (now,), distinct)
            self._add_steps(conn, [JourneyRow(int(seq), now, "dropped") for seq, _, _ in rows])
        return len(rows)

    # -- the journey -----------------------------------------------------------------------------

    def _add_steps(self, conn: Any, steps: Sequence[JourneyRow]) -> None:
        """Append `steps` to their messages' journeys in one statement (numbered on from each
        message's last step by the database); a journey keeps its first JOURNEY_FIRST steps
        and its latest, JOURNEY_CAP in all. The numbers of steps cut stay unused, so readers
        see where and how many."""
        if not steps:
            return
        by_seq: dict[int, list[JourneyRow]] = {}
        for step in steps:
            by_seq.setdefault(step.seq, []).append(step)
        tail = JOURNEY_CAP - JOURNEY_FIRST
        rows: list[tuple[int, int, float, str, bytes]] = []
        for seq, mine in by_seq.items():
            # More steps at once than a journey keeps: only its first and latest go in.
            rows.extend(
                (seq, index, step.at, step.kind, step.detail)
                for index, step in enumerate(mine, start=1)
                if index <= JOURNEY_FIRST or index > len(mine) - tail
            )
        highest: dict[int, int] = {}
        for seq, number in self._insert_steps(conn, rows):
            highest[int(seq)] = max(highest.get(int(seq), 0), int(number))
        for seq, top in highest.items():
            if top > JOURNEY_CAP:
                self._run(conn, "journey_trim", (seq, JOURNEY_FIRST, top - tail))

    def add_steps(self, steps: Sequence[JourneyRow]) -> None:
        if not steps:
            return
        with self._write() as conn:
            self._add_steps(conn, steps)

    def steps_of(self, seq: int) -> list[JourneyRow]:
        with self._read() as conn:
            rows = self._run(conn, "journey_of", (seq,)).fetchall()
        return [
            JourneyRow(int(s), float(at), str(kind), bytes(detail), int(n))
            for s, at, kind, detail, n in rows
        ]

    # -- the operations read model ---------------------------------------------------------------

    def _filtered(self, name: str) -> str:
        return self.q[name].replace("{filters}", self.q["search_filters"])

    def search(
        self, query: MessageQuery, *, limit: int, before: int | None = None
    ) -> SearchPage:
        limit = max(1, limit)
        params = query_params(query)
        found: list[StoredMessage] = []
        with self._read() as conn:
            low, high = (int(v) for v in self._run(conn, "seq_bounds").fetchone())
            top = high + 1 if before is None else min(before, high + 1)
            if query.message_id is not None:
                # At most one message per source: the unique index finds them.
                cursor = conn.execute(
                    self._filtered("search_message_id"),
                    {**params, "before": top, "limit": limit + 1},
                )
                rows = [self._message(row) for row in cursor.fetchall()]
                if len(rows) > limit:
                    return SearchPage(rows[:limit], rows[limit - 1].seq)
                return SearchPage(rows, None)
            scanned = 0
            while top > low and scanned < SEARCH_MAX_SCAN:
                floor = max(low, top - SEARCH_WINDOW)
                cursor = conn.execute(self._filtered("search_window"), {
                    **params, "before": top, "floor": floor, "limit": limit - len(found),
                })
                found.extend(self._message(row) for row in cursor.fetchall())
                if len(found) >= limit:
                    return SearchPage(found, found[-1].seq)
                scanned += top - floor
                top = floor
        return SearchPage(found, top if top > low else None)

    def dead_seqs(self, query: MessageQuery, *, limit: int = 100_000) -> list[int]:
        params = {**query_params(query), "status": None, "retrying": False, "limit": limit}
        narrows = any(
            v is not None for k, v in params.items() if k not in ("status", "retrying", "limit")
        )
        named: set[int] = set()
        with self._read() as conn:
            if query.seqs:
                # Named messages: looked up one by one, however many dead letters there are.
                named = {
                    int(row[0]) for row in self._for_seqs(
                        conn, "dead_lanes", (), sorted(set(query.seqs)), fetch=True)
                }
                if not narrows:
                    return sorted(named, reverse=True)[:limit]
            rows = conn.execute(self._filtered("dead_matching"), params).fetchall()
        seqs = [int(row[0]) for row in rows]
        if query.seqs:
            seqs = [seq for seq in seqs if seq in named]
        return seqs

    def _counts(self, name: str, params: Mapping[str, object]) -> list[StatusCount]:
        with self._read() as conn:
            rows = self._run(conn, name, params).fetchall()
        return [
            StatusCount(str(dest), str(status), int(bucket), int(count))
            for dest, status, bucket, count in rows
        ]

    def finished_counts(
        self, *, start: float, end: float, bucket_seconds: int
    ) -> list[StatusCount]:
        return self._counts(
            "finished_counts", {"start": start, "end": end, "size": float(bucket_seconds)}
        )

    def _first_seq_since(self, conn: Any, when: float) -> int:
        """The first seq received at or after `when` (binary search on the primary key;
        messages are appended in about the order they were received)."""
        low, high = (int(v) for v in self._run(conn, "seq_bounds").fetchone())
        best = high + 1
        hi = high + 1
        while low < hi:
            mid = (low + hi) // 2
            row = self._run(conn, "seq_at_or_after", (mid,)).fetchone()
            if row is None:
                hi = mid
            elif float(row[1]) < when:
                low = int(row[0]) + 1
            else:
                best = min(best, int(row[0]))
                hi = mid
        return best

    def received_counts(
        self, *, start: float, end: float, bucket_seconds: int
    ) -> list[StatusCount]:
        with self._read() as conn:
            first = self._first_seq_since(conn, start - RECEIVED_ORDER_SLACK)
            rows = self._run(conn, "received_counts", {
                "start": start, "end": end, "size": float(bucket_seconds), "from_seq": first,
            }).fetchall()
        return [
            StatusCount(str(dest), str(status), int(bucket), int(count))
            for dest, status, bucket, count in rows
        ]

    def retry_counts(
        self, *, start: float, end: float, bucket_seconds: int
    ) -> list[StatusCount]:
        return self._counts(
            "retry_counts", {"start": start, "end": end, "size": float(bucket_seconds)}
        )

    def delivery_latencies(self, *, start: float, end: float) -> list[tuple[str, float]]:
        with self._read() as conn:
            rows = self._run(conn, "delivery_latencies", {"start": start, "end": end}).fetchall()
        return [(str(dest), float(seconds)) for dest, seconds in rows]

    def failure_groups(
        self, *, destination: str | None = None, since: float | None = None
    ) -> list[FailureRow]:
        params = {"destination": destination, "since": -1.0 if since is None else since}
        with self._read() as conn:
            rows = self._run(conn, "failure_groups", params).fetchall()
        groups: dict[tuple[str, str, str], FailureRow] = {}
        for dest, status, reason, count, first, last, seq in rows:
            key = (str(dest), str(status), str(reason))
            group = groups.get(key)
            if group is None:
                group = groups[key] = FailureRow(
                    destination=key[0], status=key[1], reason=key[2], count=int(count),
                    first_seen=float(first), last_seen=float(last), samples=[],
                )
            group.samples.append(int(seq))
        return list(groups.values())

    def backlog(self, destination: str) -> dict[str, int]:
        with self._read() as conn:
            pending, retrying, dead = self._run(
                conn, "backlog", {"destination": destination}
            ).fetchone()
        return {"pending": int(pending), "retrying": int(retrying), "dead": int(dead)}

    def oldest_pending(self, destination: str) -> float | None:
        with self._read() as conn:
            row = self._run(conn, "oldest_pending", (destination,)).fetchone()
        return None if row is None else float(row[0])

    # -- key/value state -----------------------------------------------------------------------

    def kv_get(self, namespace: str, key: str) -> bytes | None:
        with self._read() as conn:
            row = self._run(conn, "kv_get", (namespace, key)).fetchone()
        return None if row is None or row[0] is None else bytes(row[0])

    def kv_put(self, namespace: str, key: str, value: bytes, *, now: float) -> None:
        with self._write() as conn:
            self._run(conn, "kv_put", (namespace, key, value, now))

    def kv_update(
        self,
        namespace: str,
        key: str,
        update: Callable[[bytes | None], tuple[T, bytes]],
        *,
        now: float,
    ) -> T:
        with self._write() as conn:
            if "kv_reserve" in self.q:  # an engine that locks rows needs one to lock
                self._run(conn, "kv_reserve", (namespace, key, now))
            row = self._run(conn, "kv_get_for_update", (namespace, key)).fetchone()
            result, value = update(None if row is None or row[0] is None else bytes(row[0]))
            self._run(conn, "kv_put", (namespace, key, value, now))
            return result

    def kv_prune(self, namespace_prefix: str, *, older_than: float) -> int:
        with self._write() as conn:
            cursor = self._run(conn, "kv_prune", (escape_like(namespace_prefix), older_than))
            return int(cursor.rowcount)


def pending_migrations(migrations: Mapping[int, str], applied: int) -> Iterator[tuple[int, str]]:
    """The migrations after version `applied`, in order."""
    for version in sorted(migrations):
        if version > applied:
            yield version, migrations[version]


for _name in PUBLIC_METHODS & SQLStore.__dict__.keys():
    setattr(SQLStore, _name, guarded(SQLStore.__dict__[_name]))
