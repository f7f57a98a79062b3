"""Scale benchmark: ingest and delivery on PostgreSQL beside SQLite, with 1, 2 and 4 worker
processes, and the idle end-to-end latency.

Not a test (pytest does not collect ``bench/``). Run from the repository root, with the
PostgreSQL server of the tests (``TEST_POSTGRES_DSN``, default
``postgresql://postgres@127.0.0.1:5432/test``; each run uses schemas of its own, dropped after):

    .venv/bin/python bench/scale.py [--runs 3] [--seconds 4] [--window 12] [--latency 0.1]

Everything runs as real processes talking HTTP, as deployed (docs/deployment.md):

* **ingest**: one ``serve --role ingest`` process per backend on a fresh store; the load
  generator of ``bench/ingest.py`` (raw keep-alive sockets, new messageIds in every request)
  posts 100-message ``/v1/batch`` requests over 8 connections for ``--seconds``; events/s
  acknowledged (200 = committed), median of ``--runs``, backends alternating, each run
  started once both servers have sorted their inboxes.
* **deliveries**: the store is filled with ``track`` events of many people (one lane each),
  sorted; then 1, 2 or 4 ``serve --role worker`` processes (``delivery.workers = 4`` lanes each)
  deliver to a ``sandbox`` process whose every answer takes ``--latency`` seconds, with a
  budget far above what is spent. Deliveries/s is the growth of ``delivered`` messages over a
  ``--window`` of seconds after a 3 s warm-up. With 4 lanes per process and one call per event,
  the sandbox's latency bounds it at ``4 x processes / latency``.
* **idle latency**: one ingest and one worker process with the default settings, a sandbox
  answering at once; single ``track`` events sent one at a time at random gaps into an idle
  system; the time from the client's 200 to the sandbox logging the call (same machine clock).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2
import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ingest as ingest_bench  # noqa: E402 - bench/ingest.py, beside this file

WRITE_KEY = ingest_bench.WRITE_KEY
API_KEY = "scale-api-key"
APP_TOKEN = "scale-app-token"
BUDGET = 1_000_000  # per hour and per minute, in the sandbox and the configuration
LANES_PER_PROCESS = 4
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"

CONFIG = """
[server]
host = "127.0.0.1"
port = {port}

[store]
url = "{store_url}"

[delivery]
workers = {lanes}
{poll}

[[sources]]
write_key = "{write_key}"
destination = "crm"
name = "bench"

[destinations.crm]
product = "suite"
base_url = "{base_url}"
allow_custom_base_url = true
api_key = "{api_key}"
app_token = "{app_token}"
events_via = "tracking"
rate_limit_per_hour = {budget}
rate_limit_per_minute = {budget}
"""


# -- processes ---------------------------------------------------------------------------------


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("FSD_")}


def _cli(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "freshsales_destination", *args],
                                stdout=out, stderr=subprocess.STDOUT, env=_env())


def _wait_http(url: str, process: subprocess.Popen[bytes], headers: dict[str, str] | None = None,
               timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"a process exited at start ({url})")
        try:
            if httpx2.get(url, headers=headers, timeout=5).status_code == 200:
                return
        except httpx2.TransportError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"{url} did not become ready")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def sandbox(directory: Path, latency: float) -> Iterator[str]:
    """A sandbox process; yields its root URL."""
    port = ingest_bench.free_port()
    args = ["sandbox", "--port", str(port), "--api-key", API_KEY, "--app-token", APP_TOKEN,
            "--rate-limit-per-hour", str(BUDGET), "--rate-limit-per-minute", str(BUDGET)]
    if latency > 0:
        args += ["--slow-rate", "1", "--slow-seconds", str(latency)]
    process = _cli(args, directory / f"sandbox-{port}.log")
    root = f"http://127.0.0.1:{port}"
    try:
        _wait_http(f"{root}/_sandbox/state", process, headers=_auth())
        yield root
    finally:
        _stop(process)


def _auth() -> dict[str, str]:
    return {"Authorization": f"Token token={API_KEY}"}


class Backend:
    """A fresh store of one kind, with a way to count messages by status."""

    def __init__(self, kind: str, directory: Path, dsn: str) -> None:
        self.kind = kind
        self.dsn = dsn
        if kind == "sqlite":
            self.path = directory / f"{uuid.uuid4().hex[:8]}.db"
            self.url = f"sqlite:///{self.path}"
        else:
            self.schema = f"fsd_bench_{uuid.uuid4().hex[:12]}"
            self.url = f"{dsn}?schema={self.schema}"

    def count(self, status: str) -> int:
        query = "SELECT COUNT(*) FROM messages WHERE status = ?"
        if self.kind == "sqlite":
            with sqlite3.connect(self.path, timeout=30) as conn:
                return int(conn.execute(query, (status,)).fetchone()[0])
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("SELECT set_config('search_path', %s, false)", (self.schema,))
            row = conn.execute(query.replace("?", "%s"), (status,)).fetchone()
            return int(row[0]) if row else 0

    def unsorted(self) -> int:
        query = "SELECT COALESCE(SUM(count), 0) FROM inbox"
        if self.kind == "sqlite":
            with sqlite3.connect(self.path, timeout=30) as conn:
                return int(conn.execute(query).fetchone()[0])
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("SELECT set_config('search_path', %s, false)", (self.schema,))
            row = conn.execute(query).fetchone()
            return int(row[0]) if row else 0

    def drop(self) -> None:
        if self.kind == "postgres":
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE")
                             .format(sql.Identifier(self.schema)))


def _config(directory: Path, backend: Backend, base_url: str, *, lanes: int = LANES_PER_PROCESS,
            poll: float | None = None) -> Path:
    path = directory / f"{backend.kind}-{uuid.uuid4().hex[:6]}.toml"
    path.write_text(CONFIG.format(
        port=0, store_url=backend.url, lanes=lanes, write_key=WRITE_KEY, base_url=base_url,
        api_key=API_KEY, app_token=APP_TOKEN, budget=BUDGET,
        poll="" if poll is None else f"poll_interval = {poll}",
    ))
    path.chmod(0o600)
    return path


def _serve(config: Path, role: str, directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = ingest_bench.free_port()
    process = _cli(["serve", "--config", str(config), "--role", role, "--port", str(port)],
                   directory / f"{config.stem}-{role}-{port}.log")
    base = f"http://127.0.0.1:{port}"
    _wait_http(f"{base}/readyz", process)
    return process, base


# -- ingest ------------------------------------------------------------------------------------


def bench_ingest(directory: Path, dsn: str, runs: int, seconds: float) -> dict[str, Any]:
    backends = {kind: Backend(kind, directory, dsn) for kind in ("sqlite", "postgres")}
    servers = {}
    try:
        for kind, backend in backends.items():
            config = _config(directory, backend, "http://127.0.0.1:9/crm/sales")
            servers[kind] = _serve(config, "ingest", directory)
        rates: dict[str, list[float]] = {kind: [] for kind in backends}
        for _, base in servers.values():  # warm-up, 1 s each
            ingest_bench.measure(int(base.rsplit(":", 1)[1]), "/v1/batch", 100, 8, 1.0, 900)
        for run in range(runs):
            for kind, (_, base) in servers.items():
                # Each run starts on a quiet machine: both servers have sorted what earlier
                # runs left in their inboxes (else one backend's catch-up would run during
                # the other's measurement).
                for backend in backends.values():
                    _wait(lambda backend=backend: backend.unsorted() == 0, "sorting", 300.0)
                rate, _ = ingest_bench.measure(int(base.rsplit(":", 1)[1]), "/v1/batch", 100, 8,
                                               seconds, run * 10 + len(rates[kind]) + 1)
                rates[kind].append(rate)
                print(f"  ingest {kind} run {run + 1}: {rate:,.0f} events/s", flush=True)
    finally:
        for process, _ in servers.values():
            _stop(process)
        for backend in backends.values():
            backend.drop()
    medians = {kind: statistics.median(values) for kind, values in rates.items()}
    return {"runs": rates, "median": medians,
            "postgres_over_sqlite": medians["postgres"] / medians["sqlite"]}


# -- deliveries --------------------------------------------------------------------------------


def _fill(base: str, people: int, per_person: int) -> int:
    sent = 0
    with httpx2.Client(timeout=60) as client:
        for round_ in range(per_person):
            for start in range(0, people, 100):
                batch = [{"type": "track", "userId": f"p{p}", "event": "Step",
                          "messageId": f"p{p}-{round_}", "properties": {"n": round_}}
                         for p in range(start, min(people, start + 100))]
                reply = client.post(f"{base}/v1/batch", json={"batch": batch},
                                    auth=(WRITE_KEY, ""))
                if reply.status_code != 200:
                    raise SystemExit(f"fill: {reply.status_code} {reply.text[:200]}")
                sent += len(batch)
    return sent


def _wait(check: Callable[[], bool], what: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out: {what}")
        time.sleep(0.1)


def bench_deliveries(directory: Path, dsn: str, latency: float, window: float,
                     processes: list[int]) -> dict[str, Any]:
    results: dict[str, dict[int, float]] = {"sqlite": {}, "postgres": {}}
    with sandbox(directory, latency) as root:
        base_url = f"{root}/crm/sales"
        for count in processes:
            for kind in ("sqlite", "postgres"):
                backend = Backend(kind, directory, dsn)
                try:
                    config = _config(directory, backend, base_url, poll=0.1)
                    bound = LANES_PER_PROCESS * count / latency
                    # Enough work for the window at the latency bound, over many lanes.
                    people = max(400, int(bound * (window + 6) / 3) + 1)
                    ingest, ingest_base = _serve(config, "ingest", directory)
                    try:
                        total = _fill(ingest_base, people, 3)
                        _wait(lambda backend=backend: backend.unsorted() == 0, "sorting")
                    finally:
                        _stop(ingest)
                    workers = [_serve(config, "worker", directory)[0] for _ in range(count)]
                    try:
                        time.sleep(3.0)  # warm-up: schema fetch, tracking API probe
                        first, started = backend.count("delivered"), time.monotonic()
                        time.sleep(window)
                        last, ended = backend.count("delivered"), time.monotonic()
                    finally:
                        for worker in workers:
                            _stop(worker)
                    if last >= total:
                        print(f"  warning: {kind} x{count} ran out of work in the window",
                              flush=True)
                    rate = (last - first) / (ended - started)
                    results[kind][count] = rate
                    print(f"  deliveries {kind} x{count} worker process(es): {rate:,.1f}/s "
                          f"(latency bound {bound:,.0f}/s)", flush=True)
                finally:
                    backend.drop()
    return {"per_second": results, "latency_seconds": latency,
            "lanes_per_process": LANES_PER_PROCESS}


# -- idle latency ------------------------------------------------------------------------------


def bench_latency(directory: Path, dsn: str, samples: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with sandbox(directory, 0.0) as root:
        for kind in ("sqlite", "postgres"):
            backend = Backend(kind, directory, dsn)
            config = _config(directory, backend, f"{root}/crm/sales")
            ingest, base = _serve(config, "ingest", directory)
            worker, _ = _serve(config, "worker", directory)
            latencies: list[float] = []
            try:
                with httpx2.Client(timeout=60) as client:
                    seen = len(client.get(f"{root}/_sandbox/requests", headers=_auth())
                               .json()["requests"])
                    for n in range(samples + 1):
                        time.sleep(random.uniform(0.2, 0.6))  # idle: nothing in flight
                        event = {"type": "track", "userId": f"idle{n}", "event": "Ping",
                                 "messageId": f"idle-{kind}-{n}"}
                        reply = client.post(f"{base}/v1/track", json=event, auth=(WRITE_KEY, ""))
                        acknowledged = time.time()
                        assert reply.status_code == 200, reply.text
                        entry = None
                        deadline = time.monotonic() + 60
                        while entry is None:
                            log = client.get(f"{root}/_sandbox/requests",
                                             params={"since": seen}, headers=_auth()).json()
                            calls = [e for e in log["requests"] if e["kind"] in ("api", "track")]
                            tracks = [e for e in calls if e["path"].endswith("/track/events")]
                            if tracks:
                                entry = tracks[0]
                            elif time.monotonic() > deadline:
                                raise SystemExit("an idle event was not delivered")
                            else:
                                time.sleep(0.002)
                        seen = int(log["requests"][-1]["seq"])
                        if n > 0:  # the first pays for the schema fetch and the probe
                            latencies.append(float(entry["epoch"]) - acknowledged)
            finally:
                _stop(worker)
                _stop(ingest)
                backend.drop()
            latencies.sort()
            out[kind] = {
                "samples": len(latencies),
                "p50_ms": 1000 * statistics.median(latencies),
                "p99_ms": 1000 * latencies[min(len(latencies) - 1,
                                               int(0.99 * len(latencies)))],
                "max_ms": 1000 * latencies[-1],
            }
            print(f"  idle latency {kind}: p50 {out[kind]['p50_ms']:.0f} ms, "
                  f"p99 {out[kind]['p99_ms']:.0f} ms", flush=True)
    return out


# -- table sizes -------------------------------------------------------------------------------


def bench_sizes(directory: Path, dsn: str, messages: int = 20_000) -> dict[str, float]:
    """Bytes per stored message and per ledger row on PostgreSQL (table, TOAST and indexes),
    for the sizing in docs/deployment.md: `messages` typical track events ingested over HTTP
    and sorted; as many ledger rows written as delivery writes them."""
    from freshsales_destination.store.postgres import PostgresStore

    backend = Backend("postgres", directory, dsn)
    try:
        config = _config(directory, backend, "http://127.0.0.1:9/crm/sales")
        process, base = _serve(config, "ingest", directory)
        try:
            with httpx2.Client(timeout=60) as client:
                for start in range(0, messages, 100):
                    batch = [ingest_bench._message(f"size-{n}") for n in range(start, start + 100)]
                    reply = client.post(f"{base}/v1/batch", json={"batch": batch},
                                        auth=(WRITE_KEY, ""))
                    assert reply.status_code == 200, reply.text
            _wait(lambda: backend.unsorted() == 0, "sorting")
        finally:
            _stop(process)
        store = PostgresStore(dsn, schema=backend.schema, max_size=2)
        store.open()
        try:
            def total(table: str) -> int:
                with psycopg.connect(dsn, autocommit=True) as conn:
                    conn.execute("SELECT set_config('search_path', %s, false)", (backend.schema,))
                    conn.execute(f"VACUUM ANALYZE {table}")
                    row = conn.execute("SELECT pg_total_relation_size(%s)", (table,)).fetchone()
                    return int(row[0]) if row else 0

            per_message = total("messages") / messages
            before = total("kv")
            for n in range(messages):
                store.kv_put("ledger:crm", f"bench:size-{n}:track_event:0",
                             json.dumps({"result": 90_000_000_000 + n}).encode(), now=time.time())
            per_ledger = (total("kv") - before) / messages
        finally:
            store.close()
    finally:
        backend.drop()
    print(f"  {per_message:,.0f} bytes per message, {per_ledger:,.0f} bytes per ledger row",
          flush=True)
    return {"bytes_per_message": per_message, "bytes_per_ledger_row": per_ledger}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--window", type=float, default=12.0)
    parser.add_argument("--latency", type=float, default=0.1,
                        help="seconds every sandbox answer takes in the delivery runs")
    parser.add_argument("--processes", default="1,2,4")
    parser.add_argument("--samples", type=int, default=60)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--parts", default="ingest,deliveries,latency",
                        help="which measurements to run (comma-separated)")
    parser.add_argument("--sizes-only", action="store_true",
                        help="only the bytes per message and per ledger row on PostgreSQL")
    args = parser.parse_args()
    dsn = os.environ.get("TEST_POSTGRES_DSN", DEFAULT_DSN)
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        server_version = conn.execute("SHOW server_version").fetchone()
    print(f"python {platform.python_version()}, {os.cpu_count()} cpus, "
          f"PostgreSQL {server_version[0] if server_version else '?'}, "
          f"SQLite {sqlite3.sqlite_version}", flush=True)
    with tempfile.TemporaryDirectory(prefix="fsd-scale-") as tmp:
        directory = Path(tmp)
        if args.sizes_only:
            print("table sizes (PostgreSQL):", flush=True)
            print(json.dumps(bench_sizes(directory, dsn), indent=2))
            return
        parts = set(args.parts.split(","))
        result: dict[str, Any] = {}
        if "ingest" in parts:
            print("ingest (100-message batches, 8 connections):", flush=True)
            result["ingest"] = bench_ingest(directory, dsn, args.runs, args.seconds)
        if "deliveries" in parts:
            print("deliveries:", flush=True)
            result["deliveries"] = bench_deliveries(
                directory, dsn, args.latency, args.window,
                [int(p) for p in args.processes.split(",")])
        if "latency" in parts:
            print("idle end-to-end latency:", flush=True)
            result["idle_latency"] = bench_latency(directory, dsn, args.samples)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
