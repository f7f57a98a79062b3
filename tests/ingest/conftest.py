from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from freshsales_destination.config import Settings, settings_from_dict
from freshsales_destination.ingest.app import IngestCounters
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
    app: Any = None

    def ingest_counters(self) -> IngestCounters:
        counters: IngestCounters = self.app.state.ingest.counters
        return counters


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    settings = make_settings(tmp_path / "q.db")
    store = SQLiteStore(tmp_path / "q.db")
    store.open()
    app = build_app(settings, store)
    with serve_in_thread(app) as url:
        yield Service(url, store, settings, app)
    store.close()


def snapshot(store: SQLiteStore) -> tuple[dict[str, int], list[tuple[int, str, str, str]]]:
    """Everything a refused request must leave untouched: counts and every stored row."""
    rows = store.list_messages(limit=1_000_000)
    return store.count_by_status(), [(m.seq, m.source, m.message_id, m.status) for m in rows]


def batch_body(*messages: dict[str, object], **extra: object) -> dict[str, object]:
    return {"writeKey": WRITE_KEY, "batch": list(messages), **extra}


def track(message_id: str, **fields: object) -> dict[str, object]:
    return {"type": "track", "userId": "u1", "event": "Clicked", "messageId": message_id, **fields}
