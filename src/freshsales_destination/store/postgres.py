"""The PostgreSQL store: one queue shared by many workers on many machines.

Same semantics as the SQLite reference (``store/sqlite.py``), on psycopg 3's synchronous API
with a connection pool (async callers run store methods in a worker thread). Every method is
one short transaction; a transaction that returned has been committed with the server's
``synchronous_commit`` (on by default).

Concurrency:

* ``append`` inserts with ``ON CONFLICT (source, message_id) DO NOTHING``; a concurrent insert
  of the same id waits for the other transaction, so each message is new exactly once.
* ``claim_lane`` locks a candidate message ``FOR UPDATE SKIP LOCKED`` (so concurrent claimers
  spread over different candidates), takes a non-blocking advisory lock on its lane (so two
  claimers never work on one lane, and never wait for each other), then takes the lease with
  a conditional upsert of the ``lanes`` row, which PostgreSQL re-checks against the latest
  committed row. A claimer that finds a lane busy or freshly leased tries the next one.
* ``claim_lanes`` does the same for many lanes at once: one candidate query (each lane's next
  message only, ``LIMIT n``, ``SKIP LOCKED``), then the advisory locks, the leases and the
  lanes' head messages in one statement each; lanes lost are passed over and the query runs
  again without them for the rest.
* ``kv_update`` inserts the row if missing, then reads it ``FOR UPDATE``, in one transaction.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, overload
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.errors import ProgramLimitExceeded
from psycopg_pool import ConnectionPool, PoolTimeout

from freshsales_destination.errors import (
    ConfigError,
    StoreError,
    StoreRefused,
    StoreUnavailable,
)
from freshsales_destination.store import wakeups
from freshsales_destination.store.base import (
    InboxEntry,
    NewMessage,
    StoredMessage,
    inbox_entry,
    within_limits,
)
from freshsales_destination.store.queries import migrations, queries
from freshsales_destination.store.rules import SQLStore, pending_migrations

# Ordered migrations (store/migrations/postgres/); each runs once, in its own transaction with
# the version bump, under an advisory lock so that two processes opening a fresh database at
# once do not race.
MIGRATIONS = migrations("postgres")
SCHEMA_VERSION = max(MIGRATIONS)

_Q = queries("postgres")

# How many lanes one claim may find busy before giving up for this call (then the worker polls
# again). Only lanes other claimers are claiming at this instant are busy, so this is roughly
# the number of concurrent claimers that may collide.
_MAX_CLAIM_TRIES = 64

# Connections one process keeps at most (`store.pool_size`): ingest's two commits in flight
# and its sorting, the delivery workers' store calls (one thread each at a time, at most the
# default executor's threads), housekeeping, with room to spare.
DEFAULT_POOL_SIZE = 10

_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


@overload
def _text(value: str) -> str: ...
@overload
def _text(value: None) -> None: ...
def _text(value: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL (SQLite's can): such a character becomes U+FFFD.
    Ingest already keeps ids and lanes free of it (core/segment.py `bounded_key`)."""
    if value is not None and "\x00" in value:
        return value.replace("\x00", "\ufffd")
    return value


def split_postgres_url(url: str) -> tuple[str, str]:
    """``postgresql://user@host/db?schema=name`` -> (libpq DSN, schema); schema defaults to public."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ConfigError("store.url is not a postgresql:// URL")
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = "public"
    rest: list[tuple[str, str]] = []
    for name, value in query:
        if name == "schema":
            schema = value
        else:
            rest.append((name, value))
    dsn = urlunsplit(parts._replace(query=urlencode(rest)))
    return dsn, schema


class PostgresStore(SQLStore):
    """A :class:`~freshsales_destination.store.base.Store` on a PostgreSQL database (the
    rules are `SQLStore`'s; this class holds the pool and what PostgreSQL does its own way).

    ``schema`` holds the tables (created if missing); ``min_size``/``max_size`` bound the
    connection pool; ``timeout`` is how long a call waits for a connection before the store
    counts as unavailable.
    """

    dialect = "postgres"
    claim_tries = _MAX_CLAIM_TRIES
    # Ingest's group commits in flight at once (ingest/committer.py): while one waits for
    # its WAL flush the next is already on its way, and the server flushes both. Measured in
    # docs/benchmarks.md; SQLite has one writer, so one.
    concurrent_commits = 2

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "public",
        min_size: int = 1,
        max_size: int = DEFAULT_POOL_SIZE,
        timeout: float = 10.0,
        reconnect_timeout: float = 5.0,
    ) -> None:
        if not _SCHEMA_NAME.match(schema):
            raise ConfigError(f"invalid PostgreSQL schema name {schema!r}")
        self.dsn = dsn
        self.schema = schema
        self._min_size = min(min_size, max_size)
        self._max_size = max_size
        self._timeout = timeout
        self._reconnect_timeout = reconnect_timeout
        self._pool: ConnectionPool | None = None
        self._lifecycle = threading.Lock()

    @classmethod
    def from_url(cls, url: str, *, pool_size: int | None = None) -> PostgresStore:
        """The store `url` names; `pool_size` (``store.pool_size``) is the pool's largest
        size, DEFAULT_POOL_SIZE when None."""
        dsn, schema = split_postgres_url(url)
        return cls(dsn, schema=schema, max_size=pool_size or DEFAULT_POOL_SIZE)

    @property
    def pool_size(self) -> int:
        """The most connections this store's pool opens."""
        return self._max_size

    # -- lifecycle ---------------------------------------------------------------------------

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute("SELECT set_config('search_path', %s, false)", (self.schema,))
        conn.commit()

    def open(self) -> None:
        with self._lifecycle:
            if self._pool is None:
                self._pool = self._open_pool()

    def _open_pool(self) -> ConnectionPool:
        pool: ConnectionPool = ConnectionPool(
            self.dsn,
            min_size=self._min_size,
            max_size=self._max_size,
            timeout=self._timeout,
            configure=self._configure,
            # Connection attempts back off (1 s, doubling); after a server restart a pool
            # that kept one attempt going for psycopg's default 5 minutes could wait half a
            # minute for its next try. Give up after a few seconds instead: the next caller
            # starts a fresh attempt at once, so processes reconnect soon after the server.
            reconnect_timeout=self._reconnect_timeout,
            open=False,
            name=f"fsd-store-{self.schema}",
        )
        try:
            pool.open(wait=True, timeout=self._timeout)
            with pool.connection() as conn:
                self._migrate(conn)
        except (psycopg.OperationalError, PoolTimeout) as exc:
            pool.close()
            raise StoreUnavailable(f"cannot open the PostgreSQL store: {exc}") from None
        except BaseException:
            pool.close()
            raise
        return pool

    def _migrate(self, conn: psycopg.Connection[Any]) -> None:
        with conn.transaction():
            # Serialise migrations of this schema across processes (one key per schema).
            conn.execute(_Q["migrate_lock"], (f"freshsales_destination.migrate.{self.schema}",))
            # CREATE SCHEMA IF NOT EXISTS needs the database's CREATE privilege even when the
            # schema exists, so only ask for it when the schema is missing.
            if conn.execute(_Q["schema_exists"], (self.schema,)).fetchone() is None:
                create = sql.SQL(_Q["create_schema"])
                conn.execute(create.format(schema=sql.Identifier(self.schema)))
            conn.execute(_Q["create_schema_migrations"])
            row = conn.execute(_Q["applied_version"]).fetchone()
            version = int(row[0]) if row else 0
            for target, script in pending_migrations(MIGRATIONS, version):
                conn.execute(script.encode())  # several statements, no params
                conn.execute(_Q["record_migration"], (target,))

    def close(self) -> None:
        with self._lifecycle:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    @contextmanager
    def _tx(self) -> Iterator[psycopg.Connection[Any]]:
        """One transaction on a pooled connection: committed on success, else rolled back."""
        pool = self._pool
        if pool is None:
            raise StoreUnavailable("the store is not open")
        with pool.connection() as conn:  # driver errors are translated by `translate`
            yield conn

    _write = _tx
    _read = _tx

    @contextmanager
    def _statement(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection in autocommit mode, for one statement that is a transaction of
        its own: committed (with the server's `synchronous_commit`) when `execute` returns,
        in one round trip instead of three (BEGIN, the statement, COMMIT)."""
        with self._tx() as conn:
            conn.autocommit = True
            try:
                yield conn
            finally:
                # Back as the pool lends it; a broken connection is discarded by the pool.
                with contextlib.suppress(psycopg.Error):
                    conn.autocommit = False

    def translate(self, exc: Exception, operation: str) -> StoreError | None:
        # SQLSTATE classes 22 (data), 23 (integrity) and 54 (program limit, an
        # OperationalError): the data, not the server, is the cause.
        if isinstance(exc, (psycopg.DataError, psycopg.IntegrityError, ProgramLimitExceeded)):
            return StoreRefused(f"the store refused the data ({operation}): {exc}")
        if isinstance(exc, (psycopg.Error, PoolTimeout)):
            return StoreUnavailable(f"the PostgreSQL store could not {operation}: {exc}")
        return None

    def _message(self, row: Sequence[Any]) -> StoredMessage:
        # The SELECT lists columns in StoredMessage's field order; psycopg already returns
        # int, float, str and bytes.
        return StoredMessage(*row)

    # -- what only PostgreSQL does -------------------------------------------------------------

    def _append_turn(self, conn: psycopg.Connection[Any]) -> None:
        # Appends take turns, so `seq` order is commit order: a claimer never sees a later
        # message of a lane before an earlier one that was still committing. Ingest sorts
        # whole inbox chunks, so this serialises transactions, not messages.
        conn.execute(_Q["append_turn"])

    def _append_rows(
        self, conn: psycopg.Connection[Any], messages: Sequence[NewMessage]
    ) -> list[bool]:
        if not messages:
            return []
        # A repeat inside this call is a duplicate of its first occurrence (as in SQLite), so
        # only first occurrences are sent; their keys are distinct, which makes the keys the
        # INSERT returns an exact map back to the inputs.
        first: dict[tuple[str, str], int] = {}
        for index, item in enumerate(messages):
            first.setdefault((item.source, _text(item.message_id)), index)
        batch = [messages[i] for i in first.values()]
        # Binary parameters (%b): measured on a loaded 2-core box, ~600-byte messages: 25-36k
        # rows/s at 100-1,000 rows per call, against 13-16k/s with text parameters and
        # 16-27k/s with executemany(returning=True); ~1.3k/s at one row per commit.
        params = (
            [m.source for m in batch],
            [_text(m.message_id) for m in batch],
            [m.destination for m in batch],
            [_text(m.type) for m in batch],
            [m.status for m in batch],
            [_text(m.reason) for m in batch],
            [_text(m.lane) for m in batch],
            [m.received_at for m in batch],
            [m.event_at for m in batch],
            [None if m.status == "pending" else m.received_at for m in batch],
            [m.raw for m in batch],
            [m.message for m in batch],
        )
        self._append_turn(conn)
        inserted = {
            (str(s), str(i)) for s, i in conn.execute(_Q["append_messages"], params).fetchall()
        }
        if inserted:  # idle workers of every process wake on commit (store/wakeups.py)
            for destination in sorted({m.destination for m in batch}):
                self._wake(conn, None, destination)
        results = [False] * len(messages)
        for key, index in first.items():
            results[index] = key in inserted
        return results

    def inbox_append(self, entries: Sequence[InboxEntry]) -> None:
        if not entries:
            return
        params = (
            [e.source for e in entries],
            [e.destination for e in entries],
            [e.kind for e in entries],
            [e.received_at for e in entries],
            [e.count for e in entries],
            [e.body for e in entries],
        )
        with self._statement() as conn:
            conn.execute(_Q["inbox_append"], params)

    def inbox_oldest(self, max_messages: int, max_bytes: int = 8 << 20) -> list[InboxEntry]:
        with self._tx() as conn:
            # Sizes first, then only the bodies that fit (a client-side cursor would fetch
            # every body of the LIMIT).
            sizes = conn.execute(_Q["inbox_sizes"], (max(1, max_messages),)).fetchall()
            taken = within_limits(
                sizes, lambda row: (int(row[1]), int(row[2])), max_messages, max_bytes
            )
            rows = conn.execute(
                _Q["inbox_entries"], ([int(row[0]) for row in taken],)
            ).fetchall()
        return [inbox_entry(row) for row in rows]

    def _delete_inbox(self, conn: psycopg.Connection[Any], seqs: Sequence[int]) -> int:
        return int(conn.execute(_Q["inbox_delete"], (list(seqs),)).rowcount)

    def ping(self) -> None:
        with self._tx() as conn:
            row = conn.execute(_Q["ping"]).fetchone()
        if row is None or row[0] != "off":
            raise StoreUnavailable("the PostgreSQL store is read-only (a standby?)")

    def _insert_steps(
        self,
        conn: psycopg.Connection[Any],
        rows: Sequence[tuple[int, int, float, str, bytes]],
    ) -> list[tuple[int, int]]:
        columns = [list(column) for column in zip(*rows, strict=True)] if rows else [[]] * 5
        cursor = conn.execute(_Q["journey_add"], columns)
        return [(int(seq), int(n)) for seq, n in cursor.fetchall()]

    def _for_seqs(
        self,
        conn: psycopg.Connection[Any],
        name: str,
        params: Sequence[object],
        seqs: Sequence[int],
        *,
        fetch: bool = False,
    ) -> list[Any]:
        cursor = conn.execute(_Q[name], (*params, list(seqs)))
        return cursor.fetchall() if fetch else []

    def _candidate(
        self, conn: psycopg.Connection[Any], destination: str, now: float, lost: Sequence[str]
    ) -> str | None:
        row = conn.execute(_Q["claim_candidate"], {
            "destination": destination, "now": now, "lost": list(lost),
        }).fetchone()
        return None if row is None else str(row[0])

    def _candidates(
        self,
        conn: psycopg.Connection[Any],
        destination: str,
        now: float,
        head_types: Sequence[str] | None,
        lost: Sequence[str],
        limit: int,
    ) -> list[str]:
        types = list(dict.fromkeys(head_types or ()))
        type_filter = ""
        if len(types) == 1:
            type_filter = _Q["claim_of_type"]
        elif types:
            type_filter = _Q["claim_of_types"]
        query = _Q["claim_candidates"].replace("{type_filter}", type_filter)
        rows = conn.execute(query, {
            "destination": destination, "now": now, "lost": list(lost), "limit": limit,
            "type": types[0] if types else None, "types": types,
        }).fetchall()
        return [str(row[0]) for row in rows]

    def _take_lanes(
        self,
        conn: psycopg.Connection[Any],
        destination: str,
        lanes: Sequence[str],
        owner: str,
        now: float,
        lease_until: float,
    ) -> list[str]:
        # The same rule as one lane at a time (`try_lane`, then `take_lane`), in two round
        # trips for all of them (one lane: the one-lane statements, a little cheaper).
        if len(lanes) < 2:
            return super()._take_lanes(conn, destination, lanes, owner, now, lease_until)
        free = [str(row[0]) for row in conn.execute(_Q["try_lanes"], {
            "prefix": f"{self.schema}\x1f{destination}\x1f", "lanes": list(lanes),
        }).fetchall()]
        if not free:
            return []
        taken = {str(row[0]) for row in conn.execute(_Q["take_lanes"], {
            "destination": destination, "lanes": free, "owner": owner,
            "lease_until": lease_until, "now": now,
        }).fetchall()}
        return [lane for lane in free if lane in taken]

    def _lane_heads(
        self,
        conn: psycopg.Connection[Any],
        destination: str,
        lanes: Sequence[str],
        max_messages: int,
    ) -> list[list[StoredMessage]]:
        if len(lanes) < 2:
            return super()._lane_heads(conn, destination, lanes, max_messages)
        heads: dict[str, list[StoredMessage]] = {lane: [] for lane in lanes}
        if lanes:
            rows = conn.execute(_Q["lane_heads"], {
                "destination": destination, "lanes": list(lanes), "limit": max_messages,
            }).fetchall()
            for row in rows:
                message = self._message(row)
                assert message.lane is not None
                heads[message.lane].append(message)
        return [heads[lane] for lane in lanes]

    def _wake(
        self, conn: psycopg.Connection[Any], available_at: float | None, destination: str
    ) -> None:
        # NOTIFY is delivered on commit, to listeners in every process (store/wakeups.py).
        conn.execute(wakeups.NOTIFY_SQL, (wakeups.payload_for(available_at, destination),))

    def _try_lane(self, conn: psycopg.Connection[Any], destination: str, lane: str) -> bool:
        key = f"{self.schema}\x1f{destination}\x1f{lane}"
        got = conn.execute(_Q["try_lane"], (key,)).fetchone()
        return bool(got and got[0])

