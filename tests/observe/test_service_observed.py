"""A real `serve --config` process, the sandbox as Freshsales: what ``/metrics`` and the logs
say as events are delivered, discarded and dead-lettered.

One scenario, read two ways: the metrics page (names, labels, values that move; no user id,
email or secret in it) and the JSON log on stderr (every line JSON, uvicorn's too; one line
per dead letter; none per poll; no secret).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest

from freshsales_destination.sandbox import SandboxOptions
from freshsales_destination.sandbox.testing import RunningSandbox, running_sandbox
from tests.support.processes import clean_env, start_cli, stop, wait_ready
from tests.support.server import free_port

pytestmark = pytest.mark.slow

WRITE_KEY = "wk_observed_write_key_77"
API_KEY = "observed-api-key-5150"
APP_TOKEN = "observed-app-token-4242"
ADMIN_TOKEN = "adm_observed_token_9000"
DEAD_USER = "user-dead-31337"
DEAD_EMAIL = "dead.person@example.com"
GOOD_USER = "user-good-27182"
GOOD_EMAIL = "good.person@example.com"
SECRETS = (WRITE_KEY, API_KEY, APP_TOKEN, ADMIN_TOKEN)
PERSONAL = (DEAD_USER, DEAD_EMAIL, GOOD_USER, GOOD_EMAIL)

CONFIG = """
[server]
admin_token = "{admin}"
metrics = "{metrics}"

[store]
url = "sqlite:///{db}"

[delivery]
poll_interval = 0.05

[[sources]]
write_key = "{write_key}"
destination = "crm"
name = "web"

[destinations.crm]
product = "suite"
base_url = "{base_url}"
allow_custom_base_url = true
api_key = "{api_key}"
app_token = "{app_token}"
rate_limit_per_hour = 100000
rate_limit_per_minute = 10000
"""


@dataclass
class Service:
    base: str
    log: Path
    sandbox: RunningSandbox


def _config(tmp_path: Path, sandbox: RunningSandbox, metrics: str = "public") -> Path:
    path = tmp_path / f"config-{metrics}.toml"
    path.write_text(CONFIG.format(
        admin=ADMIN_TOKEN, metrics=metrics, db=tmp_path / "queue.db", write_key=WRITE_KEY,
        base_url=sandbox.base_url, api_key=API_KEY, app_token=APP_TOKEN,
    ))
    return path


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    with running_sandbox(SandboxOptions(api_key=API_KEY, app_token=APP_TOKEN)) as sandbox:
        port = free_port()
        log = tmp_path / "serve.log"
        process = start_cli(
            ["serve", "--config", str(_config(tmp_path, sandbox)), "--port", str(port),
             "--log-format", "json"],
            log, clean_env(),
        )
        base = f"http://127.0.0.1:{port}"
        try:
            wait_ready(f"{base}/readyz", process, log)
            yield Service(base, log, sandbox)
        finally:
            stop(process)


def _samples(page: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The page's samples by (name, labels)."""
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for line in page.splitlines():
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)", line)
        assert match, line
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        out[(match.group(1), labels)] = float(match.group(3))
    return out


def _value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
           **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels` (0 when none)."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def _scrape(base: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = httpx2.get(f"{base}/metrics")
    assert response.status_code == 200
    return _samples(response.text)


def _wait_for(base: str, name: str, at_least: float, **labels: str) -> None:
    deadline = time.monotonic() + 30
    while _value(_scrape(base), name, **labels) < at_least:
        assert time.monotonic() < deadline, f"{name}{labels} stayed under {at_least}"
        time.sleep(0.1)


def _send(base: str, path: str, body: dict[str, object]) -> None:
    response = httpx2.post(f"{base}/v1/{path}", json=body, auth=(WRITE_KEY, ""))
    assert response.status_code == 200, response.text


def _json_lines(log: Path) -> list[dict[str, object]]:
    lines = [line for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not a JSON log line: {line!r}") from None
    return parsed


M = "freshsales_destination_"


def test_metrics_and_logs_follow_delivery(service: Service) -> None:
    base = service.base
    before = _scrape(base)
    assert _value(before, f"{M}store_up") == 1
    assert _value(before, f"{M}destination_healthy", destination="crm") == 1
    assert _value(before, f"{M}budget_remaining_calls", destination="crm", window="hour") > 0

    # The first contact write is refused for good: its message is dead-lettered.
    httpx2.post(
        f"{service.sandbox.root_url}/_sandbox/script",
        json={"method": "POST", "path": "/api/contacts/upsert", "responses": [
            {"status": 400, "body": {"errors": {"code": 400, "message": ["Email is invalid"]}}}
        ]},
        headers=service.sandbox.auth_headers,
    ).raise_for_status()
    _send(base, "identify", {"userId": DEAD_USER, "traits": {"email": DEAD_EMAIL}})
    _wait_for(base, f"{M}messages_dead_total", 1, destination="crm")
    _send(base, "identify", {"userId": GOOD_USER, "traits": {"email": GOOD_EMAIL}})
    _send(base, "track", {"userId": GOOD_USER})  # no event name: discarded when sorted
    _wait_for(base, f"{M}messages_delivered_total", 1, destination="crm", type="identify")

    page = httpx2.get(f"{base}/metrics").text
    after = _samples(page)
    assert _value(after, f"{M}messages_received_total", destination="crm", type="identify") == 2
    assert _value(after, f"{M}messages_received_total", destination="crm", type="track") == 1
    assert _value(after, f"{M}messages_discarded_total", destination="crm", type="track",
                  reason="missing_event_name") == 1
    assert _value(after, f"{M}messages_dead_total", destination="crm", type="identify",
                  reason="http_400") == 1
    assert _value(after, f"{M}messages_delivered_total", destination="crm", type="identify") == 1
    assert _value(after, f"{M}freshsales_calls_total", destination="crm", method="POST",
                  route="/api/contacts/upsert", status="http_400") == 1
    assert _value(after, f"{M}freshsales_calls_total", destination="crm", method="POST",
                  route="/api/contacts/upsert", status="http_200") >= 1
    assert _value(after, f"{M}delivery_latency_seconds_count", destination="crm") == 1
    assert _value(after, f"{M}ingest_request_seconds_count", endpoint="tracking") >= 3
    assert _value(after, f"{M}backlog_messages", destination="crm", status="dead") == 1
    assert _value(after, f"{M}backlog_messages", destination="crm", status="pending") == 0
    assert _value(after, f"{M}oldest_pending_age_seconds", destination="crm") == 0
    assert _value(after, f"{M}sorting_backlog_messages") == 0
    assert _value(after, f"{M}destination_health", destination="crm", state="healthy") == 1
    # Every label value comes from a bounded set: no person, no secret, no free text.
    for secret in (*SECRETS, *PERSONAL, "Email is invalid"):
        assert secret not in page, secret
    routes = {dict(ls)["route"] for (n, ls) in after if n == f"{M}freshsales_calls_total"}
    assert all(re.fullmatch(r"(/[a-z_]+|/\{id\})+", r) for r in routes), routes

    # The log: JSON throughout, uvicorn's lines included, one line for the dead letter.
    idle_from = len(_json_lines(service.log))
    time.sleep(1.0)  # about 20 polls at poll_interval = 0.05
    lines = _json_lines(service.log)
    idle = [e for e in lines[idle_from:] if e.get("kind") != "delivery_summary"]  # once a minute
    assert idle == [], "lines logged while idle (one per poll?)"
    assert any(
        e.get("logger") == "uvicorn.error" and "Application startup complete" in str(e["event"])
        for e in lines
    )
    assert all({"event", "level", "timestamp", "logger"} <= e.keys() for e in lines)
    dead = [e for e in lines if e.get("kind") == "dead_letter"]
    assert len(dead) == 1, dead
    assert dead[0]["destination"] == "crm" and dead[0]["reason_code"] == "http_400"
    assert dead[0]["level"] == "warning" and dead[0]["type"] == "identify"
    # Its attempts (dead on its first 400: one) and Freshsales' answer, as fields.
    assert dead[0]["attempts"] == 1 and dead[0]["error"].startswith("HTTP 400")
    text = service.log.read_text(encoding="utf-8")
    for secret in SECRETS:
        assert secret not in text, secret


def test_metrics_modes(tmp_path: Path) -> None:
    """``server.metrics``: "admin" asks for the admin token, "off" serves nothing."""
    from freshsales_destination.config import load_settings
    from freshsales_destination.service import build_app
    from freshsales_destination.store.factory import open_store
    from tests.support.server import serve_in_thread

    with running_sandbox(SandboxOptions(api_key=API_KEY, app_token=APP_TOKEN)) as sandbox:
        for mode, anonymous, with_token in (("public", 200, 200), ("admin", 401, 200),
                                            ("off", 404, 404)):
            settings = load_settings(_config(tmp_path, sandbox, mode))
            store = open_store(settings.store.url)
            try:
                with serve_in_thread(build_app(settings, store, deliver=False)) as base:
                    plain = httpx2.get(f"{base}/metrics")
                    wrong = httpx2.get(f"{base}/metrics",
                                       headers={"Authorization": "Bearer not-the-token"})
                    right = httpx2.get(f"{base}/metrics",
                                       headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
            finally:
                store.close()
            assert (plain.status_code, right.status_code) == (anonymous, with_token), mode
            assert wrong.status_code == (401 if mode == "admin" else anonymous), mode
            if mode == "admin":
                assert plain.json()["code"] == "unauthorized"
                assert ADMIN_TOKEN not in plain.text
            if right.status_code == 200:
                assert f"{M}store_up 1.0" in right.text


def test_admin_metrics_need_a_token(tmp_path: Path) -> None:
    from freshsales_destination.config import settings_from_dict
    from freshsales_destination.errors import ConfigError

    with pytest.raises(ConfigError, match="admin_token"):
        settings_from_dict({"server": {"metrics": "admin"}})


def test_several_serving_processes_count_together(tmp_path: Path) -> None:
    """With server.workers = 2 a scrape reaches either process; each page sums both."""
    with running_sandbox(SandboxOptions(api_key=API_KEY, app_token=APP_TOKEN)) as sandbox:
        config = _config(tmp_path, sandbox)
        config.write_text(config.read_text().replace("[server]\n", "[server]\nworkers = 2\n"))
        port = free_port()
        log = tmp_path / "serve.log"
        process = start_cli(
            ["serve", "--config", str(config), "--port", str(port), "--log-format", "json"],
            log, clean_env(),
        )
        base = f"http://127.0.0.1:{port}"
        try:
            wait_ready(f"{base}/readyz", process, log)
            for i in range(12):  # a new connection each: both processes take some
                with httpx2.Client() as client:
                    response = client.post(
                        f"{base}/v1/identify", auth=(WRITE_KEY, ""),
                        json={"userId": f"u{i}", "traits": {"email": f"u{i}@example.com"}},
                    )
                    assert response.status_code == 200
            _wait_for(base, f"{M}messages_delivered_total", 12, destination="crm")
            for _ in range(6):
                with httpx2.Client() as client:
                    samples = _samples(client.get(f"{base}/metrics").text)
                assert _value(samples, f"{M}messages_received_total", destination="crm") == 12
                assert _value(samples, f"{M}messages_delivered_total", destination="crm") == 12
                assert _value(samples, f"{M}backlog_messages", status="pending") == 0
                assert _value(samples, f"{M}store_up") == 1
        finally:
            stop(process)
        lines = _json_lines(log)
        pids = {e["event"] for e in lines if "Started server process" in str(e["event"])}
        assert len(pids) == 2, pids  # two processes, both logging JSON
