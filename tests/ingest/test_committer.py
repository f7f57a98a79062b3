"""Group commit (ingest/committer.py): how many commits are in flight at once, and what a
client that waits for its 200 before sending again finds in the inbox.

On real stores: a PostgreSQL store whose `inbox_append` is held at a barrier (so two commits
are proven to be in progress together, not merely fast), and SQLite.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from freshsales_destination.ingest.committer import GroupCommitter
from freshsales_destination.store.base import InboxEntry, Store
from freshsales_destination.store.postgres import PostgresStore
from freshsales_destination.store.sqlite import SQLiteStore
from tests.contract.conftest import PgSchema

WITHIN = 30.0  # generous: a barrier that is never reached fails the test, never a slow one


def _entry(n: int, count: int = 1) -> InboxEntry:
    return InboxEntry(source="web", destination="acme", kind="batch", received_at=float(n),
                      count=count, body=b'{"n":%d}' % n)


class _HeldPostgresStore(PostgresStore):
    """A real PostgreSQL store whose appends wait at a barrier of `parties` callers."""

    def __init__(self, dsn: str, *, schema: str, parties: int) -> None:
        super().__init__(dsn, schema=schema, max_size=4)
        self.barrier = threading.Barrier(parties, timeout=WITHIN)
        self.calls = 0
        self.together = 0  # appends that met another one at the barrier

    def inbox_append(self, entries: Sequence[InboxEntry]) -> None:
        self.calls += 1
        if self.calls <= self.barrier.parties:
            self.barrier.wait()  # BrokenBarrierError unless enough commits are in flight
            self.together += 1
        super().inbox_append(entries)


@pytest.fixture
def held_pg(pg_schema: PgSchema) -> Iterator[_HeldPostgresStore]:
    store = _HeldPostgresStore(pg_schema.dsn, schema=pg_schema.schema, parties=2)
    store.open()
    yield store
    store.close()


async def _until(check: Callable[[], bool]) -> None:
    """Yield to the loop until `check` holds (at most WITHIN seconds)."""
    async with asyncio.timeout(WITHIN):
        while not check():
            await asyncio.sleep(0.01)


def test_postgres_stores_take_two_commits_in_flight() -> None:
    assert PostgresStore.concurrent_commits == 2
    assert getattr(SQLiteStore, "concurrent_commits", 1) == 1


def test_with_two_writers_two_commits_are_in_flight_at_once(held_pg: _HeldPostgresStore) -> None:
    committer = GroupCommitter(held_pg, writers=2)

    async def scenario() -> None:
        await committer.start()
        try:
            # The first request starts a commit, which waits at the barrier; the second
            # arrives while it is in flight and starts the second commit, which meets it there.
            first = asyncio.ensure_future(committer.submit(_entry(1)))
            await _until(lambda: held_pg.calls == 1)
            second = asyncio.ensure_future(committer.submit(_entry(2)))
            third = asyncio.ensure_future(committer.submit(_entry(3)))
            await asyncio.wait_for(asyncio.gather(first, second, third), WITHIN)
        finally:
            await committer.stop()

    asyncio.run(scenario())
    assert held_pg.together == 2
    assert held_pg.inbox_count() == (3, 3)
    assert committer.stats.entries == 3 and committer.stats.failures == 0


def test_with_one_writer_a_commit_waits_for_the_one_in_flight(
    pg_schema: PgSchema,
) -> None:
    store = _HeldPostgresStore(pg_schema.dsn, schema=pg_schema.schema, parties=2)
    store.barrier = threading.Barrier(2, timeout=1.0)  # never met with one writer
    store.open()
    try:
        committer = GroupCommitter(store, writers=1)

        async def scenario() -> None:
            await committer.start()
            try:
                first = asyncio.ensure_future(committer.submit(_entry(1)))
                await _until(lambda: store.calls == 1)
                second = asyncio.ensure_future(committer.submit(_entry(2)))
                await asyncio.wait_for(
                    asyncio.gather(first, second, return_exceptions=True), WITHIN
                )
            finally:
                await committer.stop()

        asyncio.run(scenario())
        # The first commit waited alone and broke the barrier (its requests got the error:
        # nothing committed, 503 to the client); the second commit only started after it.
        assert store.together == 0
        assert committer.stats.failures >= 1
    finally:
        store.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_client_that_waits_for_each_answer_finds_its_requests_in_order(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    store: Store
    if kind == "sqlite":
        store = SQLiteStore(tmp_path / "q.db")
    else:
        schema: PgSchema = request.getfixturevalue("pg_schema")
        store = PostgresStore(schema.dsn, schema=schema.schema, max_size=4)
    store.open()
    try:
        committer = GroupCommitter(store, writers=getattr(store, "concurrent_commits", 1))
        noise = [_entry(1000 + n) for n in range(40)]

        async def scenario() -> None:
            await committer.start()
            try:
                async def sequential() -> None:
                    for n in range(20):
                        await committer.submit(_entry(n))

                others = [committer.submit(e) for e in noise]
                await asyncio.wait_for(asyncio.gather(sequential(), *others), WITHIN)
            finally:
                await committer.stop()

        asyncio.run(scenario())
        bodies = [e.body for e in store.inbox_oldest(1000)]
        mine = [b for b in bodies if int(b[5:-1]) < 1000]
        assert mine == [_entry(n).body for n in range(20)]
        assert len(bodies) == 60
    finally:
        store.close()


def test_the_service_gives_its_committer_the_store_s_commits_in_flight(
    pg_schema: PgSchema, tmp_path: Path
) -> None:
    from freshsales_destination.service import build_app
    from tests.ingest.conftest import make_settings

    settings = make_settings(tmp_path / "unused.db")
    stores: list[Store] = [
        PostgresStore(pg_schema.dsn, schema=pg_schema.schema, max_size=4),
        SQLiteStore(tmp_path / "q.db"),
    ]
    for store, writers in zip(stores, (2, 1), strict=True):
        store.open()
        try:
            app = build_app(settings, store, deliver=False)
            assert app.state.committer._writers == writers
        finally:
            store.close()
