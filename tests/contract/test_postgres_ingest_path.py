"""PostgreSQL's ingest path: an inbox append is one statement in autocommit (committed when it
returns, and the pooled connection goes back as it was lent), and it never waits for a sort
transaction's insert of messages (the sort deletes its entries, which updates the inbox's size
row that appends update too, only just before its commit)."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
import pytest

from freshsales_destination.errors import StoreRefused
from freshsales_destination.store.base import InboxEntry, NewMessage
from freshsales_destination.store.postgres import PostgresStore
from tests.contract.conftest import PgSchema
from tests.contract.test_store import msg

WITHIN = 30.0  # generous: only a wait that never ends fails


def _entry(n: int, source: str = "web") -> InboxEntry:
    return InboxEntry(source=source, destination="acme", kind="batch", received_at=float(n),
                      count=2, body=b'{"batch":[{},{}]}')


@pytest.fixture
def pg(pg_schema: PgSchema) -> Iterator[PostgresStore]:
    store = PostgresStore(pg_schema.dsn, schema=pg_schema.schema, min_size=2, max_size=2)
    store.open()
    yield store
    store.close()


def _lent_connections(store: PostgresStore) -> list[psycopg.Connection[Any]]:
    pool = store._pool
    assert pool is not None
    conns = [pool.getconn(), pool.getconn()]  # every connection of the pool (max_size 2)
    for conn in conns:
        pool.putconn(conn)
    return conns


def test_an_append_is_committed_when_it_returns(pg: PostgresStore, pg_schema: PgSchema) -> None:
    pg.inbox_append([_entry(1), _entry(2)])
    with psycopg.connect(pg_schema.dsn, autocommit=True) as other:
        other.execute("SELECT set_config('search_path', %s, false)", (pg_schema.schema,))
        row = other.execute("SELECT COUNT(*), SUM(count) FROM inbox").fetchone()
    assert row == (2, 4)
    assert pg.inbox_count() == (2, 4)


def test_connections_go_back_to_the_pool_out_of_autocommit(pg: PostgresStore) -> None:
    pg.inbox_append([_entry(1)])
    with pytest.raises(StoreRefused):  # PostgreSQL text cannot hold NUL: refused data
        pg.inbox_append([_entry(2, source="we\x00b")])
    assert [conn.autocommit for conn in _lent_connections(pg)] == [False, False]
    # A multi-statement rule still rolls back whole after the appends (nothing half-sorted).
    entries = pg.inbox_oldest(10)
    bad = msg("2", "u:a")
    bad.raw = None  # type: ignore[assignment]  # NOT NULL: refused inside the transaction
    with pytest.raises(StoreRefused):
        pg.inbox_sorted(entries, [msg("1", "u:a"), bad])
    assert pg.inbox_count() == (1, 2) and pg.count_by_status() == {}


class _SortHeldAfterInsert(PostgresStore):
    """Holds a sort transaction after it inserted its messages, before it deletes entries."""

    def __init__(self, dsn: str, *, schema: str) -> None:
        super().__init__(dsn, schema=schema, max_size=4)
        self.inserted = threading.Event()
        self.release = threading.Event()

    def _append_rows(self, conn: Any, messages: Sequence[NewMessage]) -> list[bool]:
        stored = super()._append_rows(conn, messages)
        self.inserted.set()
        assert self.release.wait(WITHIN)
        return stored


def test_an_append_does_not_wait_for_a_sort_transaction(pg_schema: PgSchema) -> None:
    store = _SortHeldAfterInsert(pg_schema.dsn, schema=pg_schema.schema)
    store.open()
    try:
        store.inbox_append([_entry(1)])
        entries = store.inbox_oldest(10)
        sorting = threading.Thread(
            target=store.inbox_sorted, args=(entries, [msg("1", "u:a"), msg("2", "u:b")])
        )
        sorting.start()
        assert store.inserted.wait(WITHIN)
        appended = threading.Event()

        def append() -> None:
            store.inbox_append([_entry(2)])
            appended.set()

        appending = threading.Thread(target=append)
        appending.start()
        # Were the entries deleted before the insert, the append would wait on the size row
        # until the sort commits, which here is only after `release`: the wait would run out.
        done = appended.wait(WITHIN)
        store.release.set()
        sorting.join(WITHIN)
        appending.join(WITHIN)
        assert done, "the inbox append waited for the sort transaction"
        assert store.inbox_count() == (1, 2)  # the sorted entry went, the new one is there
        assert store.count_by_status() == {"pending": 2}
    finally:
        store.release.set()
        store.close()
