"""Released lanes and ending holds wake workers (store/wakeups.py), not the slow poll.

Every engine here polls every LONG_POLL seconds, beyond each test's timeout: work is only
delivered in time if a wake-up reached a worker. Where a test can, it asserts the wake-up
itself (a timer set, a notification sent), not a speed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from freshsales_destination.config import Settings
from freshsales_destination.delivery.engine import DeliveryEngine
from freshsales_destination.sandbox.testing import RunningSandbox, running_sandbox
from freshsales_destination.store.base import Store
from freshsales_destination.store.postgres import PostgresStore
from freshsales_destination.store.sqlite import SQLiteStore
from freshsales_destination.store.wakeups import WorkSignal
from tests.contract.conftest import PgSchema
from tests.delivery.test_wakeups import LONG_POLL, OPTIONS, WITHIN, _contacts, _identify


def _settings(url: str, sandbox: RunningSandbox, destinations: tuple[str, ...] = ("crm",),
              ) -> Settings:
    return Settings.model_validate({
        "store": {"url": url},
        "delivery": {"workers": 1, "poll_interval": LONG_POLL},
        "sources": [{"write_key": "wk_wake", "destination": destinations[0], "name": "wake"}],
        "destinations": {name: {
            "product": "suite", "base_url": sandbox.base_url, "allow_custom_base_url": True,
            "api_key": "wake-api-key", "app_token": "wake-app-token",
            "rate_limit_per_hour": 100000, "rate_limit_per_minute": 10000,
        } for name in destinations},
    })


class _TwoStores:
    """Two store objects on one database: `here` delivers, `there` is another process (no
    in-process signal reaches `here`'s workers from it)."""

    def __init__(self, here: Store, there: Store, url: str) -> None:
        self.here, self.there, self.url = here, there, url


@pytest.fixture(params=["sqlite", "postgres"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[_TwoStores]:
    here: Store
    there: Store
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'q.db'}"
        here, there = SQLiteStore(tmp_path / "q.db"), SQLiteStore(tmp_path / "q.db")
    else:
        pg: PgSchema = request.getfixturevalue("pg_schema")
        url = f"{pg.dsn}?schema={pg.schema}"
        here = PostgresStore(pg.dsn, schema=pg.schema, max_size=6)
        there = PostgresStore(pg.dsn, schema=pg.schema, max_size=2)
    here.open()
    there.open()
    yield _TwoStores(here, there, url)
    there.close()
    here.close()


async def _until(check: object, timeout: float = WITHIN) -> bool:
    assert callable(check)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        await asyncio.sleep(0.05)
    return bool(check())


def test_a_hold_set_before_the_process_listened_is_taken_when_it_ends(
    stores: _TwoStores,
) -> None:
    """Another process held the lane (a retry) before this one started: no notification
    can reach it; the worker that finds nothing sets a timer to the hold's end."""
    with running_sandbox(OPTIONS) as sandbox:
        now = time.time()
        stores.there.append([_identify("held")])
        claim = stores.there.claim_lane("crm", owner="other", now=now, lease_seconds=60,
                                        max_messages=10)
        assert claim is not None
        hold_end = now + 1.5
        stores.there.reschedule(claim.messages[0].seq, destination="crm", lane=claim.lane,
                                attempts=1, available_at=hold_end, first_failure_at=now,
                                last_error="503")
        stores.there.release_lane("crm", claim.lane, "other")
        signal = WorkSignal()
        engine = DeliveryEngine.from_settings(_settings(stores.url, sandbox), stores.here)
        engine.signal = signal

        async def scenario() -> tuple[bool, bool]:
            engine.start()
            try:
                timer_set = await _until(lambda: hold_end in signal.due("crm")
                                         or bool(_contacts(sandbox)))
                delivered = await _until(lambda: bool(_contacts(sandbox)))
                return timer_set, delivered
            finally:
                await engine.stop()

        timer_set, delivered = asyncio.run(scenario())
        assert timer_set, "no wake-up was set for the hold's end"
        assert delivered, f"the held event was not delivered within {WITHIN} s"


def test_a_dead_worker_s_lane_is_taken_when_its_lease_ends(stores: _TwoStores) -> None:
    with running_sandbox(OPTIONS) as sandbox:
        now = time.time()
        stores.there.append([_identify("orphan")])
        claim = stores.there.claim_lane("crm", owner="died", now=now, lease_seconds=1.5,
                                        max_messages=10)
        assert claim is not None  # ... and its worker never comes back
        engine = DeliveryEngine.from_settings(_settings(stores.url, sandbox), stores.here)

        async def scenario() -> bool:
            engine.start()
            try:
                return await _until(lambda: bool(_contacts(sandbox)))
            finally:
                await engine.stop()

        assert asyncio.run(scenario()), f"the orphaned lane was not taken within {WITHIN} s"


def test_postgres_a_lane_released_with_messages_left_in_another_process_wakes_a_worker(
    pg_schema: PgSchema,
) -> None:
    here = PostgresStore(pg_schema.dsn, schema=pg_schema.schema, max_size=6)
    there = PostgresStore(pg_schema.dsn, schema=pg_schema.schema, max_size=2)
    here.open()
    there.open()
    try:
        with running_sandbox(OPTIONS) as sandbox:
            url = f"{pg_schema.dsn}?schema={pg_schema.schema}"
            first, second = _identify("busy"), _identify("busy")
            second.message_id = "m-busy-2"
            there.append([first, second])
            claim = there.claim_lane("crm", owner="other", now=time.time(), lease_seconds=600,
                                     max_messages=1)  # one of two; leased far past the test
            assert claim is not None
            engine = DeliveryEngine.from_settings(_settings(url, sandbox), here)

            async def scenario() -> bool:
                engine.start()
                try:
                    await asyncio.sleep(0.5)  # looked, found the lane leased, sleeps
                    assert not _contacts(sandbox)
                    await asyncio.to_thread(there.finish, [claim.messages[0].seq],
                                            status="delivered", now=time.time())
                    left = await asyncio.to_thread(there.release_lane, "crm", claim.lane,
                                                   "other")
                    assert left == 0.0
                    return await _until(lambda: bool(_contacts(sandbox)))
                finally:
                    await engine.stop()

            assert asyncio.run(scenario()), "the released lane's message was not delivered"
    finally:
        there.close()
        here.close()


class _Recording(WorkSignal):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, str | None]] = []

    def notify(self, key: str | None = None) -> None:
        self.calls.append(("notify", key))
        super().notify(key)

    def notify_at(self, when: float, key: str | None = None) -> None:
        self.calls.append(("notify_at", key))
        super().notify_at(when, key)


@pytest.mark.parametrize("messages, expected", [
    (1, [("notify", "crm")]),  # the baton only
    (2, [("notify", "crm"), ("notify", "crm")]),  # the baton, then "messages left"
])
def test_a_worker_that_releases_a_lane_with_messages_left_signals_this_process(
    tmp_path: Path, messages: int, expected: list[tuple[str, str | None]],
) -> None:
    store = SQLiteStore(tmp_path / "q.db")
    store.open()
    try:
        with running_sandbox(OPTIONS) as sandbox:
            batch = [_identify("many") for _ in range(messages)]
            for n, message in enumerate(batch):
                message.message_id = f"m-many-{n}"
            store.append(batch)
            engine = DeliveryEngine.from_settings(
                _settings(f"sqlite:///{tmp_path / 'q.db'}", sandbox), store
            )
            worker = engine.runtimes[0].workers[0]
            worker.batch_size = 1
            signal = _Recording()
            worker.signal = signal

            async def scenario() -> bool:
                try:
                    return await worker.run_once()
                finally:
                    await engine.stop()

            assert asyncio.run(scenario())
            assert signal.calls == expected
    finally:
        store.close()


# -- the signal: work is keyed by destination ------------------------------------------------


def test_a_notification_wakes_a_waiter_of_its_destination_only() -> None:
    signal = WorkSignal()

    async def scenario() -> tuple[bool, bool, bool]:
        seen = signal.generation
        other = asyncio.ensure_future(signal.wait(LONG_POLL, since=seen, key="other"))
        await asyncio.sleep(0.05)  # the longest sleeper, of another destination
        crm = asyncio.ensure_future(signal.wait(LONG_POLL, since=seen, key="crm"))
        await asyncio.sleep(0.05)
        signal.notify("crm")
        woken = await asyncio.wait_for(crm, WITHIN)
        await asyncio.sleep(0.05)
        other_slept_on = not other.done()
        signal.notify()  # no destination: one waiter of each
        other_woken = await asyncio.wait_for(other, WITHIN)
        return woken, other_slept_on, other_woken

    assert asyncio.run(scenario()) == (True, True, True)


def test_a_due_time_wakes_a_waiter_of_its_destination() -> None:
    signal = WorkSignal()
    clock = [1000.0]

    async def scenario() -> tuple[bool, bool]:
        seen = signal.generation
        signal.notify_at(1000.2, "crm")
        clock[0] = 1000.3
        other = await signal.wait(0.05, since=seen, now=lambda: clock[0], key="other")
        crm = await signal.wait(LONG_POLL, since=seen, now=lambda: clock[0], key="crm")
        return other, crm

    other, crm = asyncio.run(asyncio.wait_for(scenario(), WITHIN))
    assert not other and crm


def test_a_payload_names_its_time_and_destination() -> None:
    from freshsales_destination.store.wakeups import parse_payload, payload_for

    assert parse_payload(payload_for(None, "crm")) == (None, "crm")
    assert parse_payload(payload_for(1030.5, "crm")) == (1030.5, "crm")
    assert parse_payload(payload_for(1030.5)) == (1030.5, None)
    assert parse_payload("") == (None, None)
    assert parse_payload("garbage crm") == (None, "crm")


def test_sqlite_another_process_s_messages_wake_the_workers_through_the_watcher(
    tmp_path: Path,
) -> None:
    """Two store objects on one file share no in-process signal: only the watcher (a look at
    the file's data_version every 50 ms) can wake the idle worker before LONG_POLL."""
    from freshsales_destination.store.wakeups import SQLiteWatcher

    here, there = SQLiteStore(tmp_path / "q.db"), SQLiteStore(tmp_path / "q.db")
    here.open()
    there.open()
    try:
        with running_sandbox(OPTIONS) as sandbox:
            engine = DeliveryEngine.from_settings(
                _settings(f"sqlite:///{tmp_path / 'q.db'}", sandbox), here
            )
            watcher = engine.listener
            assert isinstance(watcher, SQLiteWatcher)

            async def scenario() -> bool:
                engine.start()
                try:
                    assert await _until(lambda: watcher.listening)
                    await asyncio.sleep(0.5)  # idle: looked once, sleeps for LONG_POLL
                    await asyncio.to_thread(there.append, [_identify("elsewhere")])
                    return await _until(lambda: bool(_contacts(sandbox)))
                finally:
                    await engine.stop()

            assert asyncio.run(scenario()), "the other process's message was not delivered"
            assert watcher.woken >= 1
    finally:
        there.close()
        here.close()


def test_an_in_memory_sqlite_store_has_no_watcher() -> None:
    from freshsales_destination.store.wakeups import listener_for

    store = SQLiteStore(None)
    store.open()
    try:
        assert listener_for(store) is None
    finally:
        store.close()
