"""PostgreSQL stopped and started again under load: ingest answers 503 while it is down (never
200 for what it did not commit), the ingest and worker processes reconnect by themselves, and
every acknowledged message is in the store afterwards, and delivered.

The test starts a throw-away cluster of its own (initdb + pg_ctl on a free port, as the
postgres user when run as root) so that stopping it disturbs nothing else. The server is
stopped with ``-m immediate`` (as a crash: no checkpoint, recovery from the WAL on start).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx2
import psycopg
import pytest

from freshsales_destination.sandbox import SandboxOptions
from freshsales_destination.sandbox.testing import running_sandbox
from tests.support.pg_cluster import ThrowawayCluster
from tests.support.processes import start_serve, stop, wait_ready
from tests.support.server import free_port

# Serial: stopping and starting a PostgreSQL server (and the load it carries) must not run
# beside the other PostgreSQL tests; scripts/test.sh runs it after the parallel run.
pytestmark = [pytest.mark.slow, pytest.mark.serial, pytest.mark.timeout(600)]

SCHEMA = "fsd_restart"
CONFIG = """
[store]
url = "{dsn}?schema={schema}"

[delivery]
workers = 2
poll_interval = 0.1

[[sources]]
write_key = "wk_restart"
destination = "crm"
name = "restart"

[destinations.crm]
product = "suite"
base_url = "{base_url}"
allow_custom_base_url = true
api_key = "restart-api-key"
rate_limit_per_hour = 100000
rate_limit_per_minute = 100000
"""


@pytest.fixture
def cluster() -> Iterator[ThrowawayCluster]:
    why = ThrowawayCluster.unavailable()
    if why is not None:
        pytest.skip(f"PostgreSQL: cannot start a throw-away cluster: {why}")
    server = ThrowawayCluster(free_port())
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.destroy()


class Load:
    """Sends 10-message identify batches in a loop, remembering what each answer covered."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.acknowledged: list[str] = []
        self.statuses: list[tuple[float, int]] = []  # (monotonic time, status or 0)
        self.stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._n = 0

    def start(self) -> None:
        self._thread.start()

    def join(self) -> None:
        self.stop.set()
        self._thread.join(timeout=120)

    def _run(self) -> None:
        with httpx2.Client(timeout=60) as client:
            while not self.stop.is_set():
                ids = [f"r{self._n + i}" for i in range(10)]
                self._n += 10
                batch = [{"type": "identify", "userId": mid, "messageId": mid,
                          "traits": {"email": f"{mid}@example.com"}} for mid in ids]
                try:
                    reply = client.post(f"{self.url}/v1/batch", json={"batch": batch},
                                        auth=("wk_restart", ""))
                    status = reply.status_code
                except httpx2.TransportError:
                    status = 0
                self.statuses.append((time.monotonic(), status))
                if status == 200:
                    self.acknowledged.extend(ids)
                    time.sleep(0.02)  # a steady stream, not a flood the test must deliver
                else:
                    time.sleep(0.05)  # as a client backs off

    def since(self, moment: float) -> Counter[int]:
        return Counter(status for at, status in self.statuses if at >= moment)


def _wait_for(what: str, check: object, timeout: float = 90.0) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_postgres_restart_under_load_loses_nothing_acknowledged(
    tmp_path: Path, cluster: ThrowawayCluster
) -> None:
    options = SandboxOptions(api_key="restart-api-key", rate_limit_per_hour=100_000,
                             rate_limit_per_minute=100_000)
    with running_sandbox(options) as sandbox:
        config = tmp_path / "restart.toml"
        config.write_text(CONFIG.format(dsn=cluster.dsn, schema=SCHEMA, base_url=sandbox.base_url))
        ingest_port, worker_port = free_port(), free_port()
        ingest_log, worker_log = tmp_path / "ingest.log", tmp_path / "worker.log"
        ingest = start_serve(config, "ingest", ingest_port, ingest_log)
        worker = start_serve(config, "worker", worker_port, worker_log)
        base, wbase = f"http://127.0.0.1:{ingest_port}", f"http://127.0.0.1:{worker_port}"
        load = Load(base)
        try:
            wait_ready(f"{base}/readyz", ingest, ingest_log)
            wait_ready(f"{wbase}/readyz", worker, worker_log)
            load.start()
            _wait_for("acknowledged load", lambda: len(load.acknowledged) >= 200)

            cluster.stop("immediate")
            down = time.monotonic()
            _wait_for("503 answers while PostgreSQL is down", lambda: load.since(down)[503] >= 2)
            assert httpx2.get(f"{base}/readyz", timeout=60).status_code == 503
            assert httpx2.get(f"{wbase}/readyz", timeout=60).status_code == 503
            cluster.start()
            up = time.monotonic()
            acknowledged_before = len(load.acknowledged)
            # Both processes reconnect by themselves: ingest acknowledges again, and the
            # worker's readiness (a write to the store) comes back.
            _wait_for("200 answers after the restart",
                      lambda: len(load.acknowledged) >= acknowledged_before + 200)
            _wait_for("the worker's readiness", lambda: httpx2.get(
                f"{wbase}/readyz", timeout=60).status_code == 200)
        finally:
            load.join()
        try:
            during = Counter(s for at, s in load.statuses if down <= at < up)
            assert set(load.since(0)) <= {200, 503}, load.since(0)
            assert during[503] >= 2
            acknowledged = set(load.acknowledged)
            assert len(acknowledged) == len(load.acknowledged)

            def stored() -> set[str]:
                with psycopg.connect(cluster.dsn, autocommit=True) as conn:
                    conn.execute("SELECT set_config('search_path', %s, false)", (SCHEMA,))
                    rows = conn.execute("SELECT message_id FROM messages").fetchall()
                return {str(r[0]) for r in rows}

            # Everything acknowledged is in the store once sorted, and reaches Freshsales. A bulk
            # look the outage cut short left its lanes leased and its creates claimed in the
            # store: they lapse (delivery.lease_seconds, 120 s; the create claims, 120 s) and the
            # lanes are written again, so delivery may take that long more.
            _wait_for("the acknowledged messages sorted", lambda: acknowledged <= stored())
            _wait_for("the acknowledged messages delivered", lambda: acknowledged <= {
                str(c["email"]).split("@")[0] for c in sandbox.state.snapshot()["contacts"]
            }, timeout=300)
            assert ingest.poll() is None and worker.poll() is None  # neither gave up
        finally:
            stop(ingest)
            stop(worker)
