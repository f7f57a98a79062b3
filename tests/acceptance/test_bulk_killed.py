"""A service SIGKILLed while bulk jobs are pending (issue 12): the restarted service resumes
polling the jobs it kept rather than writing again; nothing is lost, every person is one record
with their final traits and company, every event arrives.

All real: `serve` and `sandbox` subprocesses, HTTP between them, a SQLite store on disk. Only
outcomes are asserted; the timeouts are generous.
"""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx2
import orjson
import pytest

from tests.support.processes import start_cli, start_serve, stop, wait_ready
from tests.support.server import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

PEOPLE = 60
API_KEY = "bulk-kill-api-key"
APP_TOKEN = "bulk-kill-app-token"
COMPANIES = ["Acme", "Globex", "Initech"]

CONFIG = """
[store]
url = "sqlite:///{db}"

[delivery]
workers = 2
poll_interval = 0.2
lease_seconds = 10.0

[[sources]]
write_key = "wk_bulk_kill"
destination = "crm"
name = "kill"

[destinations.crm]
product = "suite"
base_url = "{base_url}"
allow_custom_base_url = true
api_key = "{api_key}"
app_token = "{app_token}"
events_via = "tracking"
timeout = 4.0
rate_limit_per_hour = 100000
rate_limit_per_minute = 100000
bulk = "auto"
bulk_min_records = 10
"""


def _events() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for p in range(PEOPLE):
        traits = {"email": f"k{p}@example.com", "firstName": "Early", "company": {"name": COMPANIES[p % 3]}}
        out.append({"type": "identify", "userId": f"k{p}", "messageId": f"k{p}-a", "traits": traits})
        out.append({"type": "track", "userId": f"k{p}", "messageId": f"k{p}-t", "event": "Step"})
        out.append({"type": "identify", "userId": f"k{p}", "messageId": f"k{p}-b",
                    "traits": {**traits, "firstName": f"Final{p}"}})
    return out


def _pending(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        row = conn.execute("SELECT (SELECT COUNT(*) FROM messages WHERE status = 'pending') "
                           "+ (SELECT COALESCE(SUM(count), 0) FROM inbox)").fetchone()
    return int(row[0])


def _kept_jobs(db: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        row = conn.execute("SELECT value FROM kv WHERE namespace = 'bulk_jobs' AND key = 'crm'").fetchone()
    jobs: list[dict[str, Any]] = orjson.loads(row[0])["jobs"] if row and row[0] else []
    return jobs


def test_a_service_killed_with_jobs_pending_resumes_them_and_loses_nothing(tmp_path: Path) -> None:
    sandbox_port = free_port()
    root = f"http://127.0.0.1:{sandbox_port}"
    auth = {"Authorization": f"Token token={API_KEY}"}
    sandbox = start_cli(
        ["sandbox", "--port", str(sandbox_port), "--api-key", API_KEY, "--app-token", APP_TOKEN,
         "--rate-limit-per-hour", "100000", "--rate-limit-per-minute", "100000",
         "--bulk-job-seconds", "3"],
        tmp_path / "sandbox.log",
    )
    procs = [sandbox]
    db = tmp_path / "q.db"
    config = tmp_path / "bulk.toml"
    config.write_text(CONFIG.format(db=db, base_url=f"{root}/crm/sales", api_key=API_KEY, app_token=APP_TOKEN))
    try:
        wait_ready(f"{root}/_sandbox/state", sandbox, tmp_path / "sandbox.log", headers=auth)
        port = free_port()
        first = start_serve(config, "all", port, tmp_path / "serve1.log")
        procs.append(first)
        wait_ready(f"http://127.0.0.1:{port}/readyz", first, tmp_path / "serve1.log")
        reply = httpx2.post(f"http://127.0.0.1:{port}/v1/batch", json={"batch": _events()},
                            auth=("wk_bulk_kill", ""), timeout=30)
        assert reply.status_code == 200, reply.text
        # Kill the service while a job it sent (and kept) waits for its result.
        deadline = time.monotonic() + 60
        while not _kept_jobs(db):
            assert time.monotonic() < deadline, "no bulk job was sent"
            time.sleep(0.02)
        kept = {job["id"] for job in _kept_jobs(db)}
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        posts_at_kill = [e for e in _log(root, auth) if e["route"].endswith("/bulk_upsert")]

        port = free_port()
        second = start_serve(config, "all", port, tmp_path / "serve2.log")
        procs.append(second)
        wait_ready(f"http://127.0.0.1:{port}/readyz", second, tmp_path / "serve2.log")
        deadline = time.monotonic() + 180
        while _pending(db):
            assert time.monotonic() < deadline, f"still pending: {_pending(db)}"
            time.sleep(0.2)

        state = httpx2.get(f"{root}/_sandbox/state", headers=auth, timeout=30).json()
        records = state["records"]
        contacts = {c["email"]: c for c in records["contacts"]}
        assert len(records["contacts"]) == PEOPLE  # one record per person
        names = {a["id"]: a["name"] for a in records["sales_accounts"]}
        assert sorted(names.values()) == COMPANIES
        for p in range(PEOPLE):
            contact = contacts[f"k{p}@example.com"]
            assert contact["first_name"] == f"Final{p}"
            assert [names[link["id"]] for link in contact["_sales_accounts"]] == [COMPANIES[p % 3]]
        assert len([t for t in records["tracking"] if "Step" in orjson.dumps(t).decode()]) == PEOPLE
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            statuses = dict(conn.execute("SELECT status, COUNT(*) FROM messages GROUP BY status").fetchall())
        assert statuses == {"delivered": 3 * PEOPLE}
        # The jobs kept at the kill were polled by the new process, not sent again.
        log = _log(root, auth)
        polled = {e["route"].rsplit("/", 1)[1] for e in log if "/job_statuses/" in e["route"]}
        assert kept <= polled
        posts = [e for e in log if e["route"].endswith("/bulk_upsert")]
        assert len(posts) >= len(posts_at_kill)
        assert _kept_jobs(db) == []
    finally:
        for proc in reversed(procs):
            stop(proc)


def _log(root: str, auth: dict[str, str]) -> list[dict[str, Any]]:
    reply = httpx2.get(f"{root}/_sandbox/requests", headers=auth, timeout=30)
    entries: list[dict[str, Any]] = reply.json()["requests"]
    return entries
