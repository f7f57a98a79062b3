"""Deduplication by (source, messageId): a resent batch is accepted and stored once, durably."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx2

from freshsales_destination.service import build_app
from freshsales_destination.store.sqlite import SQLiteStore
from tests.ingest.conftest import (
    HOOK_KEY,
    WRITE_KEY,
    Service,
    batch_body,
    make_settings,
    track,
    wait_sorted,
)
from tests.support.server import serve_in_thread


def _rows(db: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(db) as conn:
        return [(str(s), str(m)) for s, m in
                conn.execute("SELECT source, message_id FROM messages ORDER BY seq")]


def test_resent_batch_is_accepted_and_stored_once(service: Service) -> None:
    body = batch_body(*[track(f"d-{i}") for i in range(50)])
    for _ in range(3):
        r = httpx2.post(f"{service.url}/v1/batch", json=body)
        assert r.status_code == 200 and r.json() == {"success": True}
    service.sorted()
    assert service.store.count_by_status() == {"pending": 50}
    counters = service.ingest_counters()
    assert (counters.accepted, counters.duplicates) == (50, 100)


def test_duplicates_inside_one_batch_keep_the_first(service: Service) -> None:
    body = batch_body(track("same", event="First"), track("same", event="Second"),
                      track("other"))
    assert httpx2.post(f"{service.url}/v1/batch", json=body).status_code == 200
    service.sorted()
    stored = service.store.get_message("web", "same")
    assert stored is not None and stored.normalized()["event"] == "First"
    assert service.store.count_by_status() == {"pending": 2}


def test_partly_resent_batch_stores_only_the_new_messages(service: Service) -> None:
    first = batch_body(*[track(f"p-{i}") for i in range(10)])
    second = batch_body(*[track(f"p-{i}") for i in range(5, 15)])
    assert httpx2.post(f"{service.url}/v1/batch", json=first).status_code == 200
    assert httpx2.post(f"{service.url}/v1/batch", json=second).status_code == 200
    service.sorted()
    assert service.store.count_by_status() == {"pending": 15}


def test_dedup_is_per_source(service: Service) -> None:
    assert httpx2.post(f"{service.url}/v1/track",
                       json={"writeKey": WRITE_KEY, **track("shared")}).status_code == 200
    assert httpx2.post(f"{service.url}/webhook/{WRITE_KEY}", json=track("shared")).status_code \
        == 200
    # Same id under another source is a different message (signature checked on that source).
    import hashlib
    import hmac

    import orjson

    from tests.ingest.conftest import HOOK_SECRET

    raw = orjson.dumps(track("shared"))
    sig = hmac.new(HOOK_SECRET.encode(), raw, hashlib.sha1).hexdigest()
    r = httpx2.post(f"{service.url}/webhook/{HOOK_KEY}", content=raw,
                    headers={"Content-Type": "application/json", "X-Signature": sig})
    assert r.status_code == 200
    service.sorted()
    assert sorted(_rows(Path(str(service.store.path)))) == [("hook", "shared"), ("web", "shared")]


def test_dedup_survives_a_server_restart_on_the_same_file(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    settings = make_settings(db)
    body = batch_body(*[track(f"r-{i}") for i in range(20)])

    for round_ in range(2):
        store = SQLiteStore(db)
        store.open()
        app = build_app(settings, store)
        with serve_in_thread(app) as url:
            r = httpx2.post(f"{url}/v1/batch", json=body)
            assert r.status_code == 200, (round_, r.text)
            extra = httpx2.post(f"{url}/v1/track",
                                json={"writeKey": WRITE_KEY, **track(f"new-{round_}")})
            assert extra.status_code == 200
            wait_sorted(app)
        counters = app.state.ingest.counters
        # The second round found every message of the batch already stored.
        assert (counters.accepted, counters.duplicates) == ((21, 0) if round_ == 0 else (1, 20))
        store.close()

    rows = _rows(db)
    assert len(rows) == len(set(rows)) == 22
    assert {m for _, m in rows} == {f"r-{i}" for i in range(20)} | {"new-0", "new-1"}


def test_a_resend_within_seven_days_is_still_a_duplicate_after_pruning(tmp_path: Path) -> None:
    import time

    db = tmp_path / "q.db"
    settings = make_settings(db)
    store = SQLiteStore(db)
    store.open()
    clock = {"now": time.time() - 6.9 * 86_400}  # received almost 7 days ago
    app = build_app(settings, store, now=lambda: clock["now"], deliver=False)
    body = batch_body(track("old-1", integrations={"All": False}))  # finished at once (filtered)
    with serve_in_thread(app) as url:
        assert httpx2.post(f"{url}/v1/batch", json=body).status_code == 200
        wait_sorted(app)
        assert store.count_by_status() == {"filtered": 1}
        clock["now"] = time.time()
        # Housekeeping keeps the dedup window: nothing younger than dedup_days is forgotten.
        assert store.prune(older_than=time.time() - settings.store.dedup_days * 86_400) == 0
        assert httpx2.post(f"{url}/v1/batch", json=body).status_code == 200
        wait_sorted(app)
    assert store.count_by_status() == {"filtered": 1}
    assert app.state.ingest.counters.duplicates == 1
    store.close()
