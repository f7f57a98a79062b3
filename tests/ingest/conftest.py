from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from freshsales_destination.config import Settings, settings_from_dict
from freshsales_destination.service import build_app
from freshsales_destination.store.sqlite import SQLiteStore
from tests.support.server import serve_in_thread

WRITE_KEY = "wk_test_123"
HOOK_KEY = "wk_hook_456"
HOOK_SECRET = "s3cret-hook"


def make_settings(db: Path, **server: object) -> Settings:
    return settings_from_dict(
        {
            "server": {"admin_token": "adm-token", **server},
            "store": {"url": f"sqlite:///{db}"},
            "sources": [
                {"write_key": WRITE_KEY, "destination": "acme", "name": "web"},
                {
                    "write_key": HOOK_KEY,
                    "destination": "acme",
                    "name": "hook",
                    "webhook_secret": HOOK_SECRET,
                },
            ],
            "destinations": {"acme": {"domain": "acme", "api_key": "fs-api-key"}},
        }
    )


@dataclass
class Service:
    url: str
    store: SQLiteStore
    settings: Settings


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    settings = make_settings(tmp_path / "q.db")
    store = SQLiteStore(tmp_path / "q.db")
    store.open()
    app = build_app(settings, store)
    with serve_in_thread(app) as url:
        yield Service(url, store, settings)
    store.close()
