"""The embedded SQLite store: WAL journal, ``synchronous=FULL``, one writer connection.

Durability: a transaction that returned from ``commit()`` survives ``kill -9`` of the process
(and, with FULL, a power loss). Several processes may open the same file; writers serialise
on SQLite's lock with a busy timeout.
"""

from __future__ import annotations

import functools
import logging
import re
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from freshsales_destination.errors import (
    ConfigError,
    StoreError,
    StoreRefused,
    StoreUnavailable,
)
from freshsales_destination.private_files import private_sqlite
from freshsales_destination.store.base import (
    InboxEntry,
    NewMessage,
    inbox_entry,
    within_limits,
)
from freshsales_destination.store.queries import migrations, queries
from freshsales_destination.store.rules import SQLStore, pending_migrations

log = logging.getLogger(__name__)

MIGRATIONS = migrations("sqlite")
SCHEMA_VERSION = max(MIGRATIONS)

_Q = queries("sqlite")

# Ids per duplicate lookup, and rows per INSERT (x 12 parameters): under the 32,766
# parameters SQLite allows since 3.32.
_ID_CHUNK = 500
_INSERT_CHUNK = 500


@functools.lru_cache(maxsize=64)
def _insert_many(rows: int) -> str:
    return _Q["append_messages"].replace("{rows}", ", ".join([_Q["append_row"]] * rows))


_INBOX_CHUNK = 2_000  # x 6 parameters
_STEP_CHUNK = 500  # journey steps per INSERT (x 5 parameters)


@functools.lru_cache(maxsize=64)
def _steps_insert(rows: int) -> str:
    return _Q["journey_add"].replace("{rows}", ", ".join([_Q["journey_row"]] * rows))


@functools.lru_cache(maxsize=64)
def _inbox_insert(rows: int) -> str:
    return _Q["inbox_append"].replace("{rows}", ", ".join([_Q["inbox_row"]] * rows))


@functools.lru_cache(maxsize=64)
def _marks(query: str, count: int) -> str:
    """`query` with ``{marks}`` replaced by `count` placeholders."""
    return _Q[query].replace("{marks}", ",".join("?" * count))


@functools.lru_cache(maxsize=16)
def _claim_query(types: int) -> str:
    """`claim_candidates` for any type (0) or for `types` types, each read through its own
    index range (one arm per type, merged by seq)."""
    if types == 0:
        query = _Q["claim_candidates"]
    elif types == 1:
        query = _Q["claim_candidates_of_type"].replace("{n}", "0")
    else:
        arms = " UNION ALL ".join(
            "SELECT seq, lane FROM (" + _Q["claim_candidates_of_type"].replace("{n}", str(n)) + ")"
            for n in range(types)
        )
        query = _Q["claim_candidates_merged"].replace("{arms}", arms)
    return query.replace("{free_head}", _Q["claim_free_head"])


class _Checkpointer:
    """Copies the WAL into the database file from its own connection and thread.

    A PASSIVE checkpoint never blocks writers; it runs every `interval` seconds. While
    commits keep coming the WAL cannot start over, so past `max_wal_bytes` a TRUNCATE
    checkpoint makes writers wait for it once (SQLite's own default is a checkpoint inside
    the commit that crosses 1,000 pages, which every request of that commit waits for).
    """

    def __init__(
        self,
        path: Path,
        busy_timeout: float,
        *,
        interval: float = 0.5,
        max_wal_bytes: int = 256 * 1024 * 1024,
    ) -> None:
        self._path = path
        self._busy_timeout = busy_timeout
        self._interval = interval
        self._max_wal_bytes = max_wal_bytes
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
        self.failed = False

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()

    def _run(self) -> None:
        wal = Path(f"{self._path}-wal")
        try:
            conn = sqlite3.connect(
                str(self._path), timeout=self._busy_timeout, isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error:
            log.exception("the WAL checkpoint thread cannot open %s", self._path)
            self.failed = True
            return
        try:
            conn.execute("PRAGMA synchronous=FULL")
            while not self._stopping.wait(self._interval):
                try:
                    size = wal.stat().st_size if wal.exists() else 0
                    mode = "TRUNCATE" if size > self._max_wal_bytes else "PASSIVE"
                    conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
                except (sqlite3.Error, OSError) as exc:  # busy, locked: next round
                    log.debug("WAL checkpoint skipped: %s", exc)
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except Exception:  # noqa: BLE001 - say so: the writer connection checkpoints again
            log.exception("the WAL checkpoint thread stopped")
            self.failed = True
        finally:
            conn.close()


def sqlite_path_from_url(url: str) -> Path | None:
    """``sqlite:///relative.db`` or ``sqlite:////abs/path.db``; ``sqlite://`` is in-memory."""
    parts = urlsplit(url)
    if parts.scheme != "sqlite":
        raise ConfigError("store.url is not a sqlite:// URL")
    path = parts.path
    if not path or path == "/":
        return None
    return Path(path[1:]) if path.startswith("/") else Path(path)


class SQLiteStore(SQLStore):
    """A :class:`~freshsales_destination.store.base.Store` on one SQLite file (the rules are
    `SQLStore`'s; this class holds the connection, the checkpoints and what SQLite does its
    own way)."""

    dialect = "sqlite"

    def __init__(self, path: Path | None, *, busy_timeout: float = 10.0) -> None:
        self.path = path
        self._busy_timeout = busy_timeout
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._checkpointer: _Checkpointer | None = None

    @classmethod
    def from_url(cls, url: str) -> SQLiteStore:
        return cls(sqlite_path_from_url(url))

    # -- lifecycle ---------------------------------------------------------------------------

    def open(self) -> None:
        with self._lock:
            if self._conn is not None:
                return
            target = ":memory:"
            if self.path is not None:
                private_sqlite(self.path)  # 0600 (and a 0700 directory when created here)
                target = str(self.path)
            conn = sqlite3.connect(
                target,
                timeout=self._busy_timeout,
                isolation_level=None,  # we issue BEGIN/COMMIT ourselves
                check_same_thread=False,
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._conn = conn
            self._migrate(conn)
            if self.path is not None:
                # Checkpoints (copying the WAL into the database file, with its fsync) run
                # in a thread of their own, never inside a commit that requests wait for.
                conn.execute("PRAGMA wal_autocheckpoint=0")
                self._checkpointer = _Checkpointer(self.path, self._busy_timeout)
                self._checkpointer.start()

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            for target, script in pending_migrations(MIGRATIONS, version):
                # Statements end a line with ";" (a trigger's inner ";" is mid-line).
                for statement in re.split(r";[ \t]*\n", script):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {int(target)}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        with self._lock:
            if self._checkpointer is not None:
                self._checkpointer.stop()
                self._checkpointer = None
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction on the writer connection."""
        with self._lock:
            conn = self._conn
            if conn is None:
                raise StoreUnavailable("the store is not open")
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"the store cannot start a write: {exc}") from None
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            self._check_checkpointer(conn)

    def _check_checkpointer(self, conn: sqlite3.Connection) -> None:
        """If the checkpoint thread died, commits checkpoint again (SQLite's default)."""
        checkpointer = self._checkpointer
        if checkpointer is not None and checkpointer.failed:
            conn.execute("PRAGMA wal_autocheckpoint=1000")
            self._checkpointer = None

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._conn is None:
                raise StoreUnavailable("the store is not open")
            yield self._conn

    def translate(self, exc: Exception, operation: str) -> StoreError | None:
        if isinstance(exc, (sqlite3.IntegrityError, sqlite3.DataError)):
            return StoreRefused(f"the store refused the data ({operation}): {exc}")
        if isinstance(exc, sqlite3.Error):
            return StoreUnavailable(f"the store could not {operation}: {exc}")
        return None

    # -- what only SQLite does -----------------------------------------------------------------

    def _append_rows(self, conn: sqlite3.Connection, messages: Sequence[NewMessage]) -> list[bool]:
        # Under the write lock (BEGIN IMMEDIATE) no other writer can insert, so the ids found
        # here are exactly the duplicates; then multi-row INSERTs store the rest.
        seen = self._existing_ids(conn, messages)
        results: list[bool] = []
        rows: list[tuple[object, ...]] = []
        for item in messages:
            key = (item.source, item.message_id)
            if key in seen:
                results.append(False)
                continue
            seen.add(key)  # a repeat inside this same call is a duplicate too
            results.append(True)
            rows.append((
                item.source,
                item.message_id,
                item.destination,
                item.type,
                item.status,
                item.reason,
                item.lane,
                item.received_at,
                item.event_at,
                None if item.status == "pending" else item.received_at,
                item.raw,
                item.message,
            ))
        before = conn.total_changes
        for start in range(0, len(rows), _INSERT_CHUNK):
            chunk = rows[start : start + _INSERT_CHUNK]
            conn.execute(_insert_many(len(chunk)), [v for row in chunk for v in row])
        if conn.total_changes - before != len(rows):  # cannot happen; never guess
            raise sqlite3.IntegrityError("duplicate detection disagreed with the insert")
        return results

    @staticmethod
    def _existing_ids(
        conn: sqlite3.Connection, messages: Sequence[NewMessage]
    ) -> set[tuple[str, str]]:
        by_source: dict[str, list[str]] = {}
        for item in messages:
            by_source.setdefault(item.source, []).append(item.message_id)
        found: set[tuple[str, str]] = set()
        for source, ids in by_source.items():
            for start in range(0, len(ids), _ID_CHUNK):
                chunk = ids[start : start + _ID_CHUNK]
                for (message_id,) in conn.execute(
                    _marks("existing_ids", len(chunk)), (source, *chunk)
                ):
                    found.add((source, str(message_id)))
        return found

    def inbox_append(self, entries: Sequence[InboxEntry]) -> None:
        if not entries:
            return
        values = [
            (e.source, e.destination, e.kind, e.received_at, e.count, e.body) for e in entries
        ]
        if len(values) <= _INBOX_CHUNK:
            # One statement outside BEGIN/COMMIT is its own transaction: the writer thread
            # gives up and takes back the GIL once per commit, not three times (each take
            # can wait for the event loop's switch interval).
            with self._read() as conn:
                conn.execute(_inbox_insert(len(values)), [v for row in values for v in row])
                self._check_checkpointer(conn)
            return
        with self._write() as conn:
            for start in range(0, len(values), _INBOX_CHUNK):
                chunk = values[start : start + _INBOX_CHUNK]
                conn.execute(_inbox_insert(len(chunk)), [v for row in chunk for v in row])

    def inbox_oldest(self, max_messages: int, max_bytes: int = 8 << 20) -> list[InboxEntry]:
        with self._read() as conn:
            # The cursor is lazy: rows past the cut (and their bodies) are never read.
            cursor = conn.execute(_Q["inbox_oldest"], (max(1, max_messages),))
            rows = within_limits(
                cursor, lambda row: (int(row[5]), len(row[6])), max_messages, max_bytes
            )
            cursor.close()
        return [inbox_entry(row) for row in rows]

    def _insert_steps(
        self, conn: sqlite3.Connection, rows: Sequence[tuple[int, int, float, str, bytes]]
    ) -> list[tuple[int, int]]:
        numbered: list[tuple[int, int]] = []
        for start in range(0, len(rows), _STEP_CHUNK):
            chunk = rows[start : start + _STEP_CHUNK]
            cursor = conn.execute(_steps_insert(len(chunk)), [v for row in chunk for v in row])
            numbered.extend((int(seq), int(n)) for seq, n in cursor.fetchall())
        return numbered

    def _delete_inbox(self, conn: sqlite3.Connection, seqs: Sequence[int]) -> int:
        deleted = 0
        for start in range(0, len(seqs), _ID_CHUNK):
            chunk = seqs[start : start + _ID_CHUNK]
            deleted += conn.execute(_marks("inbox_delete", len(chunk)), chunk).rowcount
        return deleted

    def ping(self) -> None:
        with self._write() as conn:
            conn.execute(_Q["ping"]).fetchone()

    def _for_seqs(
        self,
        conn: sqlite3.Connection,
        name: str,
        params: Sequence[object],
        seqs: Sequence[int],
        *,
        fetch: bool = False,
    ) -> list[Any]:
        query = _Q[name]
        if not fetch:
            conn.executemany(query, [(*params, seq) for seq in seqs])
            return []
        rows: list[Any] = []
        for seq in seqs:
            rows.extend(conn.execute(query, (*params, seq)).fetchall())
        return rows

    def _candidates(
        self,
        conn: sqlite3.Connection,
        destination: str,
        now: float,
        head_types: Sequence[str] | None,
        lost: Sequence[str],
        limit: int,
    ) -> list[str]:
        # Inside BEGIN IMMEDIATE no other claimer runs: no lane is ever lost.
        params: dict[str, object] = {"destination": destination, "now": now, "limit": limit}
        types = list(dict.fromkeys(head_types or ()))
        params.update({f"type{n}": kind for n, kind in enumerate(types)})
        rows = conn.execute(_claim_query(len(types)), params).fetchall()
        return [str(lane) for _, lane in rows]

    def _candidate(
        self, conn: sqlite3.Connection, destination: str, now: float, lost: Sequence[str]
    ) -> str | None:
        # Inside BEGIN IMMEDIATE no other claimer runs: no lane is ever lost (claim_tries 1).
        row = conn.execute(_Q["claim_candidate"], (destination, now, now)).fetchone()
        return None if row is None else str(row[0])
