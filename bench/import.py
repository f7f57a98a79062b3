"""Import benchmark: messages/s stored from a file, beside the store's own append, same run.

Not a test (pytest does not collect ``bench/``). Run from the repository root:

    .venv/bin/python bench/import.py [--messages 200000] [--runs 5]

One file of `--messages` messages is generated once (JSON lines; the typical track call of
bench/ingest.py, about 450 bytes, and one identify in ten; every messageId new), plus its
gzip. Each run measures, on a fresh SQLite file (WAL, synchronous=FULL) and one process, so
one core:

* ``store append`` - the baseline: the same messages already normalised into store rows
  (built before the clock starts), appended in transactions of 1,000. What the store alone
  costs; the import can only be slower.
* ``import`` - ingest/importer.py reading the JSON lines file: parsing, normalisation
  (ingest/sorting.py `message_row`), deduplication and appends of 1,000.
* ``import gzip`` - the same from the gzipped file.
* ``command`` - the real console script, ``freshsales-destination import FILE --json``, in a
  subprocess, timed from its own summary (``seconds``: start-up of the store included,
  Python's start-up not).

Variants alternate within each run. Each is timed in wall seconds and in CPU seconds of the
process (all its threads): on a shared machine the CPU figure is the one-core rate, the wall
figure what was seen. Figures are medians of the runs, with each variant's CPU rate as a
ratio to the baseline's of the same run. A re-run of the import on the filled store
(every message a duplicate) is measured once at the end, and the stored rows are checked: each
messageId exactly once.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from freshsales_destination.config import settings_from_dict
from freshsales_destination.core.segment import RequestTimes, parse_time
from freshsales_destination.ingest.import_reader import MessageFile
from freshsales_destination.ingest.importer import Importer, resolve_source, stable_id
from freshsales_destination.ingest.sorting import message_row
from freshsales_destination.store.base import NewMessage
from freshsales_destination.store.sqlite import SQLiteStore

WRITE_KEY = "wk_bench_import"
CHUNK = 1000


def _message(i: int) -> dict[str, Any]:
    if i % 10 == 0:
        return {
            "type": "identify", "userId": f"user-{i % 50_000}", "messageId": f"imp-{i}",
            "traits": {"email": f"person{i % 50_000}@example.com", "name": "Ann Lee",
                       "plan": "pro", "company": {"name": "Example Ltd"}},
            "context": {"library": {"name": "analytics-python", "version": "2.4.0"}},
            "timestamp": "2026-05-01T12:00:00.000Z",
            "receivedAt": "2026-05-01T12:00:01.000Z", "sentAt": "2026-05-01T12:00:00.500Z",
        }
    return {
        "type": "track", "userId": f"user-{i % 50_000}", "event": "Order Completed",
        "properties": {"revenue": 19.99, "currency": "USD", "order_id": "o-998877",
                       "products": [{"sku": "sku-1", "quantity": 2}]},
        "context": {"library": {"name": "analytics-python", "version": "2.4.0"},
                    "ip": "203.0.113.7"},
        "integrations": {}, "messageId": f"imp-{i}",
        "timestamp": "2026-05-01T12:00:00.000+00:00",
        "receivedAt": "2026-05-01T12:00:01.000Z", "sentAt": "2026-05-01T12:00:00.500Z",
    }


def generate(directory: Path, count: int) -> tuple[Path, Path]:
    plain = directory / "history.jsonl"
    with plain.open("wb") as out:
        for i in range(count):
            out.write(orjson.dumps(_message(i)) + b"\n")
    packed = directory / "history.jsonl.gz"
    with plain.open("rb") as source, gzip.open(packed, "wb", compresslevel=6) as target:
        while block := source.read(1 << 20):
            target.write(block)
    return plain, packed


def _settings(db: Path) -> Any:
    return settings_from_dict({
        "store": {"url": f"sqlite:///{db}"},
        "sources": [{"write_key": WRITE_KEY, "destination": "acme", "name": "web"}],
        "destinations": {"acme": {"domain": "acme", "api_key": "bench-key"}},
    })


def _config(directory: Path, db: Path) -> Path:
    path = directory / f"{db.stem}.toml"
    path.write_text(
        f'[store]\nurl = "sqlite:///{db}"\n'
        f'[[sources]]\nwrite_key = "{WRITE_KEY}"\ndestination = "acme"\nname = "web"\n'
        '[destinations.acme]\ndomain = "acme"\napi_key = "bench-key"\n'
    )
    path.chmod(0o600)
    return path


def rows_of(file: Path) -> list[NewMessage]:
    """The file's messages as the store takes them (built outside the timed part)."""
    received = time.time()
    rows = []
    with file.open("rb") as stream:
        for line in stream:
            value = orjson.loads(line)
            when = parse_time(value["receivedAt"])
            assert when is not None
            times = RequestTimes.of(when)
            rows.append(message_row(
                value, source="web", destination="acme", received_at=received, times=times,
                new_id=lambda value=value: stable_id(value), limit=32 * 1024,
            ))
    return rows


class Clock:
    """Wall and CPU seconds of this process (the CPU of every thread: SQLite's checkpointer
    included) between start and stop."""

    def __enter__(self) -> Clock:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def bench_append(db: Path, rows: list[NewMessage]) -> Clock:
    store = SQLiteStore(db)
    store.open()
    try:
        with Clock() as clock:
            for start in range(0, len(rows), CHUNK):
                store.append(rows[start:start + CHUNK])
        return clock
    finally:
        store.close()


def bench_import(db: Path, file: Path) -> tuple[Clock, Any]:
    settings = _settings(db)
    store = SQLiteStore(db)
    store.open()
    try:
        importer = Importer(store, resolve_source(settings, name="web", write_key=None),
                            max_message_bytes=32 * 1024, chunk_size=CHUNK)
        with Clock() as clock, file.open("rb") as stream:
            importer.run_file(file.name, MessageFile(stream))
        return clock, importer.summary
    finally:
        store.close()


def bench_command(directory: Path, db: Path, file: Path) -> tuple[Clock, dict[str, Any]]:
    """The console script: wall from its own summary; CPU of the child (Python's start-up and
    imports included, so a little more than the import's)."""
    script = Path(sys.executable).with_name("freshsales-destination")
    config = _config(directory, db)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run([str(script), "import", str(file), "-c", str(config), "--json"],
                            capture_output=True, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    summary = json.loads(result.stdout)
    clock = Clock()
    clock.wall = float(summary["seconds"])
    clock.cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return clock, summary


def check(db: Path, count: int) -> None:
    with sqlite3.connect(db) as conn:
        total, distinct = conn.execute(
            "SELECT COUNT(*), COUNT(DISTINCT message_id) FROM messages"
        ).fetchone()
    assert total == distinct == count, (total, distinct, count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    count = args.messages
    with tempfile.TemporaryDirectory(prefix="fsd-bench-import-") as tmp:
        directory = Path(tmp)
        plain, packed = generate(directory, count)
        rows = rows_of(plain)
        print(f"{count} messages, {plain.stat().st_size / 1e6:.1f} MB "
              f"({packed.stat().st_size / 1e6:.1f} MB gzipped); {platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} cores, Python {platform.python_version()}", flush=True)
        walls: dict[str, list[float]] = {}
        cpus: dict[str, list[float]] = {}
        ratios: dict[str, list[float]] = {}
        for run in range(args.runs):
            clocks: dict[str, Clock] = {}
            clocks["store append"] = bench_append(directory / f"append{run}.db", rows)
            check(directory / f"append{run}.db", count)
            for name, file in (("import", plain), ("import gzip", packed)):
                db = directory / f"{name.replace(' ', '_')}{run}.db"
                clocks[name], summary = bench_import(db, file)
                assert summary.stored == count, summary
                check(db, count)
            db = directory / f"command{run}.db"
            clocks["command"], out = bench_command(directory, db, plain)
            assert out["stored"] == count, out
            check(db, count)
            base = clocks["store append"]
            for name, clock in clocks.items():
                walls.setdefault(name, []).append(count / clock.wall)
                cpus.setdefault(name, []).append(count / clock.cpu)
                ratios.setdefault(name, []).append(base.cpu / clock.cpu)
            print(f"run {run + 1}: " + ", ".join(
                f"{name} {count / c.wall:,.0f}/s wall, {count / c.cpu:,.0f}/CPU-s"
                for name, c in clocks.items()
            ), flush=True)
            for db in directory.glob(f"*{run}.db*"):
                if not db.name.startswith("import0"):
                    db.unlink()
        again, summary = bench_import(directory / "import0.db", plain)
        assert summary.stored == 0 and summary.duplicates == count, summary
        print(f"\nmedians of {args.runs} runs: messages per CPU-second (one core), per wall "
              "second, and the CPU rate's ratio to the store append of the same run")
        figures: dict[str, Any] = {"messages": count}
        for name in walls:
            cpu, wall = statistics.median(cpus[name]), statistics.median(walls[name])
            ratio = statistics.median(ratios[name])
            figures[name] = {"per_cpu_second": round(cpu), "per_wall_second": round(wall),
                             "ratio": round(ratio, 3), "cpu_runs": [round(v) for v in cpus[name]]}
            print(f"  {name:13} {cpu:>9,.0f}/CPU-s {wall:>9,.0f}/s wall   x{ratio:.2f}   "
                  "CPU runs: " + ", ".join(f"{v:,.0f}" for v in cpus[name]))
        print(f"  re-run (all duplicates): {count / again.cpu:,.0f}/CPU-s, "
              f"{count / again.wall:,.0f}/s wall")
        figures["rerun_all_duplicates"] = {"per_cpu_second": round(count / again.cpu),
                                           "per_wall_second": round(count / again.wall)}
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
