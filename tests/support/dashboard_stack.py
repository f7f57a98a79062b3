"""The whole service for the dashboard's tests: real uvicorn, real SQLite, delivery running in
the service, and the real sandbox as Freshsales on a port of its own.

``scripted_400`` makes the sandbox refuse the next person writes with Freshsales' validation
error, so those identifies become dead letters; the script is used up by then, which is how a
test "fixes the cause" before retrying them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2

from freshsales_destination.config import Settings, settings_from_dict
from freshsales_destination.sandbox import SandboxOptions
from freshsales_destination.sandbox.testing import RunningSandbox, running_sandbox
from freshsales_destination.service import build_app
from freshsales_destination.store.base import StoredMessage
from freshsales_destination.store.sqlite import SQLiteStore
from tests.support.server import serve_in_thread

ADMIN_TOKEN = "adm-dashboard-test-token-4711"
WRITE_KEY = "wk_dashboard_test_key"
API_KEY = "sbk-dashboard-test-key"
APP_TOKEN = "sbt-dashboard-test-token"
SOURCE = "web"
DESTINATION = "crm"
UPSERT = "/api/contacts/upsert"
WAIT_SECONDS = 60.0  # a bound for a stuck run, never a measure of speed
REFUSAL = "Invalid contact status provided."


@dataclass
class DashboardStack:
    url: str
    store: SQLiteStore
    settings: Settings
    sandbox: RunningSandbox

    def send(self, batch: list[dict[str, Any]]) -> None:
        response = httpx2.post(f"{self.url}/v1/batch", json={"batch": batch},
                               auth=(WRITE_KEY, ""))
        assert response.status_code == 200, response.text

    def scripted_400(self, count: int) -> None:
        answer = {"status": 400, "body": {"errors": {"code": 400, "message": [REFUSAL]}}}
        response = httpx2.post(
            f"{self.sandbox.root_url}/_sandbox/script",
            json={"method": "POST", "path": UPSERT, "responses": [answer] * count},
            headers=self.sandbox.auth_headers,
        )
        assert response.status_code == 200, response.text

    def message(self, message_id: str) -> StoredMessage | None:
        return self.store.get_message(SOURCE, message_id)

    def wait(self, what: str, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + WAIT_SECONDS
        while not ready():
            assert time.monotonic() < deadline, f"gave up waiting: {what}"
            time.sleep(0.05)

    def wait_status(self, message_ids: list[str], *statuses: str) -> None:
        def ready() -> bool:
            found = [self.message(mid) for mid in message_ids]
            return all(m is not None and m.status in statuses for m in found)

        self.wait(f"{message_ids} to be {statuses}", ready)


def identify(user: str, mid: str, **traits: Any) -> dict[str, Any]:
    return {"type": "identify", "userId": user, "messageId": mid,
            "traits": {"email": f"{user}@example.com", "firstName": user.title(), **traits}}


def track(user: str, mid: str, event: str, **properties: Any) -> dict[str, Any]:
    return {"type": "track", "userId": user, "messageId": mid, "event": event,
            "properties": properties}


@contextmanager
def dashboard_stack(tmp_path: Path, *, deliver: bool = True) -> Iterator[DashboardStack]:
    options = SandboxOptions(api_key=API_KEY, app_token=APP_TOKEN, product="suite")
    with running_sandbox(options) as sandbox:
        settings = settings_from_dict({
            "server": {"admin_token": ADMIN_TOKEN},
            "store": {"url": f"sqlite:///{tmp_path / 'q.db'}"},
            "delivery": {"workers": 1, "backoff_base_seconds": 1, "poll_interval": 0.2},
            "sources": [{"write_key": WRITE_KEY, "destination": DESTINATION, "name": SOURCE}],
            "destinations": {DESTINATION: {
                "product": "suite", "base_url": sandbox.base_url, "allow_custom_base_url": True,
                "api_key": API_KEY, "app_token": APP_TOKEN,
            }},
        })
        store = SQLiteStore(tmp_path / "q.db")
        store.open()
        try:
            app = build_app(settings, store, deliver=deliver)
            with serve_in_thread(app, proxy_headers=False) as url:
                yield DashboardStack(url, store, settings, sandbox)
        finally:
            store.close()
