"""Many claimers on one PostgreSQL queue, in threads and in processes.

The store's own clock is a fixed ``now`` with leases far longer than the test, so no lease
ever expires: at every instant at most one worker may hold a lane. Two audit tables in the
test schema check that from outside the store, across processes:

* ``claim_audit(lane PRIMARY KEY)``: a worker inserts its lane after ``claim_lane`` returns
  and deletes it before ``release_lane``; a second holder fails on the primary key.
* ``deliveries(seq PRIMARY KEY, n identity)``: every delivered message once; a second delivery
  fails on the primary key, and ``n`` gives the delivery order to compare with ``seq``.

Nothing here depends on timing: contention only makes the checks stronger.
"""

from __future__ import annotations

import multiprocessing
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
import psycopg
import pytest

from freshsales_destination.store.base import NewMessage
from freshsales_destination.store.postgres import SCHEMA_VERSION, PostgresStore
from tests.contract.conftest import PgSchema

DEST = "acme"
NOW = 1_000.0
LEASE = 3_600.0  # never expires during a test: a lane has one holder at a time, full stop
LANES = 12
PER_LANE = 15

_AUDIT = """
CREATE TABLE claim_audit (lane text PRIMARY KEY, owner text NOT NULL);
CREATE TABLE deliveries (
    seq   bigint PRIMARY KEY,
    lane  text   NOT NULL,
    owner text   NOT NULL,
    n     bigint GENERATED ALWAYS AS IDENTITY
);
"""


def _connect(dsn: str, schema: str) -> psycopg.Connection[Any]:
    conn = psycopg.connect(dsn, autocommit=True)
    conn.execute("SELECT set_config('search_path', %s, false)", (schema,))
    return conn


def _message(mid: str, lane: str) -> NewMessage:
    body = orjson.dumps({"messageId": mid, "type": "track"})
    return NewMessage(
        source="web",
        destination=DEST,
        message_id=mid,
        type="track",
        status="pending",
        reason=None,
        lane=lane,
        received_at=1.0,
        event_at=1.0,
        raw=body,
        message=body,
    )


def _fill(pg: PgSchema) -> int:
    """Open the schema, add the audit tables and LANES x PER_LANE messages, interleaved."""
    store = PostgresStore(pg.dsn, schema=pg.schema, max_size=2)
    store.open()
    try:
        batch = [
            _message(f"m{i}-{lane}", f"u:{lane}") for i in range(PER_LANE) for lane in range(LANES)
        ]
        assert all(store.append(batch))
    finally:
        store.close()
    with _connect(pg.dsn, pg.schema) as conn:
        conn.execute(_AUDIT)
    return len(batch)


def _claim_loop(store: PostgresStore, pg: PgSchema, owner: str, seed: int, stop: Any) -> None:
    """Claim, deliver (or sometimes fail the head and retry at once), release; until empty.

    A failing worker sets `stop`, so the others (which could wait forever for the lane it
    left leased) end at once and the test fails fast instead of hanging.
    """
    try:
        _claim_until_empty(store, pg, owner, seed, stop)
    except BaseException:
        stop.set()
        raise


def _claim_until_empty(
    store: PostgresStore, pg: PgSchema, owner: str, seed: int, stop: Any
) -> None:
    rng = random.Random(seed)
    with _connect(pg.dsn, pg.schema) as audit:
        for _ in range(100_000):
            if stop.is_set():
                return
            claim = store.claim_lane(
                DEST, owner=owner, now=NOW, lease_seconds=LEASE, max_messages=rng.randint(1, 4)
            )
            if claim is None:
                if store.pending_count(DEST) == 0:
                    return
                time.sleep(0.001)  # every ready lane is held by someone else right now
                continue
            audit.execute(
                "INSERT INTO claim_audit (lane, owner) VALUES (%s, %s)", (claim.lane, owner)
            )
            try:
                assert claim.messages, "a claimed lane comes with its head messages"
                assert {m.lane for m in claim.messages} == {claim.lane}
                seqs = [m.seq for m in claim.messages]
                assert seqs == sorted(seqs)
                if rng.random() < 0.2:
                    head = claim.messages[0]
                    # A failure whose retry is due at once: the lane is held until NOW only.
                    store.reschedule(
                        head.seq,
                        destination=DEST,
                        lane=claim.lane,
                        attempts=head.attempts + 1,
                        available_at=NOW,
                        first_failure_at=NOW,
                        last_error="flaky",
                    )
                else:
                    with audit.cursor() as cur:
                        cur.executemany(
                            "INSERT INTO deliveries (seq, lane, owner) VALUES (%s, %s, %s)",
                            [(seq, claim.lane, owner) for seq in seqs],
                        )
                    store.finish(seqs, status="delivered", now=NOW)
            finally:
                audit.execute(
                    "DELETE FROM claim_audit WHERE lane = %s AND owner = %s", (claim.lane, owner)
                )
            store.release_lane(DEST, claim.lane, owner)
    raise AssertionError(f"{owner} did not drain the queue")


def run_workers(pg: PgSchema, name: str, threads: int, stop: Any, barrier: Any = None) -> None:
    """One process's share: a store (one pool) and `threads` claiming threads."""
    store = PostgresStore(pg.dsn, schema=pg.schema, max_size=threads + 1)
    store.open()
    try:
        if barrier is not None:
            barrier.wait(timeout=60)
        with ThreadPoolExecutor(threads) as pool:
            futures = [
                pool.submit(_claim_loop, store, pg, f"{name}-t{i}", hash((name, i)), stop)
                for i in range(threads)
            ]
            for future in futures:
                future.result()
    finally:
        store.close()


def _check_exactly_once(pg: PgSchema, total: int) -> None:
    with _connect(pg.dsn, pg.schema) as conn:
        delivered = conn.execute("SELECT COUNT(*) FROM deliveries").fetchone()
        assert delivered is not None and delivered[0] == total
        statuses = conn.execute("SELECT status, COUNT(*) FROM messages GROUP BY status").fetchall()
        assert statuses == [("delivered", total)]
        # Per lane, delivery order (n) is seq order: no message overtook an earlier one.
        rows = conn.execute("SELECT lane, seq FROM deliveries ORDER BY n").fetchall()
        assert conn.execute("SELECT COUNT(*) FROM claim_audit").fetchone() == (0,)
        leased = conn.execute("SELECT COUNT(*) FROM lanes WHERE owner IS NOT NULL").fetchone()
        assert leased == (0,)
    by_lane: dict[str, list[int]] = {}
    for lane, seq in rows:
        by_lane.setdefault(lane, []).append(seq)
    assert len(by_lane) == LANES
    for seqs in by_lane.values():
        assert seqs == sorted(seqs)


def _start(ctx: Any, target: Any, args: Sequence[Any]) -> Any:
    process = ctx.Process(target=target, args=tuple(args))
    process.start()
    return process


def _join_all(processes: Sequence[Any]) -> None:
    for process in processes:
        process.join(timeout=90)
    for process in processes:
        if process.is_alive():  # pragma: no cover - only on a hang
            process.kill()
            process.join()
    assert [p.exitcode for p in processes] == [0] * len(processes)


def test_threads_never_share_a_lane_and_deliver_each_message_once(pg_schema: PgSchema) -> None:
    total = _fill(pg_schema)
    stop = threading.Event()
    run_workers(pg_schema, "solo", threads=8, stop=stop)
    assert not stop.is_set()
    _check_exactly_once(pg_schema, total)


@pytest.mark.slow
def test_processes_never_share_a_lane_and_deliver_each_message_once(pg_schema: PgSchema) -> None:
    total = _fill(pg_schema)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(3)
    stop = ctx.Event()
    processes = [_start(ctx, run_workers, (pg_schema, f"p{i}", 3, stop, barrier)) for i in range(3)]
    _join_all(processes)
    assert not stop.is_set()
    _check_exactly_once(pg_schema, total)


def bump_counters(pg: PgSchema, rounds: int, barrier: Any) -> None:
    store = PostgresStore(pg.dsn, schema=pg.schema, max_size=2)
    store.open()

    def bump(old: bytes | None) -> tuple[int, bytes]:
        value = int(old or b"0") + 1
        return value, str(value).encode()

    try:
        barrier.wait(timeout=60)
        for i in range(rounds):
            # Keys start missing, so the first updates also race to create the row.
            store.kv_update("budget", f"k{i % 5}", bump, now=float(i))
    finally:
        store.close()


@pytest.mark.slow
def test_kv_update_across_processes_loses_no_increment(pg_schema: PgSchema) -> None:
    store = PostgresStore(pg_schema.dsn, schema=pg_schema.schema, max_size=1)
    store.open()
    store.close()
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    processes = [_start(ctx, bump_counters, (pg_schema, 150, barrier)) for _ in range(2)]
    _join_all(processes)
    store.open()
    try:
        assert [store.kv_get("budget", f"k{i}") for i in range(5)] == [b"60"] * 5
    finally:
        store.close()


def open_store(pg: PgSchema, barrier: Any) -> None:
    store = PostgresStore(pg.dsn, schema=pg.schema, max_size=1)
    barrier.wait(timeout=60)
    store.open()
    store.close()


@pytest.mark.slow
def test_processes_opening_a_fresh_schema_at_once_migrate_it_once(pg_schema: PgSchema) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(3)
    processes = [_start(ctx, open_store, (pg_schema, barrier)) for _ in range(3)]
    _join_all(processes)
    with _connect(pg_schema.dsn, pg_schema.schema) as conn:
        versions = [v for (v,) in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]
    assert versions == list(range(1, SCHEMA_VERSION + 1))
