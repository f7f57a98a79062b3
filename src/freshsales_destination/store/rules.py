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
    InboxEntry,
    LaneClaim,
    NewMessage,
    SortRaced,
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
    "ping", "get_message", "get_by_seq", "count_by_status", "prune", "claim_lane",
    "renew_lease", "release_lane", "finish", "reschedule", "requeue", "list_messages",
    "pending_count", "pending_by_type", "kv_get", "kv_put", "kv_update", "kv_prune",
})


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
        self,
        conn: Any,
        destination: str,
        now: float,
        head_types: Sequence[str] | None,
        lost: Sequence[str],
    ) -> str | None:
        """The lane of the oldest ready pending message (not leased, not held, not in `lost`,
        with `head_types` only a lane whose next message has one of them)."""

    def _try_lane(self, conn: Any, destination: str, lane: str) -> bool:
        """Whether this claim may work on `lane` now (no other claimer is on it)."""
        return True

    def _append_turn(self, conn: Any) -> None:
        """Wait for concurrent appends (and sorts) to commit first, if the engine needs it."""

    def _wake(self, conn: Any, available_at: float | None) -> None:
        """Tell idle workers in other processes, on commit, that work is ready (now, or at
        `available_at`), if the engine can (PostgreSQL: NOTIFY; SQLite wakes in-process)."""

    def _message(self, row: Sequence[Any]) -> StoredMessage:
        (seq, source, destination, message_id, kind, status, reason, lane, received_at,
         event_at, attempts, available_at, last_error, raw, message, first_failure_at) = row
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
            # still be there, or another sorter took them first.
            self._append_turn(conn)
            if self._delete_inbox(conn, seqs) != len(seqs):
                raise SortRaced()  # rolls the transaction back
            return self._append_rows(conn, messages)

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
        claimer is on it (`_try_lane`) and the lease is still free when taken (`take_lane`
        re-checks). A lane lost either way is passed over for the next, `claim_tries` times."""
        lease_until = now + lease_seconds
        lost: list[str] = []
        with self._write() as conn:
            for _ in range(self.claim_tries):
                lane = self._candidate(conn, destination, now, head_types, lost)
                if lane is None:
                    return None
                if not self._try_lane(conn, destination, lane):
                    lost.append(lane)  # another worker is claiming it right now
                    continue
                taken = self._run(conn, "take_lane", {
                    "destination": destination, "lane": lane, "owner": owner,
                    "lease_until": lease_until, "now": now,
                })
                if taken.rowcount != 1:
                    lost.append(lane)  # leased or held since the candidate query: next lane
                    continue
                rows = self._run(conn, "lane_head", (destination, lane, max_messages)).fetchall()
                return LaneClaim(
                    destination=destination,
                    lane=lane,
                    owner=owner,
                    lease_until=lease_until,
                    messages=[self._message(row) for row in rows],
                )
        return None

    def renew_lease(
        self, destination: str, lane: str, owner: str, *, now: float, lease_seconds: float
    ) -> bool:
        with self._write() as conn:
            cursor = self._run(
                conn, "renew_lease", (now + lease_seconds, destination, lane, owner, now)
            )
            return bool(cursor.rowcount == 1)

    def release_lane(self, destination: str, lane: str, owner: str) -> None:
        with self._write() as conn:
            self._run(conn, "release_lane", (destination, lane, owner))
            # Forget lanes that hold nothing back any more, so the table stays small.
            self._run(conn, "forget_idle_lane", (destination, lane))

    def finish(
        self, seqs: Sequence[int], *, status: str, now: float, reason: str | None = None
    ) -> None:
        if not seqs:
            return
        with self._write() as conn:
            self._for_seqs(conn, "finish", (status, now, reason), seqs)

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
    ) -> None:
        with self._write() as conn:
            self._run(
                conn, "reschedule", (attempts, available_at, first_failure_at, last_error, seq)
            )
            self._run(conn, "hold_lane", (destination, lane, available_at))
            self._wake(conn, available_at)

    def requeue(self, seqs: Sequence[int], *, now: float) -> int:
        if not seqs:
            return 0
        distinct = sorted(set(seqs))
        with self._write() as conn:
            rows = self._for_seqs(conn, "dead_lanes", (), distinct, fetch=True)
            self._for_seqs(conn, "requeue", (), distinct)
            lanes = sorted({(str(d), str(lane)) for d, lane in rows if lane is not None})
            for lane_key in lanes:
                self._run(conn, "unhold_lane", lane_key)
            if rows:
                self._wake(conn, None)
        return len(rows)

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
