"""Sorting: a 200 means the request is durably in the inbox; sorting then turns each inbox
entry into its messages, exactly once, in order, whatever the entry holds and however busy
the service is."""

from __future__ import annotations

import itertools
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from freshsales_destination.ingest.sorting import Sorter
from freshsales_destination.service import build_app
from freshsales_destination.store.base import InboxEntry, NewMessage
from freshsales_destination.store.sqlite import SQLiteStore
from tests.ingest.conftest import (
    WRITE_KEY,
    Service,
    batch_body,
    make_settings,
    track,
    wait_sorted,
)
from tests.support.server import serve_in_thread

RECEIVED = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
UNSORTABLE = "the request could not be sorted"


def entry(kind: str, body: Any, *, count: int | None = None, source: str = "web",
          received_at: float = RECEIVED.timestamp()) -> InboxEntry:
    """An inbox entry as ingest writes it (the body is JSON without the writeKey)."""
    if count is None:
        items = body["batch"] if kind == "batch" else body if isinstance(body, list) else [body]
        count = len(items)
    return InboxEntry(source=source, destination="acme", kind=kind, received_at=received_at,
                      count=count, body=orjson.dumps(body))


@pytest.fixture
def offline(tmp_path: Path) -> Iterator[tuple[SQLiteStore, Path]]:
    """A store on a file, with no service running on it yet."""
    db = tmp_path / "q.db"
    store = SQLiteStore(db)
    store.open()
    yield store, db
    store.close()


def _inbox_and_messages(db: Path) -> tuple[int, int]:
    """Messages waiting in the inbox and messages stored, read in one transaction (sorting
    moves messages from one to the other atomically)."""
    with closing(sqlite3.connect(db)) as conn:
        waiting, stored = conn.execute(
            "SELECT (SELECT COALESCE(SUM(count), 0) FROM inbox), (SELECT COUNT(*) FROM messages)"
        ).fetchone()
    return int(waiting), int(stored)


def _in_order(store: SQLiteStore) -> list[StoredRow]:
    return [(m.source, m.message_id, m.type, m.status)
            for m in store.list_messages(limit=1_000_000)]


StoredRow = tuple[str, str, str, str]


# -- through the real server ---------------------------------------------------------------------


def test_a_200_ends_up_in_messages_exactly_once_and_normalised(service: Service) -> None:
    sent_at = datetime.now(UTC)
    happened = sent_at - timedelta(seconds=30)  # the client clock is right: 30 s ago
    body = batch_body(
        track("s-1", timestamp=happened.isoformat()),
        {"type": "identify", "userId": 42, "traits": {"plan": "pro"}},  # no messageId
        sentAt=sent_at.isoformat(),
    )
    started = time.time()
    r = httpx2.post(f"{service.url}/v1/batch", json=body)
    assert r.status_code == 200 and r.json() == {"success": True}
    single = httpx2.post(f"{service.url}/v1/page",
                         json={"writeKey": WRITE_KEY, "anonymousId": "a-1", "messageId": "s-2"})
    assert single.status_code == 200
    # Both requests are durable before their answers: in the inbox, or already sorted.
    waiting, stored = _inbox_and_messages(Path(str(service.store.path)))
    assert waiting + stored == 3

    service.sorted()

    assert service.store.inbox_count() == (0, 0)
    rows = service.store.list_messages(limit=100)
    assert len(rows) == 3  # each message once
    assert [(m.type, m.status) for m in rows] == [
        ("track", "pending"), ("identify", "pending"), ("page", "pending")
    ]
    assert len({m.message_id for m in rows}) == 3
    tracked, identified, paged = (m.normalized() for m in rows)

    # receivedAt is the time of the request, not of sorting.
    received = datetime.fromisoformat(tracked["receivedAt"])
    assert started - 1 <= received.timestamp() <= rows[0].received_at + 0.001
    assert abs(rows[0].received_at - received.timestamp()) < 0.001
    # timestamp = receivedAt - (sentAt - originalTimestamp): 30 s before receipt.
    timestamp = datetime.fromisoformat(tracked["timestamp"])
    assert abs(timestamp - (received - timedelta(seconds=30))) <= timedelta(milliseconds=3)
    assert tracked["messageId"] == "s-1" and "writeKey" not in tracked

    # A message without messageId gets one, stored as its id.
    generated = identified["messageId"]
    assert generated == rows[1].message_id and str(uuid.UUID(generated)) == generated
    assert identified["userId"] == "42" and identified["receivedAt"] == tracked["receivedAt"]
    assert identified["timestamp"] == identified["receivedAt"]  # no client time: receipt

    assert paged["type"] == "page" and paged["messageId"] == "s-2"
    assert "writeKey" not in orjson.loads(rows[2].raw)

    counters = service.ingest_counters()
    assert (counters.requests, counters.accepted, counters.sorted_entries) == (2, 3, 2)
    assert service.inbox_commits() == 2


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        pytest.param("batch", b"not json", id="not-json"),
        pytest.param("batch", b'{"batch": 5}', id="batch-not-a-list"),
        pytest.param("batch", b"[]", id="batch-not-an-object"),
        pytest.param("webhook", b'{"a":', id="webhook-truncated"),
    ],
)
def test_an_entry_that_cannot_be_sorted_does_not_block_the_next(
    service: Service, kind: str, body: bytes
) -> None:
    service.sorted()  # the start-up pass over the (empty) inbox is done
    corrupt = InboxEntry(source="web", destination="acme", kind=kind,
                         received_at=time.time(), count=1, body=body)
    service.store.inbox_append([corrupt])
    # The next request, behind it in the inbox.
    r = httpx2.post(f"{service.url}/v1/batch",
                    json=batch_body(track("after-1"), track("after-2")))
    assert r.status_code == 200

    service.sorted()

    assert service.store.inbox_count() == (0, 0)
    rows = service.store.list_messages(limit=100)
    assert [(m.message_id, m.status) for m in rows[1:]] == [
        ("after-1", "pending"), ("after-2", "pending")
    ]
    kept = rows[0]  # first: it was first in the inbox
    assert kept.status == "discarded"
    assert kept.reason is not None and kept.reason.startswith(UNSORTABLE), kept.reason
    assert (kept.source, kept.type, kept.raw) == ("web", kind, body)  # kept whole, as received
    assert kept.normalized() == {"messageId": kept.message_id}
    counters = service.ingest_counters()
    assert (counters.discarded, counters.accepted, counters.sorted_entries) == (1, 2, 2)


def test_entries_left_in_the_inbox_are_sorted_after_start_in_order(
    offline: tuple[SQLiteStore, Path],
) -> None:
    store, db = offline
    left = [
        entry("batch", {"batch": [track("l-1"), track("dup", event="First")],
                        "context": {"locale": "en"}}),
        entry("track", {"userId": "u2", "event": "Single", "messageId": "l-2"}),
        entry("webhook", [{"type": "identify", "userId": "u3", "messageId": "l-3"},
                          track("dup", event="Second"),
                          {"type": "delete", "userId": "u3", "messageId": "l-4"}]),
        entry("batch", {"batch": [track("l-5")]}),
    ]
    store.inbox_append(left)
    assert store.inbox_count() == (4, 7)
    assert store.list_messages() == []

    # Small chunks: the order holds across several sorting transactions too.
    app = build_app(make_settings(db, sort_chunk_messages=2), store, deliver=False)
    with serve_in_thread(app):
        wait_sorted(app)
        counters = app.state.ingest.counters

    assert store.inbox_count() == (0, 0)
    assert _in_order(store) == [
        ("web", "l-1", "track", "pending"),
        ("web", "dup", "track", "pending"),
        ("web", "l-2", "track", "pending"),
        ("web", "l-3", "identify", "pending"),
        ("web", "l-4", "delete", "pending"),  # webhook entries accept every type
        ("web", "l-5", "track", "pending"),
    ]
    dup = store.get_message("web", "dup")
    assert dup is not None and dup.normalized()["event"] == "First"  # the first one is kept
    first = store.get_message("web", "l-1")
    assert first is not None
    assert first.normalized()["context"] == {"locale": "en"}
    assert first.normalized()["receivedAt"] == "2024-05-01T12:00:00.000Z"  # from the inbox
    assert first.received_at == RECEIVED.timestamp()
    assert (counters.accepted, counters.duplicates, counters.sorted_entries) == (6, 1, 4)
    assert app.state.sorting.stats.chunks >= 4  # one entry per chunk here


def test_sorting_progresses_while_requests_keep_arriving(service: Service) -> None:
    stop = threading.Event()
    acked: list[str] = []
    failures: list[str] = []

    def load() -> None:
        with httpx2.Client(timeout=10) as client:
            for n in itertools.count():
                if stop.is_set():
                    return
                ids = [f"load-{n}-{i}" for i in range(10)]
                r = client.post(f"{service.url}/v1/batch",
                                json=batch_body(*[track(m) for m in ids]))
                if r.status_code != 200:
                    failures.append(r.text)
                    return
                acked.extend(ids)

    def stored() -> int:
        return sum(service.store.count_by_status().values())

    sender = threading.Thread(target=load, daemon=True)
    sender.start()
    try:
        # Let the load run for a second (the inbox builds a backlog, sorting is held to its
        # busy share), then watch the messages while it goes on.
        warmed = time.monotonic() + 1.0
        deadline = time.monotonic() + 20
        while (len(acked) < 200 or time.monotonic() < warmed) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(acked) >= 200 and sender.is_alive(), failures
        first_seen = stored()
        grew_to = first_seen
        while grew_to <= first_seen and time.monotonic() < deadline:
            time.sleep(0.05)
            grew_to = stored()
        assert grew_to > first_seen, "sorting made no progress while requests kept arriving"
        # The load was still going on when sorting was seen making progress: requests are
        # still being answered after it.
        acked_then = len(acked)
        while len(acked) == acked_then and sender.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sender.is_alive() and not failures
        assert len(acked) > acked_then
    finally:
        stop.set()
        sender.join(10)

    service.sorted()
    rows = service.store.list_messages(limit=1_000_000)
    assert sorted(m.message_id for m in rows) == sorted(acked)  # each one once
    assert service.store.inbox_count() == (0, 0)


class FlakySortStore(SQLiteStore):
    """A real store whose first sorting transaction fails (a disk error mid-sort)."""

    failures = 1

    def inbox_sorted(
        self, entries: Sequence[InboxEntry], messages: Sequence[NewMessage]
    ) -> list[bool]:
        if self.failures:
            self.failures -= 1
            raise OSError("disk I/O error")
        return super().inbox_sorted(entries, messages)


def test_a_failed_sorting_transaction_loses_nothing_and_is_retried(tmp_path: Path) -> None:
    store = FlakySortStore(tmp_path / "q.db")
    store.open()
    app = build_app(make_settings(tmp_path / "q.db"), store, deliver=False)
    try:
        with serve_in_thread(app) as url:
            r = httpx2.post(f"{url}/v1/batch", json=batch_body(track("r-1"), track("r-2")))
            assert r.status_code == 200
            wait_sorted(app)
            stats = app.state.sorting.stats
            # The chunk failed, the entry alone then went through: nothing was discarded.
            assert (store.failures, stats.isolated) == (0, 0)
        assert [m.message_id for m in store.list_messages()] == ["r-1", "r-2"]
        assert store.inbox_count() == (0, 0)
    finally:
        store.close()


# -- Sorter.expand, without a server -------------------------------------------------------------


def _sorter(max_message_bytes: int = 32 * 1024) -> Sorter:
    counter = itertools.count(1)
    return Sorter(max_message_bytes=max_message_bytes, new_id=lambda: f"gen-{next(counter)}")


def test_expand_merges_batch_context_and_integrations_into_each_message() -> None:
    body = {
        "batch": [
            {"type": "identify", "userId": "u1", "messageId": "b-1",
             "context": {"locale": "fr", "ip": "1.2.3.4"}, "integrations": {"Salesforce": False}},
            {"type": "track", "userId": "u1", "event": "E", "messageId": "b-2",
             "timestamp": "2024-05-01T11:00:00.000Z", "writeKey": "wk-in-a-message"},
            {"type": "track", "userId": "u1", "event": "E", "messageId": "b-3",
             "integrations": {"All": False}},
        ],
        "context": {"locale": "en", "library": {"name": "lib"}},
        "integrations": {"All": True, "Mixpanel": False},
        "sentAt": "2024-05-01T11:00:10.000Z",  # sent 10 s after the event, by its own clock
    }
    rows = _sorter().expand([entry("batch", body)])

    assert [(r.message_id, r.type, r.status) for r in rows] == [
        ("b-1", "identify", "pending"), ("b-2", "track", "pending"), ("b-3", "track", "filtered")
    ]
    first, second, third = (orjson.loads(r.message) for r in rows)
    assert first["context"] == {"locale": "fr", "ip": "1.2.3.4", "library": {"name": "lib"}}
    assert first["integrations"] == {"All": True, "Mixpanel": False, "Salesforce": False}
    assert second["context"] == {"locale": "en", "library": {"name": "lib"}}
    assert second["integrations"] == {"All": True, "Mixpanel": False}
    assert third["integrations"] == {"All": False, "Mixpanel": False}  # its own switch wins
    assert second["receivedAt"] == "2024-05-01T12:00:00.000Z"
    assert second["timestamp"] == "2024-05-01T11:59:50.000Z"  # corrected by the batch sentAt
    assert second["originalTimestamp"] == "2024-05-01T11:00:00.000Z"
    assert "writeKey" not in second and "writeKey" not in orjson.loads(rows[1].raw)
    assert all(r.source == "web" and r.destination == "acme" for r in rows)
    assert all(r.received_at == RECEIVED.timestamp() for r in rows)


def test_expand_a_webhook_entry_with_an_array_and_with_an_object() -> None:
    array = [
        {"type": "identify", "userId": "w", "messageId": "w-1"},
        {"type": "delete", "userId": "w", "messageId": "w-2"},
        {"type": "track", "userId": "w", "event": "E"},
        "not a message",
    ]
    rows = _sorter().expand([entry("webhook", array, source="hook"),
                             entry("webhook", {"type": "alias", "userId": "w",
                                               "previousId": "old", "messageId": "w-5"})])
    assert [(r.source, r.message_id, r.type, r.status, r.reason) for r in rows] == [
        ("hook", "w-1", "identify", "pending", None),
        ("hook", "w-2", "delete", "pending", None),  # accepted on the webhook endpoint
        ("hook", "gen-1", "track", "pending", None),
        ("hook", "gen-2", "invalid", "discarded", "message is not a JSON object"),
        ("web", "w-5", "alias", "pending", None),
    ]
    assert orjson.loads(rows[3].raw) == "not a message"


def test_expand_a_single_entry_takes_its_type_from_the_endpoint() -> None:
    body = {"type": "identify", "userId": 7, "event": "Signed Up", "properties": {"p": 1}}
    (row,) = _sorter().expand([entry("track", body)])
    message = orjson.loads(row.message)
    assert (row.type, row.status, row.lane) == ("track", "pending", "u:7")
    assert message["type"] == "track" and message["userId"] == "7"
    assert message["messageId"] == row.message_id == "gen-1"
    assert message["receivedAt"] == message["timestamp"] == "2024-05-01T12:00:00.000Z"
    assert message["properties"] == {"p": 1}
    assert orjson.loads(row.raw) == body


def test_expand_keeps_an_unsortable_entry_whole_between_good_ones() -> None:
    bad = InboxEntry(source="web", destination="acme", kind="batch",
                     received_at=RECEIVED.timestamp(), count=2, body=b"not json")
    rows = _sorter().expand([entry("batch", {"batch": [track("g-1")]}), bad,
                             entry("batch", {"batch": [track("g-2")]})])
    assert [(r.message_id, r.status) for r in rows] == [
        ("g-1", "pending"), ("gen-1", "discarded"), ("g-2", "pending")
    ]
    assert rows[1].reason == f"{UNSORTABLE}: JSONDecodeError" and rows[1].raw == b"not json"


# Whatever ingest acknowledges, sorting can expand: one row per message, never an
# "unsortable" entry (that is only for corruption).
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
_field = _json | st.sampled_from(
    ["identify", "track", "group", "alias", "page", "screen", "delete", "u1",
     "2024-05-01T12:00Z", "9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+14:00"]
)
_message = st.dictionaries(
    st.sampled_from(["type", "userId", "anonymousId", "event", "groupId", "previousId",
                     "messageId", "timestamp", "originalTimestamp", "sentAt", "traits",
                     "context", "integrations", "properties", "writeKey"]),
    _field, max_size=8,
)
_entries = st.one_of(
    st.fixed_dictionaries(
        {"batch": st.lists(_message | _json, max_size=5)},
        optional={"context": _json, "integrations": _json, "sentAt": _field},
    ).map(lambda body: entry("batch", body)),
    st.one_of(_message, st.lists(_message | _json, max_size=5)).map(
        lambda body: entry("webhook", body)),
    st.tuples(st.sampled_from(["identify", "track", "page", "screen", "group", "alias"]),
              _message).map(lambda pair: entry(pair[0], pair[1])),
)


@settings(max_examples=200, deadline=None)
@given(entries=st.lists(_entries, min_size=1, max_size=3))
def test_expand_sorts_every_acknowledgeable_entry(entries: list[InboxEntry]) -> None:
    rows = _sorter(max_message_bytes=1 << 20).expand(entries)
    assert len(rows) == sum(e.count for e in entries)
    for row in rows:
        assert not (row.reason or "").startswith(UNSORTABLE), row.reason
        assert row.status in ("pending", "discarded", "filtered")
        message = orjson.loads(row.message)
        assert message["messageId"] == row.message_id
        assert "writeKey" not in message
