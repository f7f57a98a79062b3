"""What recording the journey adds to the write that ends a unit of delivery.

Not a test. Run from the repository root:

    .venv/bin/python bench/journey_write.py [--units 2000] [--rounds 5]
        [--backend sqlite|memory|postgres]

Delivery ends each unit with one ``finish`` (or ``reschedule``), now carrying the unit's journey
steps (``delivery/journal.py``): typically two Freshsales calls and the outcome. This builds
them as the worker does and times that write on a fresh store (a SQLite file with
``synchronous=FULL``, an in-memory SQLite database: the CPU alone, or a new PostgreSQL schema,
dropped afterwards), with and without the steps, alternating blocks of `--units` units so both
sides see the same machine; medians of `--rounds` blocks, per unit, of the wall clock and of
this process's CPU time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from freshsales_destination.delivery import journal
from freshsales_destination.store.base import NewMessage, Store


def block(store: Store, units: int, with_steps: bool, tag: str) -> tuple[float, float]:
    body = b'{"type":"track","userId":"u","event":"Report Created","properties":{"n":1}}'
    store.append([
        NewMessage("web", "crm", f"{tag}-{i}", "track", "pending", None, f"u:{tag}-{i}",
                   1.0, 1.0, body, body)
        for i in range(units)
    ])
    seqs = [m.seq for m in store.list_messages(status="pending", limit=units)]
    started, cpu = time.perf_counter(), time.process_time()
    for seq in seqs:
        steps = []
        if with_steps:
            with journal.collect() as calls:
                for route in ("/crm/sales/api/contacts/upsert", "/crm/sales/track/events"):
                    journal.record(at=2.0, operation="upsert_contact", method="POST",
                                   path=route, status=200, duration_ms=312.4)
            steps = journal.call_steps([seq], calls)
            steps.append(journal.step(seq, 3.0, "delivered", reason=None))
        store.finish([seq], status="delivered", now=3.0, steps=steps)
    return ((time.perf_counter() - started) / len(seqs) * 1e6,
            (time.process_time() - cpu) / len(seqs) * 1e6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--units", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--backend", choices=["sqlite", "memory", "postgres"], default="sqlite")
    parser.add_argument("--dsn", default=os.environ.get(
        "TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fsd-journey-") as tmp:
        store: Store
        schema = None
        if args.backend in ("sqlite", "memory"):
            from freshsales_destination.store.sqlite import SQLiteStore

            store = SQLiteStore(Path(tmp) / "q.db" if args.backend == "sqlite" else None)
        else:
            from freshsales_destination.store.postgres import PostgresStore

            schema = f"fsd_bench_{uuid.uuid4().hex[:12]}"
            store = PostgresStore(args.dsn, schema=schema)
        store.open()
        figures: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
        try:
            block(store, min(200, args.units), True, "warm")
            for index in range(args.rounds):
                order = (False, True) if index % 2 == 0 else (True, False)
                for with_steps in order:
                    us, cpu = block(store, args.units, with_steps, f"r{index}-{with_steps}")
                    figures[with_steps].append((us, cpu))
                    print(f"round {index + 1} {'with steps' if with_steps else 'no steps  '}"
                          f" {us:8.1f} us per unit, CPU {cpu:7.1f} us", flush=True)
        finally:
            store.close()
            if schema is not None:
                import psycopg
                from psycopg import sql

                with psycopg.connect(args.dsn, autocommit=True) as conn:
                    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                        sql.Identifier(schema)))
    for what, index in (("wall", 0), ("CPU", 1)):
        without = statistics.median(f[index] for f in figures[False])
        with_ = statistics.median(f[index] for f in figures[True])
        print(f"{args.backend}: finish per unit ({what}), median of {args.rounds} blocks of "
              f"{args.units}: without steps {without:.1f} us, with 3 steps {with_:.1f} us, "
              f"ratio {with_ / without:.3f} ({with_ - without:+.1f} us)")


if __name__ == "__main__":
    main()
