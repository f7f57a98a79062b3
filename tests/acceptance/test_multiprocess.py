"""`server.workers = 2`: two processes share one store (SQLite, then PostgreSQL); nothing is
lost or delivered twice."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2
import pytest

from freshsales_destination.sandbox import SandboxOptions
from freshsales_destination.sandbox.testing import running_sandbox
from tests.support.server import free_port

pytestmark = pytest.mark.slow

CONFIG = """
[server]
host = "127.0.0.1"
port = {port}
workers = 2

[store]
url = "{store_url}"

[delivery]
workers = 2
poll_interval = 0.1

[[sources]]
write_key = "wk_multi"
destination = "crm"
name = "multi"

[destinations.crm]
product = "suite"
base_url = "{base_url}"
allow_custom_base_url = true
api_key = "multi-api-key"
app_token = "multi-app-token"
rate_limit_per_hour = 100000
rate_limit_per_minute = 10000
# One write per person is counted as one contacts/upsert: the single-call path (bulk jobs are
# tested in tests/delivery/test_bulk*.py and tests/acceptance/test_bulk_killed.py).
bulk = "off"
"""


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'q.db'}"
    schema = request.getfixturevalue("pg_schema")
    return f"{schema.dsn}?schema={schema.schema}"


def test_two_processes_ingest_and_deliver_each_person_once(
    tmp_path: Path, store_url: str
) -> None:
    options = SandboxOptions(api_key="multi-api-key", app_token="multi-app-token",
                             rate_limit_per_hour=100_000, rate_limit_per_minute=10_000)
    with running_sandbox(options) as sandbox:
        port = free_port()
        config = tmp_path / "multi.toml"
        config.write_text(CONFIG.format(port=port, store_url=store_url, base_url=sandbox.base_url))
        env = {k: v for k, v in os.environ.items() if not k.startswith("FSD_")}
        proc = subprocess.Popen(
            [sys.executable, "-m", "freshsales_destination", "serve", "--config", str(config)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx2.get(f"{base}/readyz").status_code == 200:
                        break
                except httpx2.TransportError:
                    pass
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "the service did not start"
                time.sleep(0.1)

            def send(index: int) -> int:
                batch = [
                    {"type": "identify", "userId": f"p{index}-{n}", "messageId": f"m{index}-{n}",
                     "traits": {"email": f"p{index}-{n}@example.com", "title": "T"}}
                    for n in range(5)
                ]
                with httpx2.Client() as client:
                    return client.post(f"{base}/v1/batch", json={"batch": batch},
                                       auth=("wk_multi", "")).status_code

            with ThreadPoolExecutor(8) as pool:
                codes = list(pool.map(send, range(40)))
            assert codes == [200] * 40
            deadline = time.monotonic() + 60
            contacts: list[dict[str, object]] = []
            while time.monotonic() < deadline:
                contacts = sandbox.state.snapshot()["contacts"]
                if len(contacts) >= 200:
                    break
                time.sleep(0.2)
            emails = sorted(str(c["email"]) for c in contacts)
            assert len(emails) == 200 and len(set(emails)) == 200
            time.sleep(0.5)  # nothing more arrives: no lane was delivered twice
            writes = [e for e in sandbox.request_log()
                      if e["method"] == "POST" and e["path"].endswith("/contacts/upsert")]
            assert len(writes) == 200
        finally:
            proc.terminate()
            proc.wait(timeout=20)
