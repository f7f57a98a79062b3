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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from freshsales_destination.errors import ConfigError, StoreRefused, StoreUnavailable
from freshsales_destination.private_files import private_sqlite
from freshsales_destination.store.base import (
    InboxEntry,
    LaneClaim,
    NewMessage,
    SortRaced,
    StoredMessage,
    inbox_entry,
    within_limits,
)

T = TypeVar("T")

log = logging.getLogger(__name__)

SCHEMA_VERSION = 5

MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE messages (
        seq           INTEGER PRIMARY KEY AUTOINCREMENT,
        source        TEXT    NOT NULL,
        message_id    TEXT    NOT NULL,
        destination   TEXT    NOT NULL,
        type          TEXT    NOT NULL,
        status        TEXT    NOT NULL,
        reason        TEXT,
        lane          TEXT,
        received_at   REAL    NOT NULL,
        event_at      REAL    NOT NULL,
        attempts      INTEGER NOT NULL DEFAULT 0,
        available_at  REAL    NOT NULL DEFAULT 0,
        first_failure_at REAL,
        last_error    TEXT,
        finished_at   REAL,
        raw           BLOB    NOT NULL,
        message       BLOB    NOT NULL,
        UNIQUE (source, message_id)
    );
    CREATE INDEX messages_pending ON messages (destination, seq) WHERE status = 'pending';
    CREATE INDEX messages_lane ON messages (destination, lane, seq) WHERE status = 'pending';
    CREATE INDEX messages_finished ON messages (finished_at) WHERE finished_at IS NOT NULL;
    """,
    2: """
    CREATE TABLE lanes (
        destination TEXT NOT NULL,
        lane        TEXT NOT NULL,
        hold_until  REAL NOT NULL DEFAULT 0,
        owner       TEXT,
        lease_until REAL NOT NULL DEFAULT 0,
        PRIMARY KEY (destination, lane)
    ) WITHOUT ROWID;
    CREATE TABLE kv (
        namespace  TEXT NOT NULL,
        key        TEXT NOT NULL,
        value      BLOB NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (namespace, key)
    ) WITHOUT ROWID;
    CREATE INDEX messages_status ON messages (status, seq);
    """,
    # Only dead letters are listed by status often enough to index: pending and delivered rows
    # (almost all of them) stay out of the index, so ingest does not pay for it.
    3: """
    DROP INDEX IF EXISTS messages_status;
    CREATE INDEX messages_dead ON messages (seq) WHERE status = 'dead';
    """,
    # Acknowledged requests waiting to be sorted into messages: one row per request, no
    # index but the rowid, so the cost of answering 200 is one small insert per request.
    4: """
    CREATE TABLE inbox (
        seq         INTEGER PRIMARY KEY AUTOINCREMENT,
        source      TEXT    NOT NULL,
        destination TEXT    NOT NULL,
        kind        TEXT    NOT NULL,
        received_at REAL    NOT NULL,
        count       INTEGER NOT NULL,
        body        BLOB    NOT NULL
    );
    """,
    # The inbox's size, kept exact by triggers in the transactions that change the inbox
    # (every process sees the same figure; counting millions of rows is never needed).
    5: """
    CREATE TABLE inbox_size (
        id       INTEGER PRIMARY KEY CHECK (id = 1),
        entries  INTEGER NOT NULL,
        messages INTEGER NOT NULL
    );
    INSERT INTO inbox_size SELECT 1, COUNT(*), COALESCE(SUM(count), 0) FROM inbox;
    CREATE TRIGGER inbox_size_add AFTER INSERT ON inbox BEGIN UPDATE inbox_size SET entries = entries + 1, messages = messages + NEW.count WHERE id = 1; END;
    CREATE TRIGGER inbox_size_remove AFTER DELETE ON inbox BEGIN UPDATE inbox_size SET entries = entries - 1, messages = messages - OLD.count WHERE id = 1; END;
    """,
}

_INSERT = """
INSERT INTO messages (source, message_id, destination, type, status, reason, lane,
                      received_at, event_at, finished_at, raw, message)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (source, message_id) DO NOTHING
"""

# Ids per duplicate lookup, and rows per INSERT (x 12 parameters): under the 32,766
# parameters SQLite allows since 3.32.
_ID_CHUNK = 500
_INSERT_CHUNK = 500
_INSERT_HEAD = _INSERT.split("VALUES")[0]
_INSERT_ROW = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"


@functools.lru_cache(maxsize=64)
def _insert_many(rows: int) -> str:
    values = ", ".join([_INSERT_ROW] * rows)
    return f"{_INSERT_HEAD}VALUES {values}\nON CONFLICT (source, message_id) DO NOTHING"

_INBOX_CHUNK = 2_000  # x 6 parameters
_INBOX_ROW = "(?, ?, ?, ?, ?, ?)"


@functools.lru_cache(maxsize=64)
def _inbox_insert(rows: int) -> str:
    values = ", ".join([_INBOX_ROW] * rows)
    return f"INSERT INTO inbox (source, destination, kind, received_at, count, body) VALUES {values}"


_LITERAL_STATES = frozenset({"dead", "discarded", "filtered", "dropped", "skipped"})

_COLUMNS = (
    "seq, source, destination, message_id, type, status, reason, lane, received_at, event_at, "
    "attempts, available_at, last_error, raw, message, first_failure_at"
)


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


def _row_to_message(row: sqlite3.Row | tuple[Any, ...]) -> StoredMessage:
    (seq, source, destination, message_id, kind, status, reason, lane, received_at, event_at,
     attempts, available_at, last_error, raw, message, first_failure_at) = row
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


class SQLiteStore:
    """A :class:`~freshsales_destination.store.base.Store` on one SQLite file."""

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
            for target in sorted(MIGRATIONS):
                if target > version:
                    # Statements end a line with ";" (a trigger's inner ";" is mid-line).
                    for statement in re.split(r";[ \t]*\n", MIGRATIONS[target]):
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

    # -- ingest ------------------------------------------------------------------------------

    def append(self, messages: Sequence[NewMessage]) -> list[bool]:
        if not messages:
            return []
        try:
            with self._write() as conn:
                return self._append_rows(conn, messages)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"the store could not commit: {exc}") from None

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

    def inbox_append(self, entries: Sequence[InboxEntry]) -> None:
        if not entries:
            return
        values = [
            (e.source, e.destination, e.kind, e.received_at, e.count, e.body) for e in entries
        ]
        try:
            if len(values) <= _INBOX_CHUNK:
                # One statement outside BEGIN/COMMIT is its own transaction: the writer
                # thread gives up and takes back the GIL once per commit, not three times
                # (each take can wait for the event loop's switch interval).
                with self._read() as conn:
                    conn.execute(_inbox_insert(len(values)), [v for row in values for v in row])
                    self._check_checkpointer(conn)
                return
            with self._write() as conn:
                for start in range(0, len(values), _INBOX_CHUNK):
                    chunk = values[start : start + _INBOX_CHUNK]
                    conn.execute(_inbox_insert(len(chunk)), [v for row in chunk for v in row])
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"the store could not commit: {exc}") from None

    def inbox_oldest(self, max_messages: int, max_bytes: int = 8 << 20) -> list[InboxEntry]:
        with self._read() as conn:
            # The cursor is lazy: rows past the cut (and their bodies) are never read.
            cursor = conn.execute(
                "SELECT seq, source, destination, kind, received_at, count, body "
                "FROM inbox ORDER BY seq LIMIT ?",
                (max(1, max_messages),),
            )
            rows = within_limits(
                cursor, lambda row: (int(row[5]), len(row[6])), max_messages, max_bytes
            )
            cursor.close()
        return [inbox_entry(row) for row in rows]

    def inbox_sorted(
        self, entries: Sequence[InboxEntry], messages: Sequence[NewMessage]
    ) -> list[bool]:
        if not entries:
            return self.append(messages)
        seqs = [entry.seq for entry in entries]
        try:
            with self._write() as conn:
                deleted = 0
                for start in range(0, len(seqs), _ID_CHUNK):
                    chunk = seqs[start : start + _ID_CHUNK]
                    marks = ",".join("?" * len(chunk))
                    deleted += conn.execute(
                        f"DELETE FROM inbox WHERE seq IN ({marks})", chunk
                    ).rowcount
                if deleted != len(set(seqs)):
                    raise SortRaced()
                return self._append_rows(conn, messages)
        except (sqlite3.IntegrityError, sqlite3.DataError) as exc:
            raise StoreRefused(f"the store refused sorted messages: {exc}") from None
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"the store could not sort the inbox: {exc}") from None

    def inbox_count(self) -> tuple[int, int]:
        with self._read() as conn:
            entries, messages = conn.execute(
                "SELECT entries, messages FROM inbox_size WHERE id = 1"
            ).fetchone()
        return int(entries), int(messages)

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
                marks = ",".join("?" * len(chunk))
                for (message_id,) in conn.execute(
                    f"SELECT message_id FROM messages WHERE source = ? AND message_id IN ({marks})",
                    (source, *chunk),
                ):
                    found.add((source, str(message_id)))
        return found

    def ping(self) -> None:
        try:
            with self._write() as conn:
                conn.execute("PRAGMA user_version").fetchone()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"the store is not writable: {exc}") from None

    # -- inspection --------------------------------------------------------------------------

    def get_message(self, source: str, message_id: str) -> StoredMessage | None:
        with self._read() as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM messages WHERE source = ? AND message_id = ?",
                (source, message_id),
            ).fetchone()
        return None if row is None else _row_to_message(row)

    def list_messages(self, *, limit: int = 100, status: str | None = None) -> list[StoredMessage]:
        query = f"SELECT {_COLUMNS} FROM messages"
        params: tuple[object, ...] = ()
        if status is not None:
            if status in _LITERAL_STATES:
                # A literal lets SQLite prove the partial index applies.
                query += f" WHERE status = '{status}'"
            else:
                query += " WHERE status = ?"
                params = (status,)
        query += " ORDER BY seq LIMIT ?"
        with self._read() as conn:
            rows = conn.execute(query, (*params, limit)).fetchall()
        return [_row_to_message(row) for row in rows]

    def count_by_status(self) -> dict[str, int]:
        with self._read() as conn:
            rows = conn.execute("SELECT status, COUNT(*) FROM messages GROUP BY status").fetchall()
        return {str(status): int(count) for status, count in rows}

    def prune(self, *, older_than: float) -> int:
        with self._write() as conn:
            cursor = conn.execute(
                "DELETE FROM messages WHERE finished_at IS NOT NULL AND finished_at < ? "
                "AND received_at < ? AND status != 'dead'",
                (older_than, older_than),
            )
            return int(cursor.rowcount)

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
        type_filter = ""
        params: list[object] = [destination, now, now]
        if head_types:
            # Only lanes whose *next* message is of these types: order within a lane holds.
            type_filter = (
                f" AND m.type IN ({', '.join('?' for _ in head_types)})"
                " AND NOT EXISTS (SELECT 1 FROM messages p INDEXED BY messages_lane "
                "WHERE p.destination = m.destination AND p.lane = m.lane "
                "AND p.status = 'pending' AND p.seq < m.seq)"
            )
            params.extend(head_types)
        with self._write() as conn:
            row = conn.execute(
                "SELECT m.lane FROM messages m INDEXED BY messages_pending "
                "WHERE m.destination = ? AND m.status = 'pending' AND m.lane IS NOT NULL "
                "AND NOT EXISTS (SELECT 1 FROM lanes l WHERE l.destination = m.destination "
                "AND l.lane = m.lane AND (l.hold_until > ? OR l.lease_until > ?))"
                f"{type_filter} ORDER BY m.seq LIMIT 1",
                params,
            ).fetchone()
            if row is None:
                return None
            lane = str(row[0])
            lease_until = now + lease_seconds
            conn.execute(
                "INSERT INTO lanes (destination, lane, hold_until, owner, lease_until) "
                "VALUES (?, ?, 0, ?, ?) ON CONFLICT (destination, lane) DO UPDATE SET "
                "hold_until = 0, owner = excluded.owner, lease_until = excluded.lease_until",
                (destination, lane, owner, lease_until),
            )
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM messages INDEXED BY messages_lane "
                "WHERE destination = ? AND lane = ? AND status = 'pending' ORDER BY seq LIMIT ?",
                (destination, lane, max_messages),
            ).fetchall()
        return LaneClaim(
            destination=destination,
            lane=lane,
            owner=owner,
            lease_until=lease_until,
            messages=[_row_to_message(r) for r in rows],
        )

    def renew_lease(
        self, destination: str, lane: str, owner: str, *, now: float, lease_seconds: float
    ) -> bool:
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE lanes SET lease_until = ? WHERE destination = ? AND lane = ? "
                "AND owner = ? AND lease_until > ?",
                (now + lease_seconds, destination, lane, owner, now),
            )
            return cursor.rowcount == 1

    def release_lane(self, destination: str, lane: str, owner: str) -> None:
        with self._write() as conn:
            conn.execute(
                "UPDATE lanes SET owner = NULL, lease_until = 0 "
                "WHERE destination = ? AND lane = ? AND owner = ?",
                (destination, lane, owner),
            )
            # Forget lanes that hold nothing back any more, so the table stays small.
            conn.execute(
                "DELETE FROM lanes WHERE destination = ? AND lane = ? AND owner IS NULL "
                "AND hold_until = 0",
                (destination, lane),
            )

    def finish(
        self, seqs: Sequence[int], *, status: str, now: float, reason: str | None = None
    ) -> None:
        if not seqs:
            return
        with self._write() as conn:
            conn.executemany(
                "UPDATE messages SET status = ?, finished_at = ?, "
                "reason = COALESCE(?, reason) WHERE seq = ?",
                [(status, now, reason, seq) for seq in seqs],
            )

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
            conn.execute(
                "UPDATE messages SET attempts = ?, available_at = ?, first_failure_at = ?, "
                "last_error = ? WHERE seq = ?",
                (attempts, available_at, first_failure_at, last_error, seq),
            )
            conn.execute(
                "INSERT INTO lanes (destination, lane, hold_until, owner, lease_until) "
                "VALUES (?, ?, ?, NULL, 0) ON CONFLICT (destination, lane) DO UPDATE SET "
                "hold_until = excluded.hold_until",
                (destination, lane, available_at),
            )

    def requeue(self, seqs: Sequence[int], *, now: float) -> int:
        changed = 0
        with self._write() as conn:
            for seq in seqs:
                row = conn.execute(
                    "SELECT destination, lane FROM messages WHERE seq = ? AND status = 'dead'",
                    (seq,),
                ).fetchone()
                if row is None:
                    continue
                conn.execute(
                    "UPDATE messages SET status = 'pending', attempts = 0, available_at = 0, "
                    "first_failure_at = NULL, finished_at = NULL WHERE seq = ?",
                    (seq,),
                )
                conn.execute(
                    "UPDATE lanes SET hold_until = 0 WHERE destination = ? AND lane = ?", row
                )
                changed += 1
        return changed

    def get_by_seq(self, seq: int) -> StoredMessage | None:
        with self._read() as conn:
            row = conn.execute(f"SELECT {_COLUMNS} FROM messages WHERE seq = ?", (seq,)).fetchone()
        return None if row is None else _row_to_message(row)

    def pending_count(self, destination: str | None = None) -> int:
        with self._read() as conn:
            if destination is None:
                row = conn.execute("SELECT COUNT(*) FROM messages WHERE status = 'pending'").fetchone()
            else:
                row = conn.execute(
                    "SELECT COUNT(*) FROM messages WHERE status = 'pending' AND destination = ?",
                    (destination,),
                ).fetchone()
        return int(row[0])

    # -- key/value state -----------------------------------------------------------------------

    def kv_get(self, namespace: str, key: str) -> bytes | None:
        with self._read() as conn:
            row = conn.execute(
                "SELECT value FROM kv WHERE namespace = ? AND key = ?", (namespace, key)
            ).fetchone()
        return None if row is None else bytes(row[0])

    def kv_put(self, namespace: str, key: str, value: bytes, *, now: float) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO kv (namespace, key, value, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value, "
                "updated_at = excluded.updated_at",
                (namespace, key, value, now),
            )

    def kv_update(
        self,
        namespace: str,
        key: str,
        update: Callable[[bytes | None], tuple[T, bytes]],
        *,
        now: float,
    ) -> T:
        with self._write() as conn:
            row = conn.execute(
                "SELECT value FROM kv WHERE namespace = ? AND key = ?", (namespace, key)
            ).fetchone()
            result, value = update(None if row is None else bytes(row[0]))
            conn.execute(
                "INSERT INTO kv (namespace, key, value, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value, "
                "updated_at = excluded.updated_at",
                (namespace, key, value, now),
            )
            return result

    def kv_prune(self, namespace_prefix: str, *, older_than: float) -> int:
        escaped = (
            namespace_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        )
        with self._write() as conn:
            cursor = conn.execute(
                "DELETE FROM kv WHERE namespace LIKE ? ESCAPE '\\' AND updated_at < ?",
                (escaped + "%", older_than),
            )
            return int(cursor.rowcount)
