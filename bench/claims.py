"""Gathering lanes for a bulk job: 100 calls of `claim_lane` against one of `claim_lanes`.

Not a test (pytest does not collect ``bench/``). Run from the repository root:

    .venv/bin/python bench/claims.py [--users 20000] [--runs 5] [--backend sqlite,postgres]

The store is filled as issue 12's backfill leaves it (bench/economy.py `workload()`: 20,000
people, about 340,000 pending messages, 100,000 of them identifies, the people's messages
interleaved in time order), appended through the store's own path in transactions of 1,000.
Then the backlog is aged the way the bulk sender ages it: the `--done` lanes with the oldest
heads have their leading identifies delivered (their next message is a track or a page, which
the identify scan must pass over), and the next `--held` lanes are held for a retry far in the
future (their jobs pending). Each run gathers 100 lanes whose next message is an identify:

* ``100 x claim_lane``: what the bulk sender did, one claim (one scan, one transaction) each;
* ``1 x claim_lanes``: one call for all 100 (one scan, one transaction).

Both take the same 100 lanes; they are released (untimed) after every measurement, and the
two alternate within each run. Figures are medians of ``--runs``. ``--single`` adds the
worker's ordinary one-lane claims on the same store (any type, and the record types first),
timed one call at a time.

PostgreSQL: the server of the tests (``TEST_POSTGRES_DSN``, default
``postgresql://postgres@127.0.0.1:5432/test``), in a schema of its own dropped afterwards.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from freshsales_destination.store.base import LaneClaim, NewMessage, Store
from freshsales_destination.store.sqlite import SQLiteStore

sys.path.insert(0, str(Path(__file__).resolve().parent))
import economy  # noqa: E402 - bench/economy.py, beside this file

DEST = "crm"
NOW = 1_000.0
WANT = 100
IDENTIFY = ("identify",)
RECORD_TYPES = ("identify", "group", "delete")
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def rows(users: int, seed: int) -> list[NewMessage]:
    out = []
    for event in economy.workload(users, seed):
        body = orjson.dumps(event)
        out.append(NewMessage(
            source="bench", destination=DEST, message_id=event["messageId"], type=event["type"],
            status="pending", reason=None, lane=f"u:{event['userId']}", received_at=1.0,
            event_at=1.0, raw=body, message=body,
        ))
    return out


def fill(store: Store, messages: list[NewMessage], *, done: int, held: int) -> None:
    for start in range(0, len(messages), 1000):
        assert all(store.append(messages[start : start + 1000]))
    first = store.list_messages(limit=1)[0].seq  # seqs follow the append order
    by_lane: dict[str, list[tuple[int, str]]] = {}
    for offset, message in enumerate(messages):
        assert message.lane is not None
        by_lane.setdefault(message.lane, []).append((first + offset, message.type))
    oldest = sorted(by_lane, key=lambda lane: by_lane[lane][0][0])
    finished: list[int] = []
    for lane in oldest[:done]:  # deliver each lane's leading identifies
        for seq, kind in by_lane[lane]:
            if kind != "identify":
                break
            finished.append(seq)
    store.finish(finished, status="delivered", now=NOW)
    for lane in oldest[done : done + held]:  # a retry far in the future holds the lane
        seq = by_lane[lane][0][0]
        store.reschedule(seq, destination=DEST, lane=lane, attempts=1, available_at=1e12,
                         first_failure_at=NOW, last_error="held by a pending job")


def release(store: Store, claims: list[LaneClaim]) -> None:
    for claim in claims:
        store.release_lane(DEST, claim.lane, claim.owner)


def one_by_one(store: Store) -> list[LaneClaim]:
    claims: list[LaneClaim] = []
    while len(claims) < WANT:
        claim = store.claim_lane(DEST, owner="bench", now=NOW, lease_seconds=60,
                                 max_messages=20, head_types=IDENTIFY)
        if claim is None:
            break
        claims.append(claim)
    return claims


def at_once(store: Store) -> list[LaneClaim]:
    return store.claim_lanes(DEST, owner="bench", now=NOW, lease_seconds=60, max_messages=20,
                             head_types=IDENTIFY, limit=WANT)


def timed(store: Store, gather: Callable[[Store], list[LaneClaim]]) -> tuple[float, list[str]]:
    started = time.perf_counter()
    claims = gather(store)
    seconds = time.perf_counter() - started
    release(store, claims)
    return seconds, [claim.lane for claim in claims]


def single(store: Store, runs: int) -> dict[str, float]:
    """Median seconds of one ordinary claim (released after each, untimed)."""
    variants: dict[str, Callable[[], list[LaneClaim]]] = {
        "claim_lane any": lambda: [c for c in [store.claim_lane(
            DEST, owner="b", now=NOW, lease_seconds=60, max_messages=20)] if c],
        "claim_lane records": lambda: [c for c in [store.claim_lane(
            DEST, owner="b", now=NOW, lease_seconds=60, max_messages=20,
            head_types=RECORD_TYPES)] if c],
    }
    if hasattr(store, "claim_lanes"):
        variants["claim_lanes(1) any"] = lambda: store.claim_lanes(
            DEST, owner="b", now=NOW, lease_seconds=60, max_messages=20, limit=1)
        variants["claim_lanes(1) records"] = lambda: store.claim_lanes(
            DEST, owner="b", now=NOW, lease_seconds=60, max_messages=20,
            head_types=RECORD_TYPES, limit=1)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(runs * 20):
        for name, call in variants.items():
            started = time.perf_counter()
            claims = call()
            times[name].append(time.perf_counter() - started)
            assert len(claims) == 1
            release(store, claims)
    return {name: statistics.median(values) for name, values in times.items()}


@contextmanager
def open_backend(name: str) -> Iterator[Store]:
    if name == "sqlite":
        with tempfile.TemporaryDirectory(prefix="fsd-bench-claims-") as tmp:
            store = SQLiteStore(Path(tmp) / "queue.db")
            store.open()
            try:
                yield store
            finally:
                store.close()
        return
    import psycopg
    from psycopg import sql

    from freshsales_destination.store.postgres import PostgresStore

    dsn = os.environ.get("TEST_POSTGRES_DSN", DEFAULT_DSN)
    schema = f"fsd_bench_claims_{uuid.uuid4().hex[:12]}"
    pg = PostgresStore(dsn, schema=schema, max_size=2)
    pg.open()
    try:
        yield pg
    finally:
        pg.close()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def bench(backend: str, messages: list[NewMessage], args: argparse.Namespace) -> dict[str, Any]:
    with open_backend(backend) as store:
        started = time.perf_counter()
        fill(store, messages, done=args.done, held=args.held)
        filled = time.perf_counter() - started
        if backend == "postgres":  # fresh statistics, as autovacuum would have by now
            import psycopg

            from freshsales_destination.store.postgres import PostgresStore

            assert isinstance(store, PostgresStore)
            with psycopg.connect(store.dsn, autocommit=True) as conn:
                conn.execute(f"ANALYZE {store.schema}.messages")
                conn.execute(f"ANALYZE {store.schema}.lanes")
        figures: dict[str, list[float]] = {"100 x claim_lane": [], "1 x claim_lanes": []}
        has_plural = hasattr(store, "claim_lanes")
        for _ in range(args.runs):
            seconds, old = timed(store, one_by_one)
            figures["100 x claim_lane"].append(seconds)
            if has_plural:
                seconds, new = timed(store, at_once)
                figures["1 x claim_lanes"].append(seconds)
                assert new == old, "both ways take the same lanes, in the same order"
            assert len(old) == WANT
        result: dict[str, Any] = {
            "backend": backend, "fill_seconds": round(filled, 1),
            **{name: statistics.median(values) for name, values in figures.items() if values},
        }
        if has_plural:
            result["ratio"] = result["100 x claim_lane"] / result["1 x claim_lanes"]
        if args.single:
            result["single"] = single(store, args.runs)
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--done", type=int, default=2_000,
                        help="lanes whose leading identifies are delivered")
    parser.add_argument("--held", type=int, default=2_000, help="lanes held for a retry")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--backend", default="sqlite,postgres")
    parser.add_argument("--single", action="store_true",
                        help="also time the worker's one-lane claims")
    args = parser.parse_args()
    messages = rows(args.users, args.seed)
    identifies = sum(1 for m in messages if m.type == "identify")
    print(f"{len(messages)} pending messages ({identifies} identifies), {args.users} lanes; "
          f"{args.done} lanes past their identifies, {args.held} held; {args.runs} runs")
    for backend in args.backend.split(","):
        result = bench(backend, messages, args)
        print(f"{backend}: filled in {result['fill_seconds']} s")
        for name in ("100 x claim_lane", "1 x claim_lanes"):
            if name in result:
                print(f"  {name:18} {result[name] * 1000:9.1f} ms")
        if "ratio" in result:
            print(f"  ratio {result['ratio']:.1f}x")
        for name, seconds in result.get("single", {}).items():
            print(f"  one {name:24} {seconds * 1000:8.2f} ms")


if __name__ == "__main__":
    main()
