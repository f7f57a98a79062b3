"""Create claims (delivery/memory.py) on every backend: one claimer wins, across threads and
processes sharing the store. Every claimer uses the same fixed `now` and a hold far longer than
the test, so nothing expires: the check depends on no timing, and contention only strengthens it.
"""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path

import pytest

from freshsales_destination.delivery.memory import DeliveryMemory
from freshsales_destination.store.base import Store
from freshsales_destination.store.sqlite import SQLiteStore
from tests.contract.conftest import PgSchema

EMAILS = [f"person{n}@example.com" for n in range(10)]
NOW = 1_000.0
HOLD = 3_600.0


def _claim_all(memory: DeliveryMemory, owner: str) -> list[str]:
    return [
        email for email in EMAILS
        if memory.claim_create(email.upper(), owner, now=NOW, hold=HOLD).granted
    ]


def test_one_thread_of_many_gets_each_claim(store: Store) -> None:
    memory = DeliveryMemory(store, "crm")
    won: dict[str, list[str]] = {}
    barrier = threading.Barrier(6)

    def claimer(owner: str) -> None:
        barrier.wait()
        won[owner] = _claim_all(memory, owner)

    threads = [threading.Thread(target=claimer, args=(f"lane-{n}",)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    granted = sorted(email for emails in won.values() for email in emails)
    assert granted == sorted(EMAILS)


def _process_claimer(kind: str, where: str, schema: str, owner: str, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    store: Store
    if kind == "sqlite":
        store = SQLiteStore(Path(where))
    else:
        from freshsales_destination.store.postgres import PostgresStore

        store = PostgresStore(where, schema=schema, max_size=2)
    store.open()
    try:
        queue.put(_claim_all(DeliveryMemory(store, "crm"), owner))
    finally:
        store.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_one_process_of_many_gets_each_claim(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if kind == "sqlite":
        where, schema = str(tmp_path / "claims.db"), ""
        first: Store = SQLiteStore(Path(where))
    else:
        from freshsales_destination.store.postgres import PostgresStore

        pg: PgSchema = request.getfixturevalue("pg_schema")  # skips without PostgreSQL
        where, schema = pg.dsn, pg.schema
        first = PostgresStore(pg.dsn, schema=pg.schema, max_size=2)
    first.open()  # creates the schema before the processes start
    try:
        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        processes = [
            ctx.Process(target=_process_claimer, args=(kind, where, schema, f"proc-{n}", queue))
            for n in range(3)
        ]
        for process in processes:
            process.start()
        results = [queue.get(timeout=120) for _ in processes]
        for process in processes:
            process.join(timeout=60)
            assert process.exitcode == 0
        granted = sorted(email for emails in results for email in emails)
        assert granted == sorted(EMAILS)
        assert not DeliveryMemory(first, "crm").claim_holder(EMAILS[0], now=NOW).granted
    finally:
        first.close()
