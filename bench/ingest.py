"""Ingest benchmark: durable events/s, against a bare endpoint on the same framework.

Not a test (pytest does not collect ``bench/``). Run from the repository root:

    .venv/bin/python bench/ingest.py [--runs 5] [--seconds 4]

Two servers run as subprocesses, each one uvicorn process with the settings ``serve`` uses
(uvloop + httptools, no access log):

* ``service`` - the real ``freshsales-destination serve --config FILE`` on a fresh SQLite file
  (WAL, synchronous=FULL, group commit), delivery off; a 200 means the request is committed
  to the inbox, which the service sorts into one queued message per event off the request
  path (docs/architecture.md);
* ``bare`` - a Starlette route that reads the body, parses the JSON with orjson and answers 200.

A load process (asyncio + uvloop, raw keep-alive sockets, every request carrying new
messageIds so that every event is a real durable insert) drives one server at a time; runs
alternate between the two servers. Each figure is the median of the runs. After the runs, the
benchmark waits until the idle service has sorted what its inbox still holds (and reports how
fast), then checks the SQLite file holds exactly the acknowledged events, each messageId once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

WRITE_KEY = "wk_bench"
ROOT = Path(__file__).resolve().parent.parent


# -- the bare endpoint -------------------------------------------------------------------------


def bare_app() -> Any:
    """The reference: the same framework and server, reading and parsing the body only."""
    import orjson
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def endpoint(request: Request) -> Response:
        orjson.loads(await request.body())
        return Response(b'{"success":true}', media_type="application/json")

    async def health(request: Request) -> Response:
        return Response(b'{"status":"ready"}', media_type="application/json")

    return Starlette(routes=[
        Route("/v1/{kind:str}", endpoint, methods=["POST"]),
        Route("/readyz", health, methods=["GET"]),
    ])


def run_bare_server(port: int, workers: int = 1) -> None:
    import uvicorn

    # The same call `serve` makes (with `server.workers`, the same multi-process form).
    if workers > 1:
        uvicorn.run("ingest:bare_app", factory=True, workers=workers, app_dir=str(ROOT / "bench"),
                    host="127.0.0.1", port=port, access_log=False, log_level="info")
    else:
        uvicorn.run(bare_app(), host="127.0.0.1", port=port, access_log=False, log_level="info")


# -- requests ----------------------------------------------------------------------------------


def _message(message_id: str) -> dict[str, object]:
    """What analytics-python sends for a typical track call (about 450 bytes)."""
    return {
        "type": "track",
        "userId": "user-12345",
        "anonymousId": None,
        "event": "Order Completed",
        "properties": {"revenue": 19.99, "currency": "USD", "order_id": "o-998877",
                       "products": [{"sku": "sku-1", "quantity": 2}]},
        "context": {"library": {"name": "analytics-python", "version": "2.4.0"},
                    "ip": "203.0.113.7"},
        "integrations": {},
        "messageId": message_id,
        "timestamp": "2024-05-01T12:00:00.000+00:00",
    }


def request_factory(path: str, batch_size: int, worker: int) -> Callable[[int], bytes]:
    """A function n -> the bytes of the n-th HTTP request (fresh messageIds every time)."""
    marker = "@@ID@@"
    if batch_size == 1:
        body = {"writeKey": WRITE_KEY, **_message(marker)}
    else:
        body = {"writeKey": WRITE_KEY, "sentAt": "2024-05-01T12:00:01.000000+00:00",
                "batch": [_message(f"{marker}-{i:03d}") for i in range(batch_size)]}
    parts = json.dumps(body, separators=(",", ":")).encode().split(marker.encode())

    def build(n: int) -> bytes:
        ident = f"w{worker}-{n}".encode()
        payload = ident.join(parts)
        return (
            f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"User-Agent: analytics-python/2.4.0\r\nContent-Length: {len(payload)}\r\n\r\n"
        ).encode() + payload

    return build


async def _connection(
    port: int, build: Callable[[int], bytes], start: int, step: int, until: float,
    results: list[int],
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    ok = bad = 0
    n = start
    while time.monotonic() < until:
        writer.write(build(n))
        n += step
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await reader.readexactly(length)
        if status == 200:
            ok += 1
        else:
            bad += 1
    writer.close()
    results[0] += ok
    results[1] += bad


def load(port: int, path: str, batch_size: int, connections: int, seconds: float,
         worker: int, queue: multiprocessing.Queue[tuple[int, int, float]]) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    build = request_factory(path, batch_size, worker)

    async def main() -> tuple[int, int, float]:
        results = [0, 0]
        started = time.monotonic()
        until = started + seconds
        await asyncio.gather(*[
            _connection(port, build, i, connections, until, results) for i in range(connections)
        ])
        return results[0], results[1], time.monotonic() - started

    queue.put(asyncio.run(main()))


def _own_cpu(pid: int) -> tuple[float, int]:
    """(user + system CPU seconds, parent pid) of one process; (0, -1) where /proc lacks it."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, -1
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), int(fields[1])


def cpu_seconds(pid: int) -> float:
    """CPU time so far of a process and its live child processes (uvicorn's workers)."""
    total = _own_cpu(pid)[0]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != pid:
            cpu, parent = _own_cpu(int(entry.name))
            if parent == pid:
                total += cpu
    return total


def measure(port: int, path: str, batch_size: int, connections: int, seconds: float,
            run_id: int) -> tuple[float, int]:
    """One run: (acknowledged events per second, acknowledged events)."""
    queue: multiprocessing.Queue[tuple[int, int, float]] = multiprocessing.Queue()
    process = multiprocessing.Process(
        target=load, args=(port, path, batch_size, connections, seconds, run_id, queue)
    )
    process.start()
    ok, bad, elapsed = queue.get(timeout=seconds + 60)
    process.join()
    if bad:
        raise SystemExit(f"{bad} requests were not answered 200")
    return ok * batch_size / elapsed, ok * batch_size


# -- servers -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit("a server exited at start")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("a server did not start")


def inbox_messages(db: Path) -> int:
    """Messages waiting in the inbox: the store's own count (one row, kept by triggers), so
    polling it costs the machine nothing while the service's catch-up is measured."""
    with closing(sqlite3.connect(db, timeout=30)) as conn:
        return int(conn.execute("SELECT messages FROM inbox_size WHERE id = 1").fetchone()[0])


def wait_sorted(db: Path, pid: int, timeout: float = 900.0) -> tuple[float, int, float]:
    """Wait until the idle service has sorted its inbox: (seconds, events, server CPU s)."""
    waiting = inbox_messages(db)
    cpu_before, started = cpu_seconds(pid), time.monotonic()
    while inbox_messages(db) > 0:
        if time.monotonic() - started > timeout:
            raise SystemExit("the service did not sort its inbox in time")
        time.sleep(0.05)
    return time.monotonic() - started, waiting, cpu_seconds(pid) - cpu_before


def service_config(directory: Path, port: int, workers: int) -> Path:
    path = directory / "bench.toml"
    path.write_text(f"""
[server]
host = "127.0.0.1"
port = {port}
workers = {workers}

[store]
url = "sqlite:///{directory / 'queue.db'}"

[delivery]
enabled = false

[[sources]]
write_key = "{WRITE_KEY}"
destination = "acme"
name = "bench"

[destinations.acme]
domain = "acme"
api_key = "unused"
""")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--single-connections", type=int, default=64)
    parser.add_argument("--batch-connections", type=int, default=8)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--workers", type=int, default=1,
                        help="serving processes for both servers (server.workers)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="fsd-bench-") as tmp:
        directory = Path(tmp)
        service_port, bare_port = free_port(), free_port()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        log = (directory / "servers.log").open("wb")
        service = subprocess.Popen(
            [sys.executable, "-m", "freshsales_destination", "serve", "--config",
             str(service_config(directory, service_port, args.workers))],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
        )
        bare = subprocess.Popen(
            [sys.executable, __file__, "--bare-server", str(bare_port), str(args.workers)],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
        )
        try:
            wait_ready(service_port, service)
            wait_ready(bare_port, bare)
            scenarios = {
                "single": ("/v1/track", 1, args.single_connections),
                "batch100": ("/v1/batch", 100, args.batch_connections),
            }
            figures: dict[str, dict[str, list[float]]] = {}
            cpu_figures: dict[str, dict[str, list[float]]] = {}
            acked_total = 0
            run_id = 0
            for name, (path, size, connections) in scenarios.items():
                figures[name] = {"service": [], "bare": []}
                cpu_figures[name] = {"service": [], "bare": []}
                run_id += 1  # warm-up
                acked_total += measure(service_port, path, size, connections, 1.0, run_id)[1]
                measure(bare_port, path, size, connections, 1.0, run_id := run_id + 1)
                for _ in range(args.runs):
                    for target, port in (("bare", bare_port), ("service", service_port)):
                        run_id += 1
                        pid = (service if target == "service" else bare).pid
                        cpu_before = cpu_seconds(pid)
                        rate, acked = measure(port, path, size, connections, args.seconds, run_id)
                        cpu = (cpu_seconds(pid) - cpu_before) / max(acked, 1) * 1e6
                        if target == "service":
                            acked_total += acked
                        figures[name][target].append(rate)
                        cpu_figures[name][target].append(cpu)
                        print(f"{name:9s} {target:8s} {rate:10.0f} events/s  "
                              f"server CPU {cpu:7.1f} us/event", flush=True)
            with urllib.request.urlopen(f"http://127.0.0.1:{service_port}/readyz") as r:
                assert r.status == 200
            # What the runs left in the inbox, sorted now that no request arrives: the
            # figure says how fast an idle service catches up after a burst.
            sort_seconds, sorted_messages, sort_cpu = wait_sorted(
                directory / "queue.db", service.pid
            )
        finally:
            service.terminate()
            bare.terminate()
            service.wait(20)
            bare.wait(20)
            log.close()
        with sqlite3.connect(directory / "queue.db") as conn:
            stored = conn.execute("SELECT COUNT(*), COUNT(DISTINCT message_id) FROM messages")
            count, distinct = stored.fetchone()
        if count != acked_total or distinct != acked_total:
            raise SystemExit(f"{acked_total} events acknowledged but {count} rows stored")

    report: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "workers": args.workers,
        "load_average_after": os.getloadavg()[0],
        "runs": args.runs,
        "seconds": args.seconds,
        "acknowledged_events": acked_total,
        "unsorted_after_runs": sorted_messages,
        "catch_up_seconds": round(sort_seconds, 1),
        "catch_up_events_per_second": round(sorted_messages / sort_seconds) if sort_seconds else None,
        "catch_up_cpu_us_per_event": round(sort_cpu / sorted_messages * 1e6, 1)
        if sorted_messages else None,
        "stored_rows": count,
        "distinct_message_ids": distinct,
    }
    print()
    print(report["machine"], f"- medians of {args.runs} runs of {args.seconds:g} s")
    for name, by_target in figures.items():
        service_median = statistics.median(by_target["service"])
        bare_median = statistics.median(by_target["bare"])
        report[name] = {
            "service_median": round(service_median),
            "bare_median": round(bare_median),
            "ratio": round(service_median / bare_median, 3),
            "service_runs": [round(x) for x in by_target["service"]],
            "bare_runs": [round(x) for x in by_target["bare"]],
            "service_cpu_us_per_event": round(statistics.median(cpu_figures[name]["service"]), 1),
            "bare_cpu_us_per_event": round(statistics.median(cpu_figures[name]["bare"]), 1),
        }
        print(f"{name:9s} service {service_median:9.0f}/s  bare {bare_median:9.0f}/s  "
              f"ratio {service_median / bare_median:.2f}   server CPU/event: service "
              f"{report[name]['service_cpu_us_per_event']} us, bare "
              f"{report[name]['bare_cpu_us_per_event']} us")
    print(f"rows stored: {count} (distinct messageIds {distinct})")
    if sorted_messages:
        print(f"inbox after the runs: {sorted_messages} events, sorted in {sort_seconds:.1f} s "
              f"({report['catch_up_events_per_second']}/s, "
              f"{report['catch_up_cpu_us_per_event']} us of server CPU per event)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    if len(sys.argv) in (3, 4) and sys.argv[1] == "--bare-server":
        run_bare_server(int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) == 4 else 1)
    else:
        main()
