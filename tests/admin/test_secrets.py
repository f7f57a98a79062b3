"""No configured secret ever leaves the service: a real `serve` process with an API key, an app
token, write keys, a webhook secret and an admin token receives events, its deliveries fail
(a 500 retried, a 400 dead, a 429) and succeed, an operator retries and drops dead letters;
then no secret may appear in any line it logged (stdout and stderr), in any admin answer, or in
any page or answer of any GET route the app mounts (discovered from the app itself, so the
dashboard, /metrics and later routes are covered as they are added)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import orjson
import pytest
from starlette.routing import BaseRoute, Mount, Route

from freshsales_destination.admin import auth
from freshsales_destination.config import load_settings
from freshsales_destination.sandbox import SandboxOptions
from freshsales_destination.sandbox.testing import RunningSandbox, running_sandbox
from freshsales_destination.service import build_app
from freshsales_destination.store.sqlite import SQLiteStore
from tests.support.processes import start_serve, stop, wait_ready
from tests.support.server import free_port

pytestmark = pytest.mark.slow

SECRETS = {
    "api_key": "fsApiKey-7c1e9d2b44a0",
    "app_token": "fsAppTok-93b7aa01ce55",
    "write_key": "wkWebSecret-51d0f8e2",
    "hook_key": "wkHookSecret-a8c4e013",
    "webhook_secret": "whSecret-0b9e37d1c6",
    "admin_token": "admTok-e45b1c9a7f2d6830",
}

CONFIG = """
[server]
admin_token = "{admin_token}"

[store]
url = "sqlite:///{db}"

[delivery]
poll_interval = 0.05
backoff_base_seconds = 1

[[sources]]
write_key = "{write_key}"
destination = "crm"
name = "web"

[[sources]]
write_key = "{hook_key}"
destination = "crm"
name = "hook"
webhook_secret = "{webhook_secret}"

[destinations.crm]
product = "suite"
base_url = "{base_url}"
allow_custom_base_url = true
api_key = "{api_key}"
app_token = "{app_token}"
rate_limit_per_hour = 100000
rate_limit_per_minute = 10000
"""

UPSERT = "/api/contacts/upsert"


def forms(secret: str) -> list[str]:
    """The ways a secret could be written out: as is, in a Basic or Token header, URL-quoted."""
    return [
        secret,
        base64.b64encode(f"{secret}:".encode()).decode(),
        base64.b64encode(secret.encode()).decode().rstrip("="),
        f"token={secret}",
    ]


def leaks(text: str) -> list[str]:
    return [name for name, secret in SECRETS.items() if any(f in text for f in forms(secret))]


class Service:
    def __init__(
        self, url: str, sandbox: RunningSandbox, config: Path, log: Path,
        process: subprocess.Popen[bytes],
    ) -> None:
        self.process = process
        self.url = url
        self.sandbox = sandbox
        self.config = config
        self.log = log
        self.client = httpx2.Client(
            base_url=url, headers={"Authorization": f"Bearer {SECRETS['admin_token']}"}, timeout=30
        )
        self.answers: list[tuple[str, str]] = []  # (what, text with headers)

    def record(self, what: str, response: httpx2.Response) -> httpx2.Response:
        headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
        self.answers.append((what, f"{headers}\n\n{response.text}"))
        return response

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx2.Response:
        return self.record(f"{method} {path}", self.client.request(method, path, **kwargs))

    def statuses(self) -> dict[str, str]:
        response = self.admin("GET", "/admin/v1/messages", params={"limit": 500})
        assert response.status_code == 200, response.text
        return {m["message_id"]: m["status"] for m in response.json()["messages"]}

    def wait(self, mid: str, status: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while (found := self.statuses().get(mid)) != status:
            assert time.monotonic() < deadline, f"{mid} is {found}, not {status}"
            time.sleep(0.1)

    def script(self, *answers: dict[str, Any], path: str = UPSERT) -> None:
        response = httpx2.post(
            f"{self.sandbox.root_url}/_sandbox/script", headers=self.sandbox.auth_headers,
            json={"method": "POST", "path": path, "responses": list(answers)},
        )
        assert response.status_code == 200, response.text

    def send(self, path: str, body: dict[str, Any]) -> None:
        response = self.record(path, httpx2.post(
            f"{self.url}{path}", json=body, auth=(SECRETS["write_key"], "")))
        assert response.status_code == 200, response.text


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    options = SandboxOptions(api_key=SECRETS["api_key"], app_token=SECRETS["app_token"],
                             product="suite", rate_limit_per_hour=100_000,
                             rate_limit_per_minute=10_000)
    with running_sandbox(options) as sandbox:
        config = tmp_path / "config.toml"
        config.write_text(CONFIG.format(db=tmp_path / "q.db", base_url=sandbox.base_url, **SECRETS))
        port = free_port()
        log = tmp_path / "serve.log"
        process = start_serve(config, "all", port, log)
        try:
            wait_ready(f"http://127.0.0.1:{port}/readyz", process, log)
            yield Service(f"http://127.0.0.1:{port}", sandbox, config, log, process)
        finally:
            stop(process)


def get_routes(config: Path, tmp_path: Path) -> list[str]:
    """The path of every GET route the service mounts (Mounts' routes included), from an app
    built with the same configuration on a scratch store."""
    settings = load_settings(config)
    store = SQLiteStore(tmp_path / "scratch.db")
    store.open()
    try:
        app = build_app(settings, store, deliver=False)
        found: list[str] = []

        def walk(routes: list[BaseRoute], prefix: str) -> None:
            for route in routes:
                if isinstance(route, Route) and "GET" in (route.methods or ()):
                    found.append(prefix + route.path)
                elif isinstance(route, Mount):
                    walk(list(route.routes), prefix + route.path)

        walk(list(app.routes), "")
        return found
    finally:
        store.close()


def test_no_secret_in_logs_answers_pages_or_metrics(service: Service, tmp_path: Path) -> None:
    # Delivered at once; delivered after a 500; held by a 429 then delivered; dead on a 400.
    service.send("/v1/identify", {"userId": "ok", "messageId": "ok-1",
                                  "traits": {"email": "ok@example.com"}})
    service.send("/v1/track", {"userId": "ok", "messageId": "ok-2", "event": "Clicked"})
    service.wait("ok-1", "delivered")
    service.wait("ok-2", "delivered")
    # The 500 answers an event (a contact create answered 500 may have made the record: the
    # retry would first wait for lookups to show it, 30 s).
    service.script({"status": 500, "body": {"errors": {"code": 500, "message": ["Oops"]}}},
                   path="/track/events")
    service.send("/v1/track", {"userId": "ok", "messageId": "re-1", "event": "Retried"})
    service.wait("re-1", "delivered")
    assert [e["status"] for e in service.sandbox.request_log() if e["route"] == "/track/events"][-2:] == [500, 200]
    service.script({"status": 429, "body": {"error_code": 429}, "headers": {"Retry-After": "1"}})
    service.send("/v1/identify", {"userId": "th", "messageId": "th-1",
                                  "traits": {"email": "th@example.com"}})
    service.wait("th-1", "delivered")
    service.script(*[{"status": 400, "body": {"errors": {"code": 400, "message": ["Bad"]}}}] * 2)
    service.send("/v1/identify", {"userId": "de", "messageId": "de-1",
                                  "traits": {"email": "de@example.com"}})
    service.send("/v1/identify", {"userId": "dd", "messageId": "dd-1",
                                  "traits": {"email": "dd@example.com"}})
    service.wait("de-1", "dead")
    service.wait("dd-1", "dead")
    # A signed webhook, a refused one, a wrong write key and a wrong admin token.
    body = orjson.dumps({"type": "identify", "userId": "wh", "messageId": "wh-1",
                         "traits": {"email": "wh@example.com"}})
    signature = hmac.new(SECRETS["webhook_secret"].encode(), body, hashlib.sha1).hexdigest()
    for sig in (signature, "0" * 40):
        service.record("webhook", httpx2.post(
            f"{service.url}/webhook/{SECRETS['hook_key']}", content=body,
            headers={"Content-Type": "application/json", "X-Signature": sig}))
    service.record("wrong key", httpx2.post(f"{service.url}/v1/track", json={"event": "x"},
                                            auth=("wk-wrong", "")))
    service.record("wrong admin", httpx2.get(f"{service.url}/admin/v1/destinations",
                                             headers={"Authorization": "Bearer adm-wrong"}))
    service.wait("wh-1", "delivered")

    # The operator's actions and every reading answer.
    statuses = service.statuses()
    ids = {m["message_id"]: m["id"] for m in service.admin(
        "GET", "/admin/v1/messages", params={"limit": 500}).json()["messages"]}
    assert service.admin("POST", "/admin/v1/dead-letters/retry",
                         json={"ids": [ids["de-1"]]}).json()["changed"] == 1
    assert service.admin("POST", "/admin/v1/dead-letters/drop",
                         json={"ids": [ids["dd-1"]]}).json()["changed"] == 1
    service.wait("de-1", "delivered")
    for body_ in ({"id": ids["ok-1"]}, {"message_id": "ok-2"},
                  {"event": {"type": "identify", "userId": "x", "traits": {"email": "x@y.io"}}}):
        assert service.admin("POST", "/admin/v1/explain", json=body_).status_code == 200
    for window in ("1h", "24h", "7d"):
        service.admin("GET", "/admin/v1/stats", params={"window": window})

    # Every GET route the app mounts, with the Bearer token and with a browser session.
    session = auth.session_cookie_value(SECRETS["admin_token"], time.time())
    routes = get_routes(service.config, tmp_path)
    assert {"/admin/v1/destinations", "/admin/v1/messages/{id}", "/healthz", "/metrics",
            "/dashboard", "/dashboard/messages/{id}"} <= set(routes)
    visited = 0
    for route in routes:
        path = re.sub(r"\{id(:\w+)?\}", str(ids["de-1"]), route)
        path = re.sub(r"\{[^}]+\}", "x", path)
        for headers in ({}, {"Cookie": f"{auth.SESSION_COOKIE}={session}"}):
            response = service.admin("GET", path, headers=headers)
            visited += 1
            assert response.status_code < 500, (path, response.text)
    assert visited >= 2 * 9
    # The pages and the metrics were answered, with what they show: the check saw them whole.
    metrics = service.admin("GET", "/metrics")
    assert metrics.status_code == 200 and "crm" in metrics.text
    page = service.admin("GET", "/dashboard")
    assert page.status_code == 200 and "crm" in page.text
    journey_page = service.admin("GET", f"/dashboard/messages/{ids['de-1']}")
    assert journey_page.status_code == 200 and "de@example.com" in journey_page.text

    log_text = _stop_and_read(service)

    # The checks could fail: the run did what it claims.
    assert statuses["ok-1"] == "delivered" and statuses["th-1"] == "delivered"
    assert any(a[0] == "GET /admin/v1/messages/{}".format(ids["de-1"]) for a in service.answers)
    assert "429" in log_text, "the throttle was not logged: the log checked is not the service's"
    found = [what for what, text in service.answers if leaks(text)]
    assert found == [], f"secrets in answers: {[(w, leaks(t)) for w, t in service.answers if leaks(t)]}"
    assert leaks(log_text) == [], "secrets in the log:\n" + "\n".join(
        line for line in log_text.splitlines() if leaks(line))


def _stop_and_read(service: Service) -> str:
    """Stop the process (its shutdown lines count too) and read everything it wrote."""
    service.client.close()
    stop(service.process)
    return service.log.read_text(errors="replace")
