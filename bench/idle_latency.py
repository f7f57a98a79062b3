"""Idle end-to-end latency: from an event's 200 to the first Freshsales call it causes.

The service runs as `serve` in a subprocess (its own store, delivery on, defaults otherwise);
the sandbox runs in this process and logs every call with its time. One event at a time, each
for a new person (so it needs a call), sent only once the previous one reached the sandbox and
the service is idle again (a random 0.2-0.7 s gap): every event finds delivery idle. Latency = the sandbox's log time of
the first call after the event minus the time its 200 reached the client (one clock: same
machine, same process).

What it includes: the commit, sorting (which waits `server.sort_idle_after`, 20 ms, for
requests to stop before it sorts), the wake-up (or the poll), the lane claim, planning, the
budget's store transaction, and the HTTP call to the sandbox.

Usage: python bench/idle_latency.py [--events 100] [--store sqlite|postgres|both]
       [--poll-interval SECONDS] [--json FILE]
To measure the code before wake-ups, run this script with PYTHONPATH pointing at that code's
src/ (the service subprocess inherits it) and --poll-interval 0.5 (its default then).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx2

from freshsales_destination.sandbox import SandboxOptions
from freshsales_destination.sandbox.testing import RunningSandbox, running_sandbox

PG_DSN = os.environ.get("FSD_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")

CONFIG = """
[server]
host = "127.0.0.1"
port = {port}

[store]
url = "{store_url}"

[delivery]
workers = {workers}
{poll}

[[sources]]
write_key = "wk_idle"
destination = "crm"
name = "idle"

[destinations.crm]
product = "suite"
base_url = "{base_url}"
allow_custom_base_url = true
api_key = "idle-api-key"
app_token = "idle-app-token"
rate_limit_per_hour = 1000000
rate_limit_per_minute = 100000
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _api_calls(sandbox: RunningSandbox, after: int) -> list[dict[str, Any]]:
    return [e for e in sandbox.request_log() if e["seq"] > after and e["kind"] in ("api", "track")]


def _last_seq(sandbox: RunningSandbox) -> int:
    log = sandbox.request_log(include_admin=True)
    return int(log[-1]["seq"]) if log else 0


def measure(
    store: str, events: int, poll_interval: float | None, workers: int = 4, warmup: int = 5,
    seed: int = 7,
) -> dict[str, Any]:
    options = SandboxOptions(api_key="idle-api-key", app_token="idle-app-token",
                             rate_limit_per_hour=1_000_000, rate_limit_per_minute=100_000)
    schema = f"fsd_bench_{uuid.uuid4().hex[:12]}"
    with tempfile.TemporaryDirectory() as tmp, running_sandbox(options) as sandbox:
        store_url = (f"sqlite:///{Path(tmp) / 'q.db'}" if store == "sqlite"
                     else f"{PG_DSN}?schema={schema}")
        port = _free_port()
        config = Path(tmp) / "idle.toml"
        poll = "" if poll_interval is None else f"poll_interval = {poll_interval}"
        config.write_text(CONFIG.format(port=port, store_url=store_url, poll=poll, workers=workers,
                                        base_url=sandbox.base_url))
        env = {k: v for k, v in os.environ.items() if not k.startswith("FSD_")}
        proc = subprocess.Popen(
            [sys.executable, "-m", "freshsales_destination", "serve", "--config", str(config)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        )
        base = f"http://127.0.0.1:{port}"
        latencies: list[float] = []
        try:
            with httpx2.Client(auth=("wk_idle", "")) as client:
                deadline = time.monotonic() + 30
                while True:
                    try:
                        if client.get(f"{base}/readyz").status_code == 200:
                            break
                    except httpx2.TransportError:
                        pass
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise SystemExit("the service did not start")
                    time.sleep(0.05)
                rng = random.Random(seed)
                for n in range(warmup + events):
                    # Idle again: the last unit is finished, workers sleep. A random gap, so
                    # a poll's phase is not locked to the events' (which would flatter it).
                    time.sleep(rng.uniform(0.2, 0.7))
                    mark = _last_seq(sandbox)
                    user = f"idle-{n}-{uuid.uuid4().hex[:6]}"
                    answer = client.post(f"{base}/v1/identify", json={
                        "userId": user, "messageId": f"m-{user}",
                        "traits": {"email": f"{user}@example.com", "title": "Engineer"},
                    })
                    acked = time.time()
                    if answer.status_code != 200:
                        raise SystemExit(f"ingest answered {answer.status_code}")
                    deadline = time.monotonic() + 30
                    requests = sandbox.state.requests
                    while True:
                        if len(requests) > mark and (calls := _api_calls(sandbox, mark)):
                            break  # (a length check first: the log is copied only then)
                        if time.monotonic() > deadline:
                            raise SystemExit(f"event {n} was not delivered in 30 s")
                        time.sleep(0.002)
                    if n >= warmup:  # the first events fetch the schema; not idle latency
                        latencies.append((float(calls[0]["epoch"]) - acked) * 1000)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            if store == "postgres":
                import psycopg

                with psycopg.connect(PG_DSN, autocommit=True) as conn:
                    conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    ordered = sorted(latencies)
    samples = [round(x, 2) for x in latencies]
    return {
        "store": store,
        "events": len(ordered),
        "poll_interval": poll_interval,
        "workers": workers,
        "load_average": os.getloadavg(),
        "p50_ms": round(statistics.median(ordered), 1),
        "p99_ms": round(_rank(ordered, 0.99), 1),
        "p90_ms": round(_rank(ordered, 0.90), 1),
        "max_ms": round(ordered[-1], 1),
        "min_ms": round(ordered[0], 1),
        "samples_ms": samples,
    }


def _rank(ordered: list[float], p: float) -> float:
    """The nearest-rank percentile: the smallest value with at least p of them at or below."""
    return ordered[max(0, math.ceil(p * len(ordered)) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--store", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--poll-interval", type=float, default=None,
                        help="delivery.poll_interval (default: the configuration's)")
    parser.add_argument("--workers", type=int, default=4, help="delivery.workers (default 4)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    stores = ("sqlite", "postgres") if args.store == "both" else (args.store,)
    results = [measure(store, args.events, args.poll_interval, args.workers) for store in stores]
    print("| store | workers | events | p50 ms | p90 ms | p99 ms | max ms |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['store']} | {r['workers']} | {r['events']} | {r['p50_ms']} | "
              f"{r['p90_ms']} | {r['p99_ms']} | {r['max_ms']} |")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
