from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from freshsales_destination.config import Settings, settings_from_dict
from freshsales_destination.ingest.sorting import IngestCounters
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

    def sorted(self) -> None:
        """Wait until every acknowledged request is sorted out of the inbox into `messages`
        (a 200 only means the request is in the inbox)."""
        wait_sorted(self.app)

    def inbox_commits(self) -> int:
        """Inbox entries committed since start (one per request answered 200)."""
        return int(self.app.state.committer.stats.entries)


def wait_sorted(app: Any, timeout: float = 10) -> None:
    """Block until `app`'s inbox was found empty after its last commit."""
    assert app.state.sorting.wait_sorted(timeout), "the inbox was not sorted in time"


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    settings = make_settings(tmp_path / "q.db")
    store = SQLiteStore(tmp_path / "q.db")
    store.open()
    app = build_app(settings, store)
    with serve_in_thread(app) as url:
        yield Service(url, store, settings, app)
    store.close()


Snapshot = tuple[tuple[int, int], dict[str, int], list[tuple[int, str, str, str]]]


def snapshot(store: SQLiteStore) -> Snapshot:
    """Everything a refused request must leave untouched: what waits in the inbox, the
    message counts and every stored row.

    The inbox is read first: sorting moves an entry from the inbox to `messages` in one
    transaction, so a stray entry is seen in one place or the other, never in neither."""
    inbox = store.inbox_count()
    rows = store.list_messages(limit=1_000_000)
    return inbox, store.count_by_status(), [
        (m.seq, m.source, m.message_id, m.status) for m in rows
    ]


def batch_body(*messages: dict[str, object], **extra: object) -> dict[str, object]:
    return {"writeKey": WRITE_KEY, "batch": list(messages), **extra}


def track(message_id: str, **fields: object) -> dict[str, object]:
    return {"type": "track", "userId": "u1", "event": "Clicked", "messageId": message_id, **fields}
