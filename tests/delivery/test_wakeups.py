"""Idle workers are woken when there is work (store/wakeups.py), not found by the next poll.

Every test sets the safety-net poll far beyond its own timeout: an event that arrives is only
delivered in time if a wake-up reached the worker. Nothing asserts a speed beyond that.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2
import pytest

from freshsales_destination.config import Settings
from freshsales_destination.delivery.engine import DeliveryEngine
from freshsales_destination.sandbox import SandboxOptions
from freshsales_destination.sandbox.testing import RunningSandbox, running_sandbox
from freshsales_destination.store.base import NewMessage
from freshsales_destination.store.wakeups import WorkSignal
from tests.support.server import free_port

LONG_POLL = 600.0  # the safety net: never reached within a test's timeout
WITHIN = 30.0  # generous; without a wake-up the event would wait LONG_POLL

CONFIG = """
[server]
host = "127.0.0.1"
port = {port}

[store]
url = "{store_url}"

[delivery]
workers = 2
poll_interval = {poll}
backoff_base_seconds = 1.0

[[sources]]
write_key = "wk_wake"
destination = "crm"
name = "wake"

[destinations.crm]
product = "suite"
base_url = "{base_url}"
allow_custom_base_url = true
api_key = "wake-api-key"
app_token = "wake-app-token"
rate_limit_per_hour = 100000
rate_limit_per_minute = 10000
"""

OPTIONS = SandboxOptions(api_key="wake-api-key", app_token="wake-app-token",
                         rate_limit_per_hour=100_000, rate_limit_per_minute=10_000)


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'q.db'}"
    schema = request.getfixturevalue("pg_schema")
    return f"{schema.dsn}?schema={schema.schema}"


def _contacts(sandbox: RunningSandbox) -> list[dict[str, object]]:
    contacts: list[dict[str, object]] = sandbox.state.snapshot()["contacts"]
    return contacts


def _wait_for(predicate: object, timeout: float) -> bool:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


@contextmanager
def _serving(tmp_path: Path, store_url: str, sandbox: RunningSandbox) -> Iterator[str]:
    """`serve` in a subprocess with the long poll; yields its base URL once it is ready and
    its workers have looked once, found nothing, and sleep."""
    port = free_port()
    config = tmp_path / "wake.toml"
    config.write_text(CONFIG.format(port=port, store_url=store_url,
                                    base_url=sandbox.base_url, poll=LONG_POLL))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FSD_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "freshsales_destination", "serve", "--config", str(config)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                return httpx2.get(f"{base}/readyz").status_code == 200
            except httpx2.TransportError:
                return False

        assert _wait_for(ready, 30), "the service did not start"
        time.sleep(0.5)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.mark.slow
def test_an_idle_service_delivers_a_new_event_without_waiting_for_the_poll(
    tmp_path: Path, store_url: str
) -> None:
    with running_sandbox(OPTIONS) as sandbox, _serving(tmp_path, store_url, sandbox) as base:
        for n in range(3):  # each one arrives at idle workers
            answer = httpx2.post(
                f"{base}/v1/identify", auth=("wk_wake", ""),
                json={"userId": f"u{n}", "messageId": f"m{n}",
                      "traits": {"email": f"u{n}@example.com"}},
            )
            assert answer.status_code == 200
            assert _wait_for(lambda n=n: len(_contacts(sandbox)) == n + 1, WITHIN), (
                f"event {n} was not delivered within {WITHIN} s (poll: {LONG_POLL} s)"
            )
            time.sleep(0.2)


@pytest.mark.slow
def test_a_held_lane_is_taken_again_when_its_time_comes_without_the_poll(
    tmp_path: Path, store_url: str
) -> None:
    with running_sandbox(OPTIONS) as sandbox, _serving(tmp_path, store_url, sandbox) as base:
        answer = httpx2.post(f"{base}/v1/identify", auth=("wk_wake", ""), json={
            "userId": "held", "messageId": "m-held-1", "traits": {"email": "held@example.com"},
        })
        assert answer.status_code == 200
        assert _wait_for(lambda: len(_contacts(sandbox)) == 1, WITHIN)
        # The next write to the known person fails once (503: retryable): the lane is held
        # for the backoff (about a second); only a wake-up at its end brings a worker back
        # before LONG_POLL.
        scripted = httpx2.post(
            f"{sandbox.base_url}/_sandbox/script", headers=sandbox.auth_headers,
            json={"method": "PUT", "path": "/api/contacts/*", "responses": [{"status": 503}]},
        )
        assert scripted.status_code < 300, scripted.text
        time.sleep(0.5)  # idle again
        answer = httpx2.post(f"{base}/v1/identify", auth=("wk_wake", ""), json={
            "userId": "held", "messageId": "m-held-2",
            "traits": {"email": "held@example.com", "firstName": "Ada"},
        })
        assert answer.status_code == 200

        def updates() -> list[int]:
            return [e["status"] for e in sandbox.request_log()
                    if e["method"] == "PUT" and "/contacts/" in e["path"]]

        assert _wait_for(lambda: any(status < 300 for status in updates()), WITHIN), (
            f"the held event was not retried within {WITHIN} s (poll: {LONG_POLL} s): "
            f"{updates()}"
        )
        assert updates()[0] == 503


def test_another_process_s_messages_wake_the_workers_through_notify(pg_schema: object) -> None:
    """Two store objects share no in-process signal: only PostgreSQL's NOTIFY can wake."""
    from freshsales_destination.store.postgres import PostgresStore

    dsn, schema = pg_schema.dsn, pg_schema.schema  # type: ignore[attr-defined]
    with running_sandbox(OPTIONS) as sandbox:
        settings = Settings.model_validate({
            "store": {"url": f"{dsn}?schema={schema}"},
            "delivery": {"workers": 1, "poll_interval": LONG_POLL},
            "sources": [{"write_key": "wk_wake", "destination": "crm", "name": "wake"}],
            "destinations": {"crm": {
                "product": "suite", "base_url": sandbox.base_url, "allow_custom_base_url": True,
                "api_key": "wake-api-key", "app_token": "wake-app-token",
                "rate_limit_per_hour": 100000, "rate_limit_per_minute": 10000,
            }},
        })
        delivering = PostgresStore(dsn, schema=schema, max_size=4)
        writing = PostgresStore(dsn, schema=schema, max_size=2)
        delivering.open()
        writing.open()
        try:
            async def scenario() -> bool:
                engine = DeliveryEngine.from_settings(settings, delivering)
                assert engine.listener is not None
                engine.start()
                try:
                    await asyncio.sleep(0.5)  # idle: looked once, sleeps for LONG_POLL
                    await asyncio.to_thread(writing.append, [_identify("u1")])
                    deadline = time.monotonic() + WITHIN
                    while time.monotonic() < deadline and not _contacts(sandbox):
                        await asyncio.sleep(0.05)
                    return bool(_contacts(sandbox))
                finally:
                    await engine.stop()

            assert asyncio.run(scenario()), "NOTIFY did not wake the idle worker"
        finally:
            writing.close()
            delivering.close()


def _identify(user: str) -> NewMessage:
    import orjson

    body = {"type": "identify", "userId": user, "messageId": f"m-{user}",
            "traits": {"email": f"{user}@example.com"}, "timestamp": "2026-12-06T00:00:00Z"}
    raw = orjson.dumps(body)
    now = time.time()
    return NewMessage(
        source="wake", message_id=f"m-{user}", destination="crm", type="identify",
        status="pending", reason=None, lane=f"u:{user}", received_at=now, event_at=now,
        raw=raw, message=raw,
    )


# -- the signal itself ---------------------------------------------------------------------------


def test_a_notification_between_looking_and_waiting_is_not_lost() -> None:
    signal = WorkSignal()

    async def scenario() -> bool:
        seen = signal.generation
        signal.notify()  # lands after the worker looked, before it waits
        return await signal.wait(LONG_POLL, since=seen)

    assert asyncio.run(asyncio.wait_for(scenario(), WITHIN))


def test_a_notification_from_another_thread_wakes_a_waiter() -> None:
    signal = WorkSignal()

    async def scenario() -> bool:
        seen = signal.generation
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, lambda: loop.run_in_executor(None, signal.notify))
        return await signal.wait(LONG_POLL, since=seen)

    assert asyncio.run(asyncio.wait_for(scenario(), WITHIN))


def test_a_held_lane_wakes_a_waiter_when_its_time_comes() -> None:
    signal = WorkSignal()
    clock = [1000.0]

    async def scenario() -> tuple[bool, bool]:
        seen = signal.generation
        signal.notify_at(1000.2)
        woke_early = await signal.wait(0.05, since=seen, now=lambda: clock[0])
        clock[0] = 1000.3  # the time came
        woke = await signal.wait(LONG_POLL, since=seen, now=lambda: clock[0])
        return woke_early, woke

    early, woke = asyncio.run(asyncio.wait_for(scenario(), WITHIN))
    assert not early and woke


def test_without_a_notification_the_wait_ends_at_its_timeout() -> None:
    signal = WorkSignal()
    assert asyncio.run(signal.wait(0.01, since=signal.generation)) is False


def test_the_listener_reconnects_after_losing_its_connection(pg_schema: object) -> None:
    import psycopg

    from freshsales_destination.store.wakeups import NOTIFY_SQL, PostgresListener

    dsn = pg_schema.dsn  # type: ignore[attr-defined]
    name = f"fsd-listen-{pg_schema.schema}"  # type: ignore[attr-defined]
    signal = WorkSignal()
    listener = PostgresListener(f"{dsn}{'&' if '?' in dsn else '?'}application_name={name}",
                                signal)
    listener.start(wait=10)
    try:
        assert listener.listening
        with psycopg.connect(dsn, autocommit=True) as conn:
            killed = conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = %s", (name,),
            ).fetchone()
            assert killed is not None and killed[0] == 1
            before = listener.received
            deadline = time.monotonic() + WITHIN
            while listener.received == before and time.monotonic() < deadline:
                conn.execute(NOTIFY_SQL, ("",))  # lost while it reconnects, then received
                time.sleep(0.1)
        assert listener.received > before, "the listener did not come back"
    finally:
        listener.stop()
