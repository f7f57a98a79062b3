"""Taking the next job with a huge backlog: cost and memory at 1,000 vs 1,000,000 pending.

Fills a SQLite store (WAL, synchronous=FULL, as in production) with pending messages spread
over many people's lanes, then measures, at each backlog size, the median time of one
delivery step on the store (claim the next lane with its messages, finish them, release the
lane), the Python memory allocated during those steps (tracemalloc peak), and the process's
resident memory. Some lanes are held back for a retry so the claim also has to skip them.

Usage: python bench/backlog.py [--sizes 1000,1000000] [--steps 300] [--repeats 3]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

import orjson

from freshsales_destination.store.base import NewMessage
from freshsales_destination.store.sqlite import SQLiteStore

BODY = orjson.dumps(
    {
        "type": "track",
        "event": "Report Created",
        "userId": "user",
        "properties": {"count": 3, "plan": "pro", "source": "web"},
        "context": {"library": {"name": "analytics-python", "version": "2.4.0"}},
    }
)


def fill(store: SQLiteStore, start: int, stop: int, lanes: int) -> None:
    chunk = 20_000
    for base in range(start, stop, chunk):
        rows = [
            NewMessage(
                source="bench", destination="crm", message_id=f"m{n}",
                type="identify" if n % 5 == 0 else "track", status="pending", reason=None,
                lane=f"u:{n % lanes}", received_at=1.0, event_at=1.0, raw=BODY, message=BODY,
            )
            for n in range(base, min(stop, base + chunk))
        ]
        store.append(rows)


def hold_some_lanes(store: SQLiteStore, count: int) -> None:
    """Put the heads of `count` lanes on a retry far in the future."""
    for _ in range(count):
        claim = store.claim_lane("crm", owner="hold", now=10.0, lease_seconds=1, max_messages=1)
        assert claim is not None
        head = claim.messages[0]
        store.reschedule(head.seq, destination="crm", lane=claim.lane, attempts=1,
                         available_at=1e12, first_failure_at=10.0, last_error="held")
        store.release_lane("crm", claim.lane, "hold")


def measure(store: SQLiteStore, steps: int) -> tuple[float, int]:
    """Median seconds per delivery step, and the tracemalloc peak over the steps."""
    times = []
    tracemalloc.start()
    for step in range(steps):
        started = time.perf_counter()
        claim = store.claim_lane("crm", owner="w", now=100.0 + step, lease_seconds=30,
                                 max_messages=100)
        assert claim is not None
        store.finish([m.seq for m in claim.messages], status="delivered", now=100.0 + step)
        store.release_lane("crm", claim.lane, "w")
        times.append(time.perf_counter() - started)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return statistics.median(times), peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,1000000")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--held-lanes", type=int, default=50)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            path = Path(tmp) / f"backlog-{size}.db"
            store = SQLiteStore(path)
            store.open()
            lanes = max(1, size // 2)
            fill_started = time.perf_counter()
            fill(store, 0, size, lanes)
            fill_seconds = time.perf_counter() - fill_started
            hold_some_lanes(store, min(args.held_lanes, lanes // 2))
            pending = store.pending_count("crm")
            medians, peaks = [], []
            held = min(args.held_lanes, lanes // 2)
            steps = min(args.steps, (lanes - held) // args.repeats - 1)
            for _ in range(args.repeats):
                median, peak = measure(store, steps)
                medians.append(median)
                peaks.append(peak)
            results[size] = {
                "pending": pending,
                "steps": steps,
                "fill_seconds": round(fill_seconds, 1),
                "median_step_ms": round(statistics.median(medians) * 1000, 3),
                "traced_peak_kib": round(max(peaks) / 1024, 1),
                "maxrss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "db_mib": round(path.stat().st_size / 2**20, 1),
            }
            store.close()
            print(size, results[size], flush=True)
    small, large = results[sizes[0]], results[sizes[-1]]
    print(
        f"step cost ratio {sizes[-1]:,} vs {sizes[0]:,} pending: "
        f"{large['median_step_ms'] / small['median_step_ms']:.2f}; "
        f"traced memory ratio: {large['traced_peak_kib'] / small['traced_peak_kib']:.2f}"
    )


if __name__ == "__main__":
    main()
