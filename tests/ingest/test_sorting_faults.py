"""Sorting when the store refuses something: one refused entry never blocks the inbox, and a
store that is down loses nothing; plus what a store can refuse (PostgreSQL: NUL characters,
oversized index keys) never reaching it, a batch context too large to copy, and the API
served below a path prefix."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx2
import orjson
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from freshsales_destination.errors import StoreRefused, StoreUnavailable
from freshsales_destination.ingest.sort_loop import InboxSorting, SortPolicy
from freshsales_destination.ingest.sorting import Sorter
from freshsales_destination.service import build_app
from freshsales_destination.store.base import InboxEntry, NewMessage, Store
from freshsales_destination.store.sqlite import SQLiteStore
from tests.contract.conftest import PgSchema
from tests.ingest.conftest import batch_body, make_settings, track, wait_sorted
from tests.support.server import serve_in_thread

UNSORTABLE = "the request could not be sorted"


class RefusingStore(SQLiteStore):
    """A real store that refuses any sorting transaction holding the message 'poison'."""

    def inbox_sorted(
        self, entries: Sequence[InboxEntry], messages: Sequence[NewMessage]
    ) -> list[bool]:
        if any(m.message_id == "poison" for m in messages):
            raise StoreRefused("value too long for an index entry")
        return super().inbox_sorted(entries, messages)


class DownStore(SQLiteStore):
    """A real store whose writes of sorted messages fail while `down` (the store is
    unavailable: nothing may be discarded for it)."""

    down = True
    refused = 0

    def inbox_sorted(
        self, entries: Sequence[InboxEntry], messages: Sequence[NewMessage]
    ) -> list[bool]:
        if self.down:
            self.refused += 1
            raise StoreUnavailable("disk unavailable")
        return super().inbox_sorted(entries, messages)

    def ping(self) -> None:
        if self.down:
            raise StoreUnavailable("disk unavailable")
        super().ping()


def _post(url: str, *messages: dict[str, Any]) -> None:
    response = httpx2.post(f"{url}/v1/batch", json=batch_body(*messages))
    assert response.status_code == 200, response.text


def test_an_entry_the_store_refuses_becomes_one_discarded_message(tmp_path: Path) -> None:
    store = RefusingStore(tmp_path / "q.db")
    store.open()
    app = build_app(make_settings(tmp_path / "q.db", sort_idle_after=1.0), store, deliver=False)
    try:
        with serve_in_thread(app) as url:
            # Three requests in the inbox before sorting starts (idle only after 1 s), so the
            # refused one sits in the middle of one chunk.
            _post(url, track("before-1"), track("before-2"))
            _post(url, track("poison"), track("beside-poison"))
            _post(url, track("after-1"))
            wait_sorted(app)
            assert app.state.sorting.stats.isolated == 1
        rows = {m.message_id: m for m in store.list_messages(limit=100)}
        assert [rows[i].status for i in ("before-1", "before-2", "after-1")] == ["pending"] * 3
        assert "poison" not in rows and "beside-poison" not in rows
        kept = [m for m in rows.values() if m.status == "discarded"]
        assert len(kept) == 1 and kept[0].reason is not None
        assert kept[0].reason.startswith(UNSORTABLE)
        assert b'"poison"' in kept[0].raw and b'"beside-poison"' in kept[0].raw  # body kept
        assert store.inbox_count() == (0, 0)
    finally:
        store.close()


def test_a_store_that_is_down_discards_nothing_and_sorts_when_back(tmp_path: Path) -> None:
    store = DownStore(tmp_path / "q.db")
    store.open()
    app = build_app(make_settings(tmp_path / "q.db"), store, deliver=False)
    try:
        with serve_in_thread(app) as url:
            _post(url, track("d-1"), track("d-2"))
            assert not app.state.sorting.wait_sorted(2.5)  # it keeps failing, and waits
            assert store.refused >= 3  # the chunk, the entry alone, again a second later
            assert store.inbox_count() == (1, 2)
            store.down = False
            wait_sorted(app)
            assert app.state.sorting.stats.isolated == 0
        assert [(m.message_id, m.status) for m in store.list_messages()] == [
            ("d-1", "pending"), ("d-2", "pending")
        ]
    finally:
        store.close()


@pytest.fixture(params=["sqlite", "postgres"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Store, Path]]:
    db = tmp_path / "q.db"
    store: Store
    if request.param == "sqlite":
        store = SQLiteStore(db)
    else:
        from freshsales_destination.store.postgres import PostgresStore

        pg: PgSchema = request.getfixturevalue("pg_schema")  # skips without PostgreSQL
        store = PostgresStore(pg.dsn, schema=pg.schema, max_size=4)
    store.open()
    yield store, db
    store.close()


def test_ids_a_database_cannot_index_are_stored_and_do_not_block(
    any_store: tuple[Store, Path],
) -> None:
    """A NUL in a userId or messageId (PostgreSQL text refuses NUL) and a 12,000-character
    userId (past PostgreSQL's index entry size) are kept as bounded keys."""
    store, db = any_store
    app = build_app(make_settings(db), store, deliver=False)
    long_user = "u" * 12_000
    with serve_in_thread(app) as url:
        _post(
            url,
            {"type": "identify", "userId": "nul\u0000user", "messageId": "nul-user"},
            {"type": "identify", "userId": long_user, "messageId": "long-user"},
            track("nul\u0000id"),
            track("after"),
        )
        wait_sorted(app)
    rows = {m.message_id: m for m in store.list_messages(limit=100)}
    assert len(rows) == 4 and {m.status for m in rows.values()} == {"pending"}
    nul_user, long = rows["nul-user"], rows["long-user"]
    assert nul_user.lane is not None and "\x00" not in nul_user.lane
    assert long.lane is not None and len(long.lane) <= 200 and long.lane.startswith("u:uuu")
    assert long.normalized()["userId"] == long_user  # the message itself is untouched
    nul_id = [key for key in rows if key.startswith("nulid~")]
    assert len(nul_id) == 1  # NUL dropped from the readable part, the digest keeps it unique
    assert rows["after"].status == "pending"


def test_a_batch_context_too_large_to_copy_into_each_message(tmp_path: Path) -> None:
    """Each message gets a copy of the batch context: with it, at most twice the 32 KB."""
    db = tmp_path / "q.db"
    store = SQLiteStore(db)
    store.open()
    app = build_app(make_settings(db), store, deliver=False)
    try:
        with serve_in_thread(app) as url:
            big = {"note": "x" * 70_000}
            response = httpx2.post(
                f"{url}/v1/batch",
                json={**batch_body(track("c-1"), track("c-2")), "context": big},
            )
            assert response.status_code == 200, response.text
            small = {"locale": "en"}
            response = httpx2.post(
                f"{url}/v1/batch", json={**batch_body(track("c-3")), "context": small}
            )
            assert response.status_code == 200, response.text
            wait_sorted(app)
        rows = {m.message_id: m for m in store.list_messages()}
        for message_id in ("c-1", "c-2"):
            assert rows[message_id].status == "discarded"
            assert rows[message_id].reason == (
                "message with the batch context is larger than 65536 bytes"
            )
            assert len(rows[message_id].message) < 1_000  # no copy of the context kept
        assert rows["c-3"].status == "pending"
        assert rows["c-3"].normalized()["context"] == {"locale": "en"}
    finally:
        store.close()


def test_the_api_answers_below_a_path_prefix(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    store = SQLiteStore(db)
    store.open()
    service = build_app(make_settings(db), store, deliver=False)
    outer = Starlette(
        routes=[Mount("/ingest", app=service)],
        lifespan=lambda _: service.router.lifespan_context(service),  # a Mount runs none
    )
    try:
        with serve_in_thread(outer) as url:
            ok = httpx2.post(f"{url}/ingest/v1/track", json={
                "writeKey": "wk_test_123", "userId": "p", "event": "E", "messageId": "pre-1"})
            assert ok.status_code == 200, ok.text
            wrong = httpx2.get(f"{url}/ingest/v1/track")
            assert wrong.status_code == 405 and wrong.json()["code"] == "method_not_allowed"
            missing = httpx2.post(f"{url}/ingest/v1/nope", json={"writeKey": "wk_test_123"})
            assert missing.status_code == 404 and missing.json()["code"] == "not_found"
            wait_sorted(service)
        assert [m.message_id for m in store.list_messages()] == ["pre-1"]
    finally:
        store.close()


def test_past_max_unsorted_messages_requests_get_429_until_sorting_catches_up(
    tmp_path: Path,
) -> None:
    store = DownStore(tmp_path / "q.db")
    store.open()
    settings = make_settings(tmp_path / "q.db", max_unsorted_messages=5)
    app = build_app(settings, store, deliver=False)
    try:
        with serve_in_thread(app) as url:
            _post(url, track("b-1"), track("b-2"), track("b-3"))
            _post(url, track("b-4"), track("b-5"), track("b-6"))  # 6 unsorted: past 5
            refused = httpx2.post(f"{url}/v1/batch", json=batch_body(track("b-7")))
            assert refused.status_code == 429, refused.text
            assert refused.json()["code"] == "store_saturated"
            assert refused.headers["retry-after"] == "5"
            store.down = False  # sorting catches up
            wait_sorted(app)
            _post(url, track("b-7"))
            wait_sorted(app)
        assert len(store.list_messages()) == 7
    finally:
        store.close()


def test_two_processes_on_one_store_sort_one_at_a_time_and_hand_over(tmp_path: Path) -> None:
    """Two services on one SQLite file, starting on a full inbox: only the lease holder
    sorts (no chunk is expanded twice); the one that finds the inbox empty gives the lease
    back, so entries the other acknowledges are sorted promptly."""
    db = tmp_path / "q.db"
    first, second = SQLiteStore(db), SQLiteStore(db)
    first.open()
    second.open()
    first.inbox_append([
        InboxEntry(source="web", destination="acme", kind="track", received_at=1.7e9, count=1,
                   body=orjson.dumps({"userId": f"u{i}", "event": "E", "messageId": f"p-{i}"}))
        for i in range(3_000)
    ])
    settings = make_settings(db, sort_chunk_messages=50)
    app_a = build_app(settings, first, deliver=False)
    app_b = build_app(settings, second, deliver=False)
    try:
        with serve_in_thread(app_a) as url_a, serve_in_thread(app_b) as url_b:
            wait_sorted(app_a, timeout=60)
            wait_sorted(app_b, timeout=60)
            for round_ in range(3):
                _post(url_a, track(f"a-{round_}"))
                _post(url_b, track(f"b-{round_}"))
                wait_sorted(app_a)
                wait_sorted(app_b)
            stats = [app_a.state.sorting.stats, app_b.state.sorting.stats]
        stored = [m.message_id for m in first.list_messages(limit=10_000)]
        assert len(stored) == len(set(stored)) == 3_006
        assert stored[:3_000] == [f"p-{i}" for i in range(3_000)]  # inbox order kept
        assert first.inbox_count() == (0, 0)
        assert [s.raced for s in stats] == [0, 0]  # never both expanding the same entries
        lease = first.kv_get("ingest", "sorting-lease")
        assert lease is not None and b'"active":false' in lease  # given back when done
    finally:
        first.close()
        second.close()


def test_a_lease_left_by_a_dead_process_passes_on_after_lease_seconds(tmp_path: Path) -> None:
    """Expiry is judged on the waiting process's own clock (a renewal it has not seen move
    for `lease_seconds`), never by comparing wall clocks of two machines."""
    store = SQLiteStore(tmp_path / "q.db")
    store.open()
    try:
        policy = SortPolicy(lease_seconds=10.0)
        clock_a, clock_b = [1_000.0], [5.0]  # unrelated clocks, as on two machines
        a = InboxSorting(store, Sorter(max_message_bytes=32_768), policy=policy,
                         clock=lambda: clock_a[0], wall=lambda: 9e9)  # a's wall clock: far off
        b = InboxSorting(store, Sorter(max_message_bytes=32_768), policy=policy,
                         clock=lambda: clock_b[0], wall=lambda: 0.0)
        assert a._lease(True)
        assert not b._lease(True)  # first sight of a's lease: wait a full lease from now
        clock_b[0] += 9.0
        assert not b._lease(True)
        assert a._lease(True)  # a renews: b starts counting again
        clock_b[0] += 9.0
        assert not b._lease(True)
        clock_b[0] += 10.0  # a died: no renewal for a whole lease on b's clock
        assert b._lease(True)
        assert not a._lease(True)  # and a, if it comes back, waits for b
        assert b._lease(False) is False  # b gives it back...
        assert a._lease(True)  # ...so a takes it at once
    finally:
        store.close()


def test_the_sort_loop_outlives_a_defect_in_one_round(tmp_path: Path) -> None:
    """An unexpected exception in a round (here: recording its outcome) is logged; the loop
    goes on and sorts what comes next."""
    db = tmp_path / "q.db"
    store = SQLiteStore(db)
    store.open()
    app = build_app(make_settings(db), store, deliver=False)
    sorter = app.state.sorting._sorter
    original, calls = sorter.record, []

    def record_once_broken(*args: Any) -> None:
        calls.append(args)
        if len(calls) == 1:
            raise RuntimeError("a defect")
        original(*args)

    sorter.record = record_once_broken
    try:
        with serve_in_thread(app) as url:
            _post(url, track("o-1"))
            deadline = time.monotonic() + 10
            while app.state.sorting.stats.failures == 0:
                assert time.monotonic() < deadline, "the defect never happened"
                time.sleep(0.01)
            _post(url, track("o-2"))
            wait_sorted(app)
        assert [m.message_id for m in store.list_messages()] == ["o-1", "o-2"]
        assert len(calls) >= 2
    finally:
        store.close()


def test_when_the_checkpoint_thread_dies_commits_checkpoint_again(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "q.db")
    store.open()
    try:
        with closing(sqlite3.connect(tmp_path / "q.db")) as probe:
            assert probe.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn = store._conn
        assert conn is not None
        assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        checkpointer = store._checkpointer
        assert checkpointer is not None
        checkpointer.failed = True  # as after a failure inside its thread
        store.inbox_append([InboxEntry(source="web", destination="acme", kind="track",
                                       received_at=1.7e9, count=1, body=b"{}")])
        assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000
        assert store._checkpointer is None
    finally:
        store.close()
