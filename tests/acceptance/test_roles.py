"""`serve --role`: an ingest process accepts and sorts but never delivers; a worker process
delivers what it finds in the store and serves no tracking API; together they are the
product. Real processes on one SQLite file, the sandbox as Freshsales."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import pytest

from freshsales_destination.sandbox import SandboxOptions
from freshsales_destination.sandbox.testing import running_sandbox
from tests.support.processes import clean_env, start_serve, stop, wait_ready
from tests.support.server import free_port

pytestmark = pytest.mark.slow

CONFIG = """
[server]
role = "{role}"

[store]
url = "sqlite:///{db}"

[delivery]
poll_interval = 0.1

[[sources]]
write_key = "wk_roles"
destination = "crm"
name = "roles"

[destinations.crm]
product = "suite"
base_url = "{base_url}"
allow_custom_base_url = true
api_key = "roles-api-key"
rate_limit_per_hour = 100000
rate_limit_per_minute = 10000
"""


def _status(config: Path) -> dict[str, object]:
    import json

    out = subprocess.run(
        [sys.executable, "-m", "freshsales_destination", "status", "--json", "--config", str(config)],
        capture_output=True, text=True, env=clean_env(), timeout=60, check=True,
    )
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_ingest_and_worker_roles_split_the_work(tmp_path: Path) -> None:
    options = SandboxOptions(api_key="roles-api-key", rate_limit_per_hour=100_000,
                             rate_limit_per_minute=10_000)
    with running_sandbox(options) as sandbox:
        config = tmp_path / "roles.toml"
        # server.role in the file says "worker"; --role on the command line wins.
        config.write_text(CONFIG.format(role="worker", db=tmp_path / "q.db",
                                        base_url=sandbox.base_url))
        ingest_port, worker_port = free_port(), free_port()
        ingest_log, worker_log = tmp_path / "ingest.log", tmp_path / "worker.log"
        ingest = start_serve(config, "ingest", ingest_port, ingest_log)
        worker = None
        try:
            base = f"http://127.0.0.1:{ingest_port}"
            wait_ready(f"{base}/readyz", ingest, ingest_log)
            batch = [{"type": "identify", "userId": f"r{n}", "messageId": f"r-{n}",
                      "traits": {"email": f"r{n}@example.com"}} for n in range(20)]
            reply = httpx2.post(f"{base}/v1/batch", json={"batch": batch}, auth=("wk_roles", ""))
            assert reply.status_code == 200
            deadline = time.monotonic() + 60
            while _status(config)["unsorted"] != 0:  # the ingest role sorts
                assert time.monotonic() < deadline, "the ingest process did not sort"
                time.sleep(0.2)
            assert sandbox.api_call_count() == 0  # ... and does not deliver

            worker = start_serve(config, "worker", worker_port, worker_log)
            wbase = f"http://127.0.0.1:{worker_port}"
            wait_ready(f"{wbase}/readyz", worker, worker_log)
            assert httpx2.get(f"{wbase}/healthz").json() == {"status": "alive"}
            # A worker serves no tracking API.
            refused = httpx2.post(f"{wbase}/v1/batch", json={"batch": batch}, auth=("wk_roles", ""))
            assert refused.status_code == 404
            assert refused.json()["code"] == "not_found"
            deadline = time.monotonic() + 60
            while len(sandbox.state.snapshot()["contacts"]) < 20:
                assert time.monotonic() < deadline, worker_log.read_text()[-3000:]
                time.sleep(0.2)
            emails = sorted(str(c["email"]) for c in sandbox.state.snapshot()["contacts"])
            assert emails == sorted(f"r{n}@example.com" for n in range(20))
            # Each role counts what it does: the ingest process what it received and sorted,
            # the worker what it delivered (docs/operations.md, "Several processes").
            received = 'freshsales_destination_messages_received_total{destination="crm",type="identify"} 20.0'
            delivered = 'freshsales_destination_messages_delivered_total{destination="crm",type="identify"} 20.0'
            deadline = time.monotonic() + 30
            while delivered not in (worker_page := httpx2.get(f"{wbase}/metrics").text):
                assert time.monotonic() < deadline, worker_page[-3000:]
                time.sleep(0.2)
            ingest_page = httpx2.get(f"{base}/metrics").text
            assert received in ingest_page and "messages_delivered_total{" not in ingest_page
            assert "messages_received_total{" not in worker_page
        finally:
            stop(ingest)
            if worker is not None:
                stop(worker)
        # A clean stop on SIGTERM (uvicorn re-raises the signal once shut down).
        assert ingest.returncode in (0, -signal.SIGTERM)
        assert worker is not None and worker.returncode in (0, -signal.SIGTERM)


def test_a_worker_without_delivery_or_a_bad_role_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "roles.toml"
    config.write_text(
        CONFIG.format(role="all", db=tmp_path / "q.db", base_url="http://127.0.0.1:9/crm/sales")
        + "\n"
    )
    env = clean_env(FSD_DELIVERY__ENABLED="false")
    run = [sys.executable, "-m", "freshsales_destination", "serve", "--config", str(config)]
    out = subprocess.run([*run, "--role", "worker"], capture_output=True, text=True, env=env,
                         timeout=60)
    assert out.returncode == 2
    assert "delivery.enabled is false" in out.stderr
    out = subprocess.run([*run, "--role", "both"], capture_output=True, text=True,
                         env=clean_env(), timeout=60)
    assert out.returncode == 2
    assert "--role must be one of all, ingest, worker" in out.stderr
    help_text = subprocess.run(
        [sys.executable, "-m", "freshsales_destination", "serve", "--help"],
        capture_output=True, text=True, env=clean_env(COLUMNS="200"), timeout=60,
    ).stdout
    assert "--role" in help_text and "worker" in help_text
