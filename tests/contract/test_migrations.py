"""The stores' SQL as data: migrations as numbered ``.sql`` files that existing databases
already recorded, named queries, and the one error boundary every public method is behind."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path

import pytest

from freshsales_destination.errors import StoreRefused, StoreUnavailable
from freshsales_destination.store import base
from freshsales_destination.store.base import NewMessage
from freshsales_destination.store.postgres import PostgresStore
from freshsales_destination.store.queries import migrations, parse_queries, queries
from freshsales_destination.store.rules import PUBLIC_METHODS
from freshsales_destination.store.sqlite import SQLiteStore
from tests.contract.conftest import PgSchema
from tests.contract.test_store import msg


def _normalised(script: str) -> str:
    lines = [line.strip() for line in script.splitlines()]
    return " ".join(" ".join(ln for ln in lines if ln and not ln.startswith("--")).split())


# The migrations every database already created has recorded by number (SQLite's
# user_version, PostgreSQL's schema_migrations), as the code before the .sql files held them:
# digests of their statements, comments and layout aside. A released migration never
# changes; a new one gets the next number.
RELEASED = {
    "sqlite": {1: "7cb25f67d227e7ca", 2: "2e10ef737865f427", 3: "3cf211177add0c36",
               4: "6b132b844ddfa4f9", 5: "255eff07ddb8ce79"},
    "postgres": {1: "1aad4d698d8b42b5", 2: "971c7ac4141fb148", 3: "284b3f99c373dc20"},
}


@pytest.mark.parametrize("dialect", ["sqlite", "postgres"])
def test_released_migrations_keep_their_numbers_and_statements(dialect: str) -> None:
    found = migrations(dialect)  # type: ignore[arg-type]
    digests = {
        version: hashlib.sha256(_normalised(script).encode()).hexdigest()[:16]
        for version, script in found.items()
    }
    assert {v: digests[v] for v in RELEASED[dialect]} == RELEASED[dialect]
    assert list(found) == list(range(1, len(found) + 1))


def _sqlite_schema(path: Path) -> tuple[int, list[tuple[str, str]]]:
    with closing(sqlite3.connect(path)) as conn:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        objects = conn.execute(
            "SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name"
        ).fetchall()
    return version, objects


def test_a_fresh_sqlite_database_gets_every_migration_and_reopening_applies_none(
    tmp_path: Path,
) -> None:
    path = tmp_path / "q.db"
    store = SQLiteStore(path)
    store.open()
    store.append([msg("1")])
    store.close()
    version, objects = _sqlite_schema(path)
    assert version == max(migrations("sqlite")) == 7
    assert ("table", "inbox_size") in objects and ("index", "messages_dead") in objects
    assert ("index", "messages_pending_type") in objects
    assert ("table", "journey") in objects and ("index", "journey_retries") in objects
    assert ("index", "messages_status") not in objects  # created by 2, dropped by 3
    again = SQLiteStore(path)
    again.open()
    try:
        assert again.append([msg("1")]) == [False]
    finally:
        again.close()
    assert _sqlite_schema(path) == (version, objects)


def test_an_sqlite_database_of_an_older_version_is_brought_up_to_date(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:  # as version 3 left it
        for number in (1, 2, 3):
            conn.executescript(migrations("sqlite")[number])
        conn.execute("PRAGMA user_version = 3")
        conn.execute(
            "INSERT INTO messages (source, message_id, destination, type, status, received_at, "
            "event_at, raw, message) VALUES ('web', 'old', 'acme', 'track', 'pending', 1, 1, "
            "x'7b7d', x'7b7d')"
        )
    store = SQLiteStore(path)
    store.open()
    try:
        old = store.get_message("web", "old")
        assert old is not None and old.status == "pending"
        assert store.inbox_count() == (0, 0)  # 4 and 5 ran
        assert store.steps_of(old.seq) == []  # and 6
    finally:
        store.close()
    assert _sqlite_schema(path)[0] == 7


def test_a_queue_made_before_the_sql_files_opens_as_it_was(tmp_path: Path) -> None:
    """A real database of the code before this layout (its dump, see the file's header):
    a message held for a retry, a dead letter, a filtered one, an inbox entry, a budget."""
    path = tmp_path / "old.db"
    dump = (Path(__file__).parent / "data" / "sqlite_v5_before_sql_files.sql").read_text()
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.executescript(dump)
        conn.execute("PRAGMA user_version = 5")
    before = _sqlite_schema(path)
    store = SQLiteStore(path)
    store.open()
    try:
        assert store.count_by_status() == {"pending": 2, "dead": 1, "filtered": 1}
        assert store.inbox_count() == (1, 3)
        assert store.kv_get("budget", "acct") == b"42"
        claim = store.claim_lane("acme", owner="w", now=899, lease_seconds=30, max_messages=5)
        assert claim is None  # u:a is held for its retry at 900; u:b's only message is dead
        claim = store.claim_lane("acme", owner="w", now=900, lease_seconds=30, max_messages=5)
        assert claim is not None and [m.message_id for m in claim.messages] == ["p1", "p2"]
        assert (claim.messages[0].attempts, claim.messages[0].last_error) == (1, "HTTP 500")
        (dead,) = store.list_messages(status="dead")
        assert store.requeue([dead.seq], now=901) == 1
        assert store.append([msg("p1", source="web")]) == [False]  # dedup still holds
        (entry,) = store.inbox_oldest(10)
        assert store.inbox_sorted([entry], []) == [] and store.inbox_count() == (0, 0)
    finally:
        store.close()
    version, objects = _sqlite_schema(path)
    # Only the migrations after 5 ran: the journey's table and index and the pending messages'
    # index by type are new, nothing else.
    assert version == 7
    assert sorted(set(objects) - set(before[1])) == [
        ("index", "journey_retries"), ("index", "messages_pending_type"), ("table", "journey")
    ]
    assert set(before[1]) <= set(objects)


def _pg_versions(pg: PgSchema) -> list[tuple[int, object]]:
    import psycopg

    with psycopg.connect(pg.dsn) as conn:
        conn.execute("SELECT set_config('search_path', %s, false)", (pg.schema,))
        rows = conn.execute("SELECT version, applied_at FROM schema_migrations ORDER BY 1")
        return [(int(v), at) for v, at in rows]


def test_a_fresh_postgres_schema_gets_every_migration_and_reopening_applies_none(
    pg_schema: PgSchema,
) -> None:
    store = PostgresStore(pg_schema.dsn, schema=pg_schema.schema)
    store.open()
    store.close()
    applied = _pg_versions(pg_schema)
    assert [v for v, _ in applied] == list(migrations("postgres")) == [1, 2, 3, 4, 5]
    again = PostgresStore(pg_schema.dsn, schema=pg_schema.schema)
    again.open()
    again.close()
    assert _pg_versions(pg_schema) == applied


def test_a_postgres_schema_of_an_older_version_is_brought_up_to_date(pg_schema: PgSchema) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(pg_schema.dsn) as conn:  # as version 2 left it, with an entry waiting
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(pg_schema.schema)))
        conn.execute("SELECT set_config('search_path', %s, false)", (pg_schema.schema,))
        conn.execute("CREATE TABLE schema_migrations (version integer PRIMARY KEY,"
                     " applied_at timestamptz NOT NULL DEFAULT now())")
        for number in (1, 2):
            conn.execute(migrations("postgres")[number].encode())
            conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (number,))
        conn.execute("INSERT INTO inbox (source, destination, kind, received_at, count, body) "
                     "VALUES ('web', 'acme', 'batch', 1, 4, '\\x7b7d')")
    store = PostgresStore(pg_schema.dsn, schema=pg_schema.schema)
    store.open()
    try:
        assert store.inbox_count() == (1, 4)  # 3 ran and counted what was there
    finally:
        store.close()
    assert [v for v, _ in _pg_versions(pg_schema)] == [1, 2, 3, 4, 5]


# -- named queries -------------------------------------------------------------------------

# What the shared rules (store/rules.py) run, so every dialect must name it.
RULE_QUERIES = {
    "inbox_count", "get_message", "get_by_seq", "list_messages", "list_messages_by_status",
    "list_messages_in_state", "count_by_status", "pending_count", "pending_count_of_destination",
    "pending_by_type",
    "prune", "take_lane", "lane_head", "renew_lease", "release_lane", "forget_idle_lane",
    "finish", "reschedule", "hold_lane", "dead_lanes", "requeue", "unhold_lane", "kv_get",
    "kv_get_for_update", "kv_put", "kv_prune", "lane_work_left", "next_ready_at",
}


@pytest.mark.parametrize("dialect", ["sqlite", "postgres"])
def test_every_dialect_names_every_query_the_rules_run(dialect: str) -> None:
    named = queries(dialect)  # type: ignore[arg-type]
    assert RULE_QUERIES <= set(named)
    assert all(query and "-- " not in query for query in named.values())
    assert "{columns}" not in "".join(named.values())


def test_query_blocks_are_parsed_by_name_without_their_comments() -> None:
    text = """-- header, not a query
-- name: columns
a, b
-- name: one
-- what it does
SELECT {columns}
FROM t
-- name: two
DELETE FROM t
"""
    assert parse_queries(text) == {"columns": "a, b", "one": "SELECT a, b\nFROM t",
                                   "two": "DELETE FROM t"}
    with pytest.raises(ValueError, match="named twice"):
        parse_queries("-- name: a\nSELECT 1\n-- name: a\nSELECT 2\n")


# -- the error boundary --------------------------------------------------------------------


def test_every_public_method_of_every_store_is_behind_the_error_boundary() -> None:
    protocol = {
        name for name, value in vars(base.Store).items()
        if callable(value) and not name.startswith("_")
    }
    assert protocol <= PUBLIC_METHODS
    for cls in (SQLiteStore, PostgresStore):
        unguarded = [n for n in PUBLIC_METHODS if not getattr(getattr(cls, n), "__store_guarded__", False)]
        assert unguarded == [], cls


def test_a_subclass_override_is_behind_the_boundary_too(tmp_path: Path) -> None:
    class Failing(SQLiteStore):
        def append(self, messages: Sequence[NewMessage]) -> list[bool]:
            raise sqlite3.OperationalError("disk I/O error")

    store = Failing(tmp_path / "q.db")
    store.open()
    try:
        with pytest.raises(StoreUnavailable, match="disk I/O error"):
            store.append([msg("1")])
    finally:
        store.close()


def test_a_locked_sqlite_database_is_unavailable_not_refused(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    store = SQLiteStore(path, busy_timeout=0.05)
    store.open()
    try:
        store.append([msg("1")])
        with closing(sqlite3.connect(path, isolation_level=None)) as other:
            other.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
            for write in (
                lambda: store.append([msg("2")]),
                lambda: store.finish([1], status="delivered", now=1.0),
                lambda: store.kv_put("n", "k", b"v", now=1.0),
                store.ping,
            ):
                with pytest.raises(StoreUnavailable) as caught:
                    write()
                assert not isinstance(caught.value, StoreRefused)
            other.execute("ROLLBACK")
        store.finish([1], status="delivered", now=1.0)  # usable again once the lock is gone
        assert store.count_by_status() == {"delivered": 1}
    finally:
        store.close()


def test_data_postgres_cannot_hold_is_refused(pg_schema: PgSchema) -> None:
    import os

    store = PostgresStore(pg_schema.dsn, schema=pg_schema.schema)
    store.open()
    try:
        # Larger than a btree index entry may be (SQLSTATE 54000), incompressible.
        huge = msg(os.urandom(8_000).hex())
        with pytest.raises(StoreRefused):
            store.append([msg("ok"), huge])
        nul = msg("n", destination="ac\x00me")  # text cannot hold NUL (a DataError)
        with pytest.raises(StoreRefused):
            store.append([nul])
        assert store.count_by_status() == {}
    finally:
        store.close()


def test_a_dropped_postgres_connection_is_unavailable_and_the_store_goes_on(
    pg_schema: PgSchema,
) -> None:
    import psycopg

    store = PostgresStore(pg_schema.dsn, schema=pg_schema.schema, min_size=1, max_size=1)
    store.open()
    try:
        store.append([msg("1")])
        pool = store._pool  # its one connection
        assert pool is not None
        with pool.connection() as conn:
            (pid,) = conn.execute("SELECT pg_backend_pid()").fetchone() or (None,)
        with psycopg.connect(pg_schema.dsn, autocommit=True) as admin:  # as a server restart
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(StoreUnavailable):
            store.count_by_status()
        assert store.count_by_status() == {"pending": 1}  # the pool replaced the connection
    finally:
        store.close()


@pytest.mark.parametrize("dialect", ["sqlite", "postgres"])
def test_every_named_query_is_used(dialect: str) -> None:
    package = Path(__file__).parents[2] / "src" / "freshsales_destination" / "store"
    code = "".join(path.read_text() for path in package.glob("*.py"))
    fragments = {"columns"}  # filled into the others by the loader
    unused = [
        name for name in queries(dialect)  # type: ignore[arg-type]
        if name not in fragments and f'"{name}"' not in code
    ]
    assert unused == []
