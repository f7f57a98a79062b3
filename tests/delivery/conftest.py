from __future__ import annotations

import asyncio
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
    mapping: dict[str, Any] | None = None, **delivery: Any,
) -> Settings:
    dest: dict[str, Any] = {
        "product": product,
        "base_url": base_url,
        "allow_custom_base_url": True,
        "api_key": API_KEY,
        "mapping": mapping or {},
    }
    if app_token:
        dest["app_token"] = APP_TOKEN
    return settings_from_dict(
        {
            "store": {"url": f"sqlite:///{db}"},
            "delivery": {"workers": 1, "backoff_base_seconds": 1, **delivery},
            "sources": [{"write_key": WRITE_KEY, "destination": "crm", "name": "web"}],
            "destinations": {"crm": dest},
        }
    )


@dataclass
class Pipeline:
    """Ingest over real HTTP, delivery run on demand, the sandbox as Freshsales."""

    ingest_url: str
    store: SQLiteStore
    settings: Settings
    sandbox: RunningSandbox

    def send(self, path: str, body: Any) -> httpx2.Response:
        response = httpx2.post(f"{self.ingest_url}{path}", json=body, auth=(WRITE_KEY, ""))
        assert response.status_code == 200, response.text
        return response

    def deliver(self, now: Any = None) -> DeliveryEngine:
        kwargs = {} if now is None else {"now": now}
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


def make_pipeline(tmp_path: Path, product: str, **kwargs: Any) -> Iterator[Pipeline]:
    options = SandboxOptions(api_key=API_KEY, app_token=APP_TOKEN, product=product)  # type: ignore[arg-type]
    with running_sandbox(options) as sandbox:
        settings = delivery_settings(tmp_path / "q.db", sandbox.base_url, product=product, **kwargs)
        store = SQLiteStore(tmp_path / "q.db")
        store.open()
        app = build_app(settings, store, deliver=False)
        with serve_in_thread(app) as url:
            yield Pipeline(url, store, settings, sandbox)
        store.close()


@pytest.fixture
def suite(tmp_path: Path) -> Iterator[Pipeline]:
    yield from make_pipeline(tmp_path, "suite")


@pytest.fixture
def classic(tmp_path: Path) -> Iterator[Pipeline]:
    yield from make_pipeline(tmp_path, "classic")
