"""Issue 9 item 5: a destination whose fault is its own pauses, probes with backoff, says so once.

Ingest over real HTTP into the store, delivery against the sandbox over real HTTP, one fake
clock for the engine and the sandbox (its request log), so ten minutes of probing pass in no
time and the request log's timestamps are the engine's.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from pydantic import SecretStr

from freshsales_destination.config import Settings
from freshsales_destination.core.health import Health
from freshsales_destination.delivery.engine import DeliveryEngine
from freshsales_destination.delivery.health import NAMESPACE, read_health
from freshsales_destination.store.base import StoredMessage
from tests.delivery.conftest import (
    API_KEY,
    APP_TOKEN,
    FakeClock,
    Pipeline,
    delivery_settings,
    make_pipeline,
)
from tests.support.server import free_port

WRONG_KEY = "wrong-key-0123456789"
HEALTH_LOGGER = "freshsales_destination.delivery.health"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=[1, 4], ids=["1-worker", "4-workers"])
def workers(request: pytest.FixtureRequest) -> int:
    return int(request.param)


@pytest.fixture
def wrong_key(tmp_path: Path, clock: FakeClock, workers: int) -> Iterator[Pipeline]:
    yield from make_pipeline(
        tmp_path, "suite", clock=clock, destination={"api_key": WRONG_KEY}, workers=workers
    )


def batch(users: int) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    for n in range(users):
        messages.append({
            "type": "identify", "userId": f"u{n}", "messageId": f"id-{n}",
            "traits": {"email": f"u{n}@example.com", "firstName": f"User{n}"},
        })
        messages.append({
            "type": "track", "userId": f"u{n}", "messageId": f"ev-{n}", "event": "Signed Up",
            "properties": {"plan": "pro"},
        })
    return {"batch": messages}


def api_calls(pipeline: Pipeline) -> list[dict[str, Any]]:
    return [e for e in pipeline.sandbox.request_log() if e["kind"] in ("api", "track")]


async def run_for(engine: DeliveryEngine, clock: FakeClock, seconds: float, step: float = 1.0) -> None:
    """Run the engine as its loop would: every worker polls at once, again while any of them
    found work, then `step` seconds pass on the fake clock."""
    end = clock() + seconds
    while clock() < end:
        for runtime in engine.runtimes:
            while any(await asyncio.gather(*(w.run_once() for w in runtime.workers))):
                pass
        clock.advance(step)


def run(engine: DeliveryEngine, clock: FakeClock, seconds: float) -> None:
    async def main() -> None:
        try:
            await run_for(engine, clock, seconds)
        finally:
            await engine.stop()

    asyncio.run(main())


def messages(pipeline: Pipeline) -> list[StoredMessage]:
    return pipeline.store.list_messages(limit=1000)


def with_key(pipeline: Pipeline, key: str) -> Settings:
    return delivery_settings(
        Path(str(pipeline.settings.store.url).removeprefix("sqlite:///")),
        pipeline.sandbox.base_url, destination={"api_key": key},
        workers=pipeline.settings.delivery.workers,
    )


def lines(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


def test_a_wrong_key_costs_a_few_calls_a_minute_loses_nothing_and_a_fixed_key_delivers_all(
    wrong_key: Pipeline, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    pipeline = wrong_key
    pipeline.send("/v1/batch", batch(5))
    start = clock()

    engine = DeliveryEngine.from_settings(pipeline.settings, pipeline.store, now=clock, sleep=clock.sleep)
    run(engine, clock, 600)

    calls = api_calls(pipeline)
    assert calls and all(e["status"] == 401 for e in calls)
    per_minute = [sum(1 for e in calls if start + m * 60 <= e["epoch"] < start + (m + 1) * 60)
                  for m in range(10)]
    print("calls per minute with a wrong key:", per_minute)
    assert max(per_minute) <= 3, per_minute
    times = [e["epoch"] for e in calls]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert all(gap >= 15 for gap in gaps), f"workers called at once or without backoff: {gaps}"
    assert gaps == sorted(gaps), f"the probe did not back off: {gaps}"
    assert sum(per_minute[5:]) <= 2, f"the probe did not back off to one every 5 minutes: {per_minute}"
    assert len(calls) <= 8, per_minute

    # Nothing spent its retry window: every message is pending as it arrived.
    stored = messages(pipeline)
    assert len(stored) == 10
    assert all(m.status == "pending" for m in stored)
    assert all(m.attempts == 0 and m.first_failure_at is None for m in stored)

    # One line, that says what happened and what to do, and never the key.
    said = lines(caplog, "refused the API key")
    assert len(said) == 1, said
    assert "401" in said[0] and "destinations.crm.api_key" in said[0] and "restart" in said[0]
    assert WRONG_KEY not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR and r not in
                [x for x in caplog.records if "refused the API key" in x.getMessage()]]

    health = read_health(pipeline.store, "crm")
    assert health.state == "auth_failed" and health.detail.startswith("401")
    assert health.next_probe_at is not None and health.next_probe_at > clock()

    # The key is fixed: a new engine (a restart with the new config) on the same store.
    fixed = DeliveryEngine.from_settings(with_key(pipeline, API_KEY), pipeline.store, now=clock,
                                         sleep=clock.sleep)
    run(fixed, clock, 5)
    stored = messages(pipeline)
    assert sorted(m.status for m in stored) == ["delivered"] * 10, [(m.message_id, m.status, m.reason) for m in stored]
    contacts = pipeline.records("contacts")
    assert {c["email"] for c in contacts} == {f"u{n}@example.com" for n in range(5)}
    assert read_health(pipeline.store, "crm").state == "healthy"
    assert len(lines(caplog, "delivery resumed")) == 1
    assert len(lines(caplog, "refused the API key")) == 1


def test_a_restart_with_the_key_still_wrong_probes_once_and_says_it_once(
    wrong_key: Pipeline, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    pipeline = wrong_key
    pipeline.send("/v1/batch", batch(1))
    run(DeliveryEngine.from_settings(pipeline.settings, pipeline.store, now=clock, sleep=clock.sleep),
        clock, 120)
    before = len(api_calls(pipeline))
    failures = read_health(pipeline.store, "crm").failures
    # A restart probes at once (its configuration may be fixed), then keeps the backoff.
    run(DeliveryEngine.from_settings(pipeline.settings, pipeline.store, now=clock, sleep=clock.sleep),
        clock, 30)
    assert len(api_calls(pipeline)) == before + 1
    assert read_health(pipeline.store, "crm").failures == failures + 1
    assert len(lines(caplog, "refused the API key")) == 2  # one per process


@pytest.mark.parametrize(
    ("base_url", "state", "said"),
    [
        (f"http://127.0.0.1:{free_port()}/crm/sales", "unreachable", "cannot reach Freshsales"),
        ("http://127.0.0.1:99999/crm/sales", "misconfigured", "misconfigured"),
    ],
    ids=["unreachable", "port-refused-at-send-time"],
)
def test_an_unreachable_or_unusable_url_pauses_without_an_error_loop(
    wrong_key: Pipeline, clock: FakeClock, caplog: pytest.LogCaptureFixture,
    base_url: str, state: str, said: str,
) -> None:
    caplog.set_level(logging.INFO)
    pipeline = wrong_key
    pipeline.send("/v1/batch", batch(2))
    settings = delivery_settings(
        Path(str(pipeline.settings.store.url).removeprefix("sqlite:///")), base_url
    )
    engine = DeliveryEngine.from_settings(settings, pipeline.store, now=clock, sleep=clock.sleep)
    run(engine, clock, 600)
    health = read_health(pipeline.store, "crm")
    assert health.state == state, health
    assert health.failures <= 8, "probed too often"
    assert len(lines(caplog, said)) == 1, caplog.text
    assert not [r for r in caplog.records if r.exc_info], "an unhandled error was logged"
    stored = messages(pipeline)
    assert all(m.status == "pending" and m.attempts == 0 and m.first_failure_at is None
               for m in stored)


def test_the_health_state_is_kept_in_the_store_for_status(wrong_key: Pipeline, clock: FakeClock) -> None:
    pipeline = wrong_key
    pipeline.send("/v1/batch", batch(1))
    run(DeliveryEngine.from_settings(pipeline.settings, pipeline.store, now=clock, sleep=clock.sleep),
        clock, 10)
    raw = pipeline.store.kv_get(NAMESPACE, "crm")
    assert raw is not None
    assert Health.from_json(raw).state == "auth_failed"
    assert WRONG_KEY.encode() not in raw


def status_of(pipeline: Pipeline, tmp_path: Path, key: str) -> dict[str, Any]:
    """`freshsales-destination status --config FILE`, as another process would run it."""
    from typer.testing import CliRunner

    from freshsales_destination.cli import _register, app

    config = tmp_path / "status.toml"
    config.write_text(
        f'[store]\nurl = "{pipeline.settings.store.url}"\n\n'
        f'[destinations.crm]\nbase_url = "{pipeline.sandbox.base_url}"\n'
        f'allow_custom_base_url = true\napi_key = "{key}"\n'
    )
    _register()
    result = CliRunner().invoke(app, ["status", "--json", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert key not in result.output
    doc: dict[str, Any] = json.loads(result.output)
    return doc


def test_status_shows_the_state_backlog_budget_and_time_to_drain(
    wrong_key: Pipeline, clock: FakeClock, tmp_path: Path
) -> None:
    pipeline = wrong_key
    pipeline.send("/v1/batch", batch(3))
    run(DeliveryEngine.from_settings(pipeline.settings, pipeline.store, now=clock, sleep=clock.sleep),
        clock, 30)
    doc = status_of(pipeline, tmp_path, WRONG_KEY)
    assert doc["pending"] == 6
    crm = doc["destinations"]["crm"]
    assert crm["state"] == "auth_failed"
    assert crm["detail"].startswith("401")
    assert crm["backlog"] == 6
    assert crm["last_success_at"] is None
    assert crm["drain_estimate_seconds"] is None and "paused" in crm["drain_estimate"]
    assert "destinations.crm.api_key" in crm["action"]
    assert crm["budget"]["per_hour"] == 1000

    run(DeliveryEngine.from_settings(with_key(pipeline, API_KEY), pipeline.store, now=clock,
                                     sleep=clock.sleep), clock, 5)
    crm = status_of(pipeline, tmp_path, API_KEY)["destinations"]["crm"]
    assert crm["state"] == "healthy" and crm["backlog"] == 0
    assert crm["last_success_at"] is not None
    assert crm["drain_estimate_seconds"] == 0


def test_a_base_url_that_is_not_the_api_is_misconfigured_and_the_schema_fetch_never_loops(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    gen = make_pipeline(tmp_path, "suite", clock=clock)
    pipeline = next(gen)
    try:
        answers = [{"status": 404, "body": {"error_code": 404}}] * 50
        scripted = httpx2.post(
            f"{pipeline.sandbox.root_url}/_sandbox/script",
            json={"method": "GET", "path": "/api/settings/contacts/fields", "responses": answers},
            headers=pipeline.sandbox.auth_headers,
        )
        assert scripted.status_code == 200, scripted.text
        pipeline.send("/v1/batch", batch(2))
        run(DeliveryEngine.from_settings(pipeline.settings, pipeline.store, now=clock,
                                         sleep=clock.sleep), clock, 600)
        calls = api_calls(pipeline)
        assert 1 <= len(calls) <= 8, [e["epoch"] for e in calls]
        health = read_health(pipeline.store, "crm")
        assert health.state == "misconfigured" and "404" in health.detail
        said = lines(caplog, "misconfigured")
        assert len(said) == 1 and "base_url" in said[0], said
        assert all(m.status == "pending" and m.attempts == 0 for m in messages(pipeline))
    finally:
        next(gen, None)


def test_an_unreadable_schema_answer_is_fetched_again_once_the_account_answers_well(
    tmp_path: Path,
) -> None:
    """One fields answer the schema cannot read makes the destination misconfigured; it is
    not kept for a day: the next probe fetches afresh, and once Freshsales answers well the
    message is delivered."""
    from freshsales_destination.delivery.health import read_health

    clock = FakeClock()
    pipelines = make_pipeline(tmp_path, "suite", clock=clock, app_token=False)
    pipeline = next(pipelines)
    try:
        scripted = httpx2.post(
            f"{pipeline.sandbox.root_url}/_sandbox/script", headers=pipeline.sandbox.auth_headers,
            json={"method": "GET", "path": "/crm/sales/api/settings/contacts/fields",
                  "responses": [{"status": 200, "body": {"fields": [{"label": "no name"}]}}]},
        )
        assert scripted.status_code == 200, scripted.text
        pipeline.send("/v1/identify", {"userId": "u-1", "messageId": "m1",
                                       "traits": {"email": "ada@example.com"}})
        pipeline.deliver(now=clock)
        assert read_health(pipeline.store, "crm").state == "misconfigured"
        for _ in range(12):  # two hours; every deliver() is a new engine, as after a restart
            clock.advance(600)
            pipeline.deliver(now=clock)
        stored = pipeline.store.get_message("web", "m1")
        assert stored is not None and stored.status == "delivered"
        assert read_health(pipeline.store, "crm").state == "healthy"
    finally:
        pipelines.close()


def test_a_refused_app_token_holds_events_instead_of_killing_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The tracking API refuses the configured app token: events wait with their retry
    window unspent and one log line names the key to fix; once fixed they are delivered."""
    caplog.set_level(logging.WARNING)
    clock = FakeClock()
    pipelines = make_pipeline(
        tmp_path, "classic", clock=clock, destination={"app_token": "not-the-token"},
    )
    pipeline = next(pipelines)
    try:
        batch: list[dict[str, Any]] = [
            {"type": "track", "userId": f"u{n}", "messageId": f"t{n}", "event": "Clicked",
             "properties": {"email": f"u{n}@example.com"}} for n in range(5)
        ]
        pipeline.send("/v1/batch", {"batch": batch})
        for _ in range(3):
            pipeline.deliver(now=clock)
            clock.advance(301)
        waiting = [pipeline.store.get_message("web", f"t{n}") for n in range(5)]
        assert all(m is not None and m.status == "pending" and m.attempts == 0
                   and m.first_failure_at is None for m in waiting), waiting
        lines = [r.getMessage() for r in caplog.records if "app_token" in r.getMessage()]
        assert len(lines) == 1, lines
        assert "destinations.crm.app_token" in lines[0] and "not-the-token" not in lines[0]
        # The operator fixes the token and restarts: everything is delivered.
        fixed = pipeline.settings.destinations["crm"].model_copy(
            update={"app_token": SecretStr(APP_TOKEN)}
        )
        pipeline.settings = pipeline.settings.model_copy(
            update={"destinations": {"crm": fixed}}
        )
        clock.advance(301)
        pipeline.deliver(now=clock)
        assert all(
            (m := pipeline.store.get_message("web", f"t{n}")) is not None
            and m.status == "delivered" for n in range(5)
        )
    finally:
        pipelines.close()
