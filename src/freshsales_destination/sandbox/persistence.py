"""Optional SQLite persistence: records, tracking calls and counters, written through."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import orjson

from freshsales_destination.private_files import private_sqlite

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (kind TEXT NOT NULL, id INTEGER NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (kind, id));
CREATE TABLE IF NOT EXISTS tracking (seq INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class SqliteStore:
    """A write-through copy of the sandbox's records in one SQLite file."""

    def __init__(self, path: Path) -> None:
        private_sqlite(path)  # 0600: the records are people's data
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def load(self) -> tuple[dict[str, dict[int, dict[str, Any]]], list[dict[str, Any]], dict[str, str]]:
        records: dict[str, dict[int, dict[str, Any]]] = {}
        with self._lock:
            for kind, rid, body in self._db.execute("SELECT kind, id, body FROM records ORDER BY id"):
                records.setdefault(kind, {})[int(rid)] = orjson.loads(body)
            tracking = [orjson.loads(b) for (b,) in self._db.execute("SELECT body FROM tracking ORDER BY seq")]
            meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        return records, tracking, meta

    def save_record(self, kind: str, record: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO records (kind, id, body) VALUES (?, ?, ?)",
                (kind, int(record["id"]), orjson.dumps(record).decode()),
            )

    def delete_record(self, kind: str, record_id: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM records WHERE kind = ? AND id = ?", (kind, record_id))

    def add_tracking(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute("INSERT INTO tracking (body) VALUES (?)", (orjson.dumps(entry).decode(),))

    def replace_tracking(self, entries: list[dict[str, Any]]) -> None:
        with self._lock:
            self._db.execute("DELETE FROM tracking")
            self._db.executemany("INSERT INTO tracking (body) VALUES (?)",
                                 [(orjson.dumps(e).decode(),) for e in entries])

    def set_meta(self, key: str, value: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def clear(self) -> None:
        with self._lock:
            self._db.executescript("DELETE FROM records; DELETE FROM tracking; DELETE FROM meta;")

    def close(self) -> None:
        with self._lock:
            self._db.close()
