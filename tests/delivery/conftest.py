from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest

from freshsales_destination.config import Settings, settings_from_dict
from freshsales_destination.delivery.engine import DeliveryEngine
from freshsales_destination.sandbox import SandboxOptions
from freshsales_destination.sandbox.testing import RunningSandbox, running_sandbox
from freshsales_destination.service import build_app
from freshsales_destination.store.sqlite import SQLiteStore
from tests.support.server import serve_in_thread

WRITE_KEY = "wk_delivery_test"
API_KEY = "sandbox-key-for-tests"
APP_TOKEN = "sandbox-app-token-for-tests"


def delivery_settings(
    db: Path, base_url: str, *, product: str = "suite", app_token: bool = True,
    mapping: dict[str, Any] | None = None, destination: dict[str, Any] | None = None,
    **delivery: Any,
) -> Settings:
    """Settings for one Suite/Classic destination; ``destination`` adds destination keys
    (``timeout``, ``rate_limit_per_minute``, ...), ``delivery`` adds ``[delivery]`` keys."""
    dest: dict[str, Any] = {
        "product": product,
        "base_url": base_url,
        "allow_custom_base_url": True,
        "api_key": API_KEY,
        "mapping": mapping or {},
        # The suite's subject is the single-call path; tests/delivery/test_bulk.py turns bulk on.
        "bulk": "off",
    }
    if app_token:
        dest["app_token"] = APP_TOKEN
    dest.update(destination or {})
    return settings_from_dict(
        {
            "store": {"url": f"sqlite:///{db}"},
            "delivery": {"workers": 1, "backoff_base_seconds": 1, **delivery},
            "sources": [{"write_key": WRITE_KEY, "destination": "crm", "name": "web"}],
            "destinations": {"crm": dest},
        }
    )


class FakeClock:
    """Epoch seconds that only move when told to; shared by the engine and the sandbox."""

    def __init__(self, start: float = 2_000_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        """The engine's short inline waits pass on this clock, not the wall clock."""
        self.advance(seconds)
        await asyncio.sleep(0)


@dataclass
class Pipeline:
    """Ingest over real HTTP, delivery run on demand, the sandbox as Freshsales."""

    ingest_url: str
    store: SQLiteStore
    settings: Settings
    sandbox: RunningSandbox
    app: Any

    def send(self, path: str, body: Any) -> httpx2.Response:
        """Send, then wait until the service sorted the request into the queue (a 200 means
        "in the inbox"), so that delivery run right after sees its messages."""
        response = httpx2.post(f"{self.ingest_url}{path}", json=body, auth=(WRITE_KEY, ""))
        assert response.status_code == 200, response.text
        assert self.app.state.sorting.wait_sorted(30), "the inbox was not sorted"
        return response

    def deliver(self, now: Any = None) -> DeliveryEngine:
        kwargs: dict[str, Any] = {} if now is None else {"now": now}
        if isinstance(now, FakeClock):
            kwargs["sleep"] = now.sleep
        engine = DeliveryEngine.from_settings(self.settings, self.store, **kwargs)

        async def run() -> None:
            try:
                await engine.drain(timeout=60)
            finally:
                await engine.stop()

        asyncio.run(run())
        return engine

    def records(self, kind: str) -> list[dict[str, Any]]:
        return list(self.sandbox.state.snapshot()[kind])


# `FRESHSALES_SANDBOX_READING=pessimistic pytest tests/delivery` runs the end-to-end tests against
# a sandbox playing the pessimistic reading of every behaviour the public record leaves open
# (docs/sandbox.md); a test's own `sandbox_options` still win.
PESSIMISTIC_READING: dict[str, Any] = {"custom_fields": "replace", "account_links": "replace"}


def reading_options() -> dict[str, Any]:
    if os.environ.get("FRESHSALES_SANDBOX_READING", "") == "pessimistic":
        return dict(PESSIMISTIC_READING)
    return {}


def make_pipeline(
    tmp_path: Path, product: str, *, clock: FakeClock | None = None,
    sandbox_options: dict[str, Any] | None = None, **kwargs: Any,
) -> Iterator[Pipeline]:
    """``clock`` also drives the sandbox (its rate limiter and request log), so windows of
    the request log are measured in the engine's time; ``sandbox_options`` tweak the sandbox."""
    options = SandboxOptions(
        api_key=API_KEY, app_token=APP_TOKEN, product=product,  # type: ignore[arg-type]
        **{**reading_options(), **(sandbox_options or {})},
    )
    with running_sandbox(options, clock=clock) as sandbox:
        settings = delivery_settings(tmp_path / "q.db", sandbox.base_url, product=product, **kwargs)
        store = SQLiteStore(tmp_path / "q.db")
        store.open()
        app = build_app(settings, store, deliver=False)
        with serve_in_thread(app) as url:
            yield Pipeline(url, store, settings, sandbox, app)
        store.close()


@pytest.fixture
def suite(tmp_path: Path) -> Iterator[Pipeline]:
    yield from make_pipeline(tmp_path, "suite")


@pytest.fixture
def classic(tmp_path: Path) -> Iterator[Pipeline]:
    yield from make_pipeline(tmp_path, "classic")
