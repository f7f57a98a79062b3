"""The operations read model on a large queue: how long search, stats and failures take.

Not a test. Run from the repository root:

    .venv/bin/python bench/operations.py [--messages 200000] [--backend sqlite|postgres]

Fills a fresh store (a SQLite file, or a new PostgreSQL schema dropped afterwards) with
`--messages` track and identify messages spread over 7 days for `--messages / 10` people:
96 % delivered (each with a ``call`` and a ``delivered`` journey step), 1 % dead, 1 %
discarded, 1 % retrying, 1 % pending. Then times each admin query (``admin/views.py``: the
first page of a search, the stats of each window, the failure groups), median of `--repeat`.
No index serves the person filters (the messages table gets none for them, so ingest pays
nothing): a search reads at most ``SEARCH_MAX_SCAN`` messages per call, newest first.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from freshsales_destination.admin import views
from freshsales_destination.admin.views import MessageFilter
from freshsales_destination.config import settings_from_dict
from freshsales_destination.store.base import JourneyRow, NewMessage, Store

NOW = 1_800_000_000.0
SPAN = 7 * 86400.0


def fill(store: Store, count: int) -> None:
    people = max(1, count // 10)
    batch = 5_000
    for start in range(0, count, batch):
        rows: list[NewMessage] = []
        for i in range(start, min(count, start + batch)):
            user = f"user-{i % people}"
            at = NOW - SPAN + SPAN * i / count
            identify = i % 10 == 0
            event: dict[str, Any] = {"type": "identify" if identify else "track",
                                     "userId": user, "messageId": f"m{i}",
                                     "anonymousId": f"anon-{i % people}"}
            if identify:
                event["traits"] = {"email": f"{user}@example.com", "title": "Engineer"}
            else:
                event["event"] = "Report Created"
                event["properties"] = {"report": i, "size": "large", "pages": 12}
            body = orjson.dumps(event)
            discard = i % 100 == 7
            rows.append(NewMessage(
                source="web", destination="crm", message_id=f"m{i}", type=str(event["type"]),
                status="discarded" if discard else "pending",
                reason="a page view needs properties.url" if discard else None,
                lane=f"u:{user}", received_at=at, event_at=at, raw=body, message=body,
            ))
        store.append(rows)
        stored = store.search(views.store_query(MessageFilter(status="pending")),
                              limit=len(rows))
        done, dead = [], []
        steps: list[JourneyRow] = []
        for message in stored.messages:
            number = int(message.message_id[1:])
            if number % 100 in (3, 5):
                continue  # stays pending (5: retrying, below)
            if number % 100 == 9:
                dead.append(message.seq)
                continue
            done.append(message.seq)
            steps.append(JourneyRow(message.seq, message.received_at + 1, "call", orjson.dumps(
                {"operation": "track_event", "method": "POST", "route": "/track/events",
                 "status": 200, "duration_ms": 80})))
            steps.append(JourneyRow(message.seq, message.received_at + 1, "delivered"))
            if number % 100 == 5:
                store.reschedule(message.seq, destination="crm", lane=message.lane or "",
                                 attempts=1, available_at=NOW + 60, first_failure_at=NOW,
                                 last_error="HTTP 503: busy",
                                 steps=[JourneyRow(message.seq, message.received_at, "retry")])
        finish_at = (stored.messages[0].received_at + 2) if stored.messages else NOW
        store.finish(done, status="delivered", now=finish_at, steps=steps)
        store.finish(dead, status="dead", now=finish_at, reason="HTTP 400: invalid email")


def journey_bytes(store: Store) -> int | None:
    """The journey table's size with its indexes (None when the engine will not say)."""
    from freshsales_destination.store.sqlite import SQLiteStore

    if isinstance(store, SQLiteStore):
        with store._read() as conn:  # noqa: SLF001 - a benchmark's peek
            try:
                row = conn.execute("SELECT SUM(pgsize) FROM dbstat WHERE name IN "
                                   "('journey', 'journey_retries')").fetchone()
            except Exception:  # noqa: BLE001 - dbstat not compiled in
                return None
        return int(row[0] or 0)
    with store._read() as conn:  # type: ignore[attr-defined]  # noqa: SLF001
        row = conn.execute("SELECT pg_total_relation_size('journey')").fetchone()
    return int(row[0])


def timed(repeat: int, action: Callable[[], Any]) -> tuple[float, Any]:
    times: list[float] = []
    result: Any = None
    for _ in range(repeat):
        started = time.perf_counter()
        result = action()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dsn", default=os.environ.get(
        "TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"))
    args = parser.parse_args()
    settings = settings_from_dict({
        "destinations": {"crm": {"product": "suite", "domain": "bench", "api_key": "k" * 20}},
    })
    with tempfile.TemporaryDirectory(prefix="fsd-ops-") as tmp:
        store: Store
        schema = None
        if args.backend == "sqlite":
            from freshsales_destination.store.sqlite import SQLiteStore

            store = SQLiteStore(Path(tmp) / "q.db")
        else:
            from freshsales_destination.store.postgres import PostgresStore

            schema = f"fsd_bench_{uuid.uuid4().hex[:12]}"
            store = PostgresStore(args.dsn, schema=schema)
        store.open()
        try:
            started = time.perf_counter()
            fill(store, args.messages)
            print(f"{args.backend}: {args.messages} messages filled in "
                  f"{time.perf_counter() - started:.0f} s", flush=True)
            size = journey_bytes(store)
            if size is not None:
                delivered = store.count_by_status().get("delivered", 0)
                print(f"  journey: {size / max(delivered, 1):.0f} bytes per delivered message "
                      "(two steps: a call and the outcome; table and indexes)", flush=True)
            user = f"user-{max(1, args.messages // 10) // 2}"
            cases: list[tuple[str, Callable[[], Any]]] = [
                ("search, newest 50", lambda: views.search(store, MessageFilter())),
                ("search user_id", lambda: views.search(store, MessageFilter(user_id=user))),
                ("search anonymous_id", lambda: views.search(
                    store, MessageFilter(anonymous_id="anon-5"))),
                ("search email", lambda: views.search(
                    store, MessageFilter(email=f"{user}@example.com"))),
                ("search message_id", lambda: views.search(
                    store, MessageFilter(message_id=f"m{args.messages // 3}"))),
                ("search status=dead", lambda: views.search(store, MessageFilter(status="dead"))),
                ("stats 1h", lambda: views.stats(store, settings, "1h", NOW)),
                ("stats 24h", lambda: views.stats(store, settings, "24h", NOW)),
                ("stats 7d", lambda: views.stats(store, settings, "7d", NOW)),
                ("failures since 24h", lambda: views.failures(store, since=NOW - 86400)),
                ("failures, all", lambda: views.failures(store)),
                ("journey steps of one", lambda: store.steps_of(args.messages // 2)),
            ]
            for name, action in cases:
                ms, result = timed(args.repeat, action)
                found = ""
                if isinstance(result, views.Page):
                    found = f"{len(result.items)} found, more: {result.next_cursor is not None}"
                elif isinstance(result, list):
                    found = f"{len(result)} rows"
                print(f"  {name:24s} {ms:9.1f} ms   {found}", flush=True)
        finally:
            store.close()
            if schema is not None:
                import psycopg
                from psycopg import sql

                with psycopg.connect(args.dsn, autocommit=True) as conn:
                    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                        sql.Identifier(schema)))


if __name__ == "__main__":
    main()
