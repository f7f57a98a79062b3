"""An acknowledged event survives ``kill -9`` of the real service process."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import httpx2
import orjson
import pytest

from freshsales_destination.store.base import InboxEntry
from freshsales_destination.store.sqlite import SQLiteStore
from tests.support.server import free_port

WRITE_KEY = "wk_crash_test"


def _config(tmp_path: Path, db: Path, port: int) -> Path:
    path = tmp_path / "service.toml"
    path.write_text(
        f"""
[server]
host = "127.0.0.1"
port = {port}

[store]
url = "sqlite:///{db}"

[delivery]
enabled = false

[[sources]]
write_key = "{WRITE_KEY}"
destination = "acme"
name = "web"

[destinations.acme]
domain = "acme"
api_key = "fs-api-key"
""",
        encoding="utf-8",
    )
    return path


@contextmanager
def running_service(config: Path, port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "freshsales_destination", "serve", "--config", str(config)],
            stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                if httpx2.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx2.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"service did not start: {log.read_text()[-2000:]}")
            time.sleep(0.05)
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def _sender(
    url: str, thread: int, acked: list[str], stop: threading.Event, batch_size: int
) -> None:
    with httpx2.Client(timeout=5) as client:
        n = 0
        while not stop.is_set():
            ids = [f"t{thread}-b{n}-m{i}" for i in range(batch_size)]
            n += 1
            body = {
                "writeKey": WRITE_KEY,
                "batch": [
                    {"type": "track", "userId": f"u{thread}", "event": "Tick", "messageId": m,
                     "properties": {"n": n}}
                    for m in ids
                ],
            }
            try:
                response = client.post(f"{url}/v1/batch", json=body)
            except httpx2.TransportError:
                return  # the server died under us: this batch was never acknowledged
            if response.status_code == 200:
                acked.extend(ids)


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_acknowledged_events_survive_kill_9(tmp_path: Path) -> None:
    db = tmp_path / "queue.db"
    port = free_port()
    config = _config(tmp_path, db, port)
    url = f"http://127.0.0.1:{port}"
    acked: list[str] = []
    stop = threading.Event()

    with running_service(config, port, tmp_path / "service.log") as process:
        threads = [
            threading.Thread(target=_sender, args=(url, t, acked, stop, 1 + 25 * (t % 2)))
            for t in range(6)
        ]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while len(acked) < 2000 and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)  # mid-stream: senders are still sending
        process.wait(5)
        stop.set()
        for thread in threads:
            thread.join(10)
        assert not any(thread.is_alive() for thread in threads)
    assert len(acked) >= 100, "the load never got going"
    assert len(acked) == len(set(acked))

    # Every acknowledged message is durable already: sorted into `messages`, or still in the
    # inbox as part of its request. Then leave one more acknowledged-but-unsorted request in
    # the inbox, as a crash right after a 200 does, so the restart always has sorting to do.
    store = SQLiteStore(db)
    store.open()
    try:
        before_restart = _stored_ids(db)
        waiting = [m for entry in store.inbox_oldest(10**9) for m in _entry_ids(entry)]
        missing = set(acked) - before_restart - set(waiting)
        assert not missing, f"{len(missing)} acknowledged messages were not durable"
        store.inbox_append([InboxEntry(
            source="web", destination="acme", kind="batch", received_at=time.time(), count=3,
            body=orjson.dumps({"batch": [
                {"type": "track", "userId": "u", "event": "Tick", "messageId": m} for m in LEFT
            ]}),
        )])
        assert store.inbox_count()[0] >= 1
    finally:
        store.close()

    # Restart on the same file: it opens cleanly, sorts what the inbox kept, and a client
    # resending everything it had acknowledged (as a client unsure of its last answers would)
    # creates no duplicates.
    with running_service(config, port, tmp_path / "service.log"):
        resend = {"writeKey": WRITE_KEY, "batch": [
            {"type": "track", "userId": "u", "event": "Tick", "messageId": m} for m in acked[:500]
        ]}
        assert httpx2.post(f"{url}/v1/batch", json=resend, timeout=10).status_code == 200
        # The resend is in the inbox now (or already sorted): once the inbox is empty, the
        # service has sorted everything, the leftovers of the crash included.
        _wait_for_empty_inbox(db, timeout=30)

    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT COUNT(*) FROM inbox").fetchone()[0] == 0
        rows = conn.execute("SELECT message_id FROM messages WHERE source = 'web'").fetchall()
    stored = [str(row[0]) for row in rows]
    assert len(stored) == len(set(stored))  # nothing stored twice
    missing = set(acked) - set(stored)
    assert not missing, f"{len(missing)} acknowledged messages were lost, e.g. {sorted(missing)[:5]}"
    assert set(LEFT) <= set(stored)  # the request left in the inbox was sorted after restart
    # Nothing but what was sent: acknowledged, possibly committed unanswered, or left.
    assert set(stored) <= before_restart | set(waiting) | set(LEFT) | set(acked)


LEFT = ["left-0", "left-1", "left-2"]


def _stored_ids(db: Path) -> set[str]:
    with closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT message_id FROM messages WHERE source = 'web'").fetchall()
    return {str(row[0]) for row in rows}


def _entry_ids(entry: InboxEntry) -> list[str]:
    """The messageIds of the batches the senders sent, as the inbox keeps them."""
    assert entry.kind == "batch", entry.kind
    return [str(message["messageId"]) for message in orjson.loads(entry.body)["batch"]]


def _wait_for_empty_inbox(db: Path, timeout: float) -> None:
    store = SQLiteStore(db)
    store.open()
    try:
        deadline = time.monotonic() + timeout
        while (left := store.inbox_count()) != (0, 0):
            assert time.monotonic() < deadline, f"the inbox was not sorted: {left} left"
            time.sleep(0.05)
    finally:
        store.close()


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_kill_9_while_sorting_keeps_every_event_exactly_once(tmp_path: Path) -> None:
    """The service is killed while it sorts a full inbox (no request arriving: full speed);
    after a restart every event is in `messages` exactly once, in inbox order."""
    db = tmp_path / "q.db"
    store = SQLiteStore(db)
    store.open()
    total = 0
    for chunk in range(40):
        entries = []
        for request in range(25):
            ids = [f"k{chunk}-{request}-{i}" for i in range(40)]
            body = {"batch": [{"type": "track", "userId": f"u{request}", "event": "Tick",
                               "messageId": m} for m in ids]}
            entries.append(InboxEntry(source="web", destination="acme", kind="batch",
                                      received_at=time.time(), count=len(ids),
                                      body=orjson.dumps(body)))
            total += len(ids)
        store.inbox_append(entries)
    store.close()
    assert total == 40_000

    port = free_port()
    config, log = _config(tmp_path, db, port), tmp_path / "service.log"

    def stored() -> int:
        with closing(sqlite3.connect(db, timeout=30)) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0])

    with running_service(config, port, log) as process:
        deadline = time.monotonic() + 30
        while stored() == 0:  # sorting has committed at least one chunk
            assert time.monotonic() < deadline, "sorting never started"
            time.sleep(0.01)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
    with closing(sqlite3.connect(db, timeout=30)) as conn:
        left = int(conn.execute("SELECT COALESCE(SUM(count), 0) FROM inbox").fetchone()[0])
    sorted_before = stored()
    assert left > 0 and sorted_before + left == total  # killed mid-way, nothing in between

    with running_service(config, port, log):
        deadline = time.monotonic() + 60
        while True:
            with closing(sqlite3.connect(db, timeout=30)) as conn:
                if conn.execute("SELECT COUNT(*) FROM inbox").fetchone()[0] == 0:
                    break
            assert time.monotonic() < deadline, "the inbox was not sorted after the restart"
            time.sleep(0.05)
    with closing(sqlite3.connect(db, timeout=30)) as conn:
        ids = [row[0] for row in conn.execute("SELECT message_id FROM messages ORDER BY seq")]
    expected = [f"k{c}-{r}-{i}" for c in range(40) for r in range(25) for i in range(40)]
    assert ids == expected  # each once, in inbox order, across the crash
