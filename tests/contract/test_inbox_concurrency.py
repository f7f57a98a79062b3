"""Several sorters on one inbox: each entry sorted exactly once, messages in inbox order.

Sorters loop as ingest's do: take the oldest entries, expand them (here: one message per
entry's body item, ids taken from the body), `inbox_sorted`, and on `SortRaced` start over.
Every successful sort is logged outside the store (a PostgreSQL audit table whose primary key
refuses a second sort of an entry; a locked list for threads), and every message it stores
must be new: a second sort of an entry would show as duplicates even though dedup hides it
from the messages table.

With no appends running, or one appender committing in turn, the oldest remaining entries
are always a prefix of what is left, so successful sorts follow inbox order: the messages'
seq order is the entries' inbox order (and, within an entry, the body's order).
"""

from __future__ import annotations

import multiprocessing
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from freshsales_destination.store.base import InboxEntry, NewMessage, SortRaced, Store
from freshsales_destination.store.postgres import PostgresStore
from freshsales_destination.store.sqlite import SQLiteStore
from tests.contract.conftest import PgSchema

PREFILLED = 300
LATE = 150  # appended while the sorters run, in the test that has an appender
DEADLINE = 60.0  # seconds a sorter may take to drain the inbox

_AUDIT = """
CREATE TABLE sort_log (
    entry_seq bigint PRIMARY KEY,
    n         integer NOT NULL,
    owner     text    NOT NULL,
    k         bigint  GENERATED ALWAYS AS IDENTITY
);
CREATE TABLE sort_races (owner text NOT NULL, races integer NOT NULL);
"""


def body_count(n: int) -> int:
    return 1 + n % 3


def new_entry(n: int) -> InboxEntry:
    """Entry `n`: a batch of 1-3 items whose messageIds say which entry and item they are."""
    items = [{"messageId": f"e{n}-{j}", "userId": f"u{n % 7}"} for j in range(body_count(n))]
    return InboxEntry(source="web", destination="acme", kind="batch", received_at=1.0 + n,
                      count=len(items), body=orjson.dumps({"n": n, "batch": items}))


def expand(entries: Sequence[InboxEntry]) -> list[NewMessage]:
    """What a sorter makes of the entries: one message per item, in order."""
    messages: list[NewMessage] = []
    for entry in entries:
        for item in orjson.loads(entry.body)["batch"]:
            raw = orjson.dumps(item)
            messages.append(NewMessage(
                source=entry.source, destination=entry.destination,
                message_id=item["messageId"], type="track", status="pending", reason=None,
                lane=f"u:{item['userId']}", received_at=entry.received_at,
                event_at=entry.received_at, raw=raw, message=raw,
            ))
    return messages


def entry_number(entry: InboxEntry) -> int:
    value = orjson.loads(entry.body)["n"]
    assert isinstance(value, int)
    return value


def sort_until_empty(
    store: Store,
    seed: int,
    record: Callable[[list[InboxEntry]], None],
    appended_all: Callable[[], bool],
) -> int:
    """Sort until the inbox is empty and no more entries will come; returns the races lost."""
    rng = random.Random(seed)
    races = 0
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        done = appended_all()  # read before the inbox: an empty inbox after it is final
        entries = store.inbox_oldest(rng.randint(1, 8))
        if not entries:
            if done:
                return races
            time.sleep(0.001)
            continue
        numbers = [entry_number(e) for e in entries]
        assert numbers == sorted(numbers), "oldest entries come in inbox order"
        messages = expand(entries)
        if rng.random() < 0.5:
            time.sleep(rng.random() * 0.002)  # expanding takes a while: others get to race
        try:
            fresh = store.inbox_sorted(entries, messages)
        except SortRaced:
            races += 1
            continue
        # Every message of a sorted entry is new: a second sort would find duplicates.
        assert fresh == [True] * len(messages), f"entries {numbers} were sorted before"
        record(entries)
    raise AssertionError("the inbox was not drained in time")


def expected_ids(total: int) -> list[str]:
    return [f"e{n}-{j}" for n in range(total) for j in range(body_count(n))]


# -- PostgreSQL, several processes -------------------------------------------------------------


def _connect(pg: PgSchema) -> psycopg.Connection[Any]:
    conn = psycopg.connect(pg.dsn, autocommit=True)
    conn.execute("SELECT set_config('search_path', %s, false)", (pg.schema,))
    return conn


def _prefill(pg: PgSchema) -> None:
    store = PostgresStore(pg.dsn, schema=pg.schema, max_size=1)
    store.open()
    try:
        store.inbox_append([new_entry(n) for n in range(PREFILLED)])
        assert store.inbox_count() == (PREFILLED, sum(map(body_count, range(PREFILLED))))
    finally:
        store.close()
    with _connect(pg) as conn:
        conn.execute(_AUDIT)


def run_sorter(pg: PgSchema, owner: str, barrier: Any, appended: Any) -> None:
    """One process's sorter: its own store (pool), logging each sort it wins."""
    store = PostgresStore(pg.dsn, schema=pg.schema, max_size=2)
    store.open()
    try:
        with _connect(pg) as audit:

            def record(entries: list[InboxEntry]) -> None:
                with audit.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO sort_log (entry_seq, n, owner) VALUES (%s, %s, %s)",
                        [(e.seq, entry_number(e), owner) for e in entries],
                    )

            barrier.wait(timeout=60)
            races = sort_until_empty(store, int(owner[1:]), record, appended.is_set)
            audit.execute("INSERT INTO sort_races VALUES (%s, %s)", (owner, races))
    finally:
        store.close()


def run_appender(pg: PgSchema, barrier: Any, appended: Any) -> None:
    """Requests arriving while the sorters run: small appends, one after another."""
    store = PostgresStore(pg.dsn, schema=pg.schema, max_size=1)
    store.open()
    try:
        barrier.wait(timeout=60)
        n = PREFILLED
        rng = random.Random(7)
        while n < PREFILLED + LATE:
            size = min(rng.randint(1, 5), PREFILLED + LATE - n)
            store.inbox_append([new_entry(i) for i in range(n, n + size)])
            n += size
            time.sleep(rng.random() * 0.003)
    finally:
        appended.set()  # also on failure, so the sorters end (the exit code tells)
        store.close()


def _check_pg(pg: PgSchema, total: int, owners: Sequence[str]) -> None:
    store = PostgresStore(pg.dsn, schema=pg.schema, max_size=1)
    store.open()
    try:
        assert store.inbox_count() == (0, 0)
        assert store.inbox_oldest(100) == []
    finally:
        store.close()
    with _connect(pg) as conn:
        log = conn.execute("SELECT n, owner, entry_seq FROM sort_log ORDER BY k").fetchall()
        rows = conn.execute("SELECT message_id, status FROM messages ORDER BY seq").fetchall()
        raced = dict(conn.execute("SELECT owner, races FROM sort_races").fetchall())
    # Each entry sorted once (the primary key refused a second), none left out.
    assert sorted(n for n, _, _ in log) == list(range(total))
    assert sorted(raced) == sorted(owners)  # every sorter finished its loop
    # Every message stored once, all pending; in seq order they follow the inbox order.
    assert [status for _, status in rows] == ["pending"] * len(rows)
    assert [mid for mid, _ in rows] == expected_ids(total)
    # Per sorter, the entries it won come in inbox order too (its log is in its own order;
    # sorters log after their commit, so the log across sorters may interleave).
    for owner in owners:
        mine = [(n, seq) for n, who, seq in log if who == owner]
        assert mine == sorted(mine)


def _run_processes(pg: PgSchema, sorters: int, with_appender: bool) -> list[str]:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(sorters + int(with_appender))
    appended = ctx.Event()
    if not with_appender:
        appended.set()
    owners = [f"p{i}" for i in range(sorters)]
    processes = [ctx.Process(target=run_sorter, args=(pg, owner, barrier, appended))
                 for owner in owners]
    if with_appender:
        processes.append(ctx.Process(target=run_appender, args=(pg, barrier, appended)))
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=DEADLINE + 30)
    for process in processes:
        if process.is_alive():  # pragma: no cover - only on a hang
            process.kill()
            process.join()
    assert [p.exitcode for p in processes] == [0] * len(processes)
    return owners


@pytest.mark.slow
def test_processes_sort_each_inbox_entry_exactly_once_in_order(pg_schema: PgSchema) -> None:
    _prefill(pg_schema)
    owners = _run_processes(pg_schema, sorters=3, with_appender=False)
    _check_pg(pg_schema, PREFILLED, owners)


@pytest.mark.slow
def test_processes_sort_exactly_once_while_requests_keep_arriving(pg_schema: PgSchema) -> None:
    _prefill(pg_schema)
    owners = _run_processes(pg_schema, sorters=2, with_appender=True)
    _check_pg(pg_schema, PREFILLED + LATE, owners)


# -- SQLite, two stores on one file, one thread each -------------------------------------------


def test_two_sqlite_stores_on_one_file_sort_each_entry_exactly_once(tmp_path: Path) -> None:
    path = tmp_path / "inbox.db"
    filler = SQLiteStore(path)
    filler.open()
    filler.inbox_append([new_entry(n) for n in range(PREFILLED)])
    filler.close()

    stores = [SQLiteStore(path), SQLiteStore(path)]
    for store in stores:
        store.open()
    log: list[tuple[int, str, int]] = []  # (entry, owner, seq) in the order sorts returned
    guard = threading.Lock()
    barrier = threading.Barrier(len(stores), timeout=30)

    def sorter(index: int) -> int:
        owner = f"t{index}"

        def record(entries: list[InboxEntry]) -> None:
            with guard:
                seen = {n for n, _, _ in log}
                for e in entries:
                    n = entry_number(e)
                    assert n not in seen, f"entry {n} sorted twice"
                    log.append((n, owner, e.seq))

        barrier.wait()
        return sort_until_empty(stores[index], index, record, lambda: True)

    try:
        with ThreadPoolExecutor(len(stores)) as pool:
            futures = [pool.submit(sorter, i) for i in range(len(stores))]
            [future.result() for future in futures]
        assert sorted(n for n, _, _ in log) == list(range(PREFILLED))
        for owner in ("t0", "t1"):
            mine = [(n, seq) for n, who, seq in log if who == owner]
            assert mine == sorted(mine)
        for store in stores:
            assert store.inbox_count() == (0, 0)
        messages = stores[0].list_messages(limit=10_000)
        by_seq = sorted(messages, key=lambda m: m.seq)
        assert [m.message_id for m in by_seq] == expected_ids(PREFILLED)
        assert stores[1].count_by_status() == {"pending": len(by_seq)}
    finally:
        for store in stores:
            store.close()
