"""The budget believes the account: limits learned from answer headers (issue: learned rate
limits), end to end through ingest, store and delivery into the sandbox."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from freshsales_destination.delivery.budget import StoreBudget
from freshsales_destination.delivery.engine import budget_account_key
from tests.delivery.conftest import FakeClock, Pipeline, make_pipeline


def _status_budget(pipeline: Pipeline, tmp_path: Path) -> dict[str, Any]:
    """The budget `freshsales-destination status --config FILE` shows, as another process."""
    from typer.testing import CliRunner

    from freshsales_destination.cli import _register, app

    config = pipeline.settings.destinations["crm"]
    path = tmp_path / "status.toml"
    path.write_text(
        f'[store]\nurl = "{pipeline.settings.store.url}"\n\n'
        f'[destinations.crm]\nbase_url = "{pipeline.sandbox.base_url}"\n'
        f'allow_custom_base_url = true\napi_key = "k"\n'
        f"rate_limit_per_hour = {config.rate_limit_per_hour}\n"
        f"rate_limit_per_minute = {config.rate_limit_per_minute}\n"
    )
    _register()
    result = CliRunner().invoke(app, ["status", "--json", "--config", str(path)])
    assert result.exit_code == 0, result.output
    budget: dict[str, Any] = json.loads(result.output)["destinations"]["crm"]["budget"]
    return budget


def _messages(count: int) -> list[dict[str, Any]]:
    batch: list[dict[str, Any]] = [
        {"type": "identify", "userId": "ada", "messageId": "identify-ada",
         "traits": {"email": "ada@example.com", "lastName": "Lovelace", "title": "CTO"}},
    ]
    for n in range(count):
        if n % 2:
            batch.append({"type": "page", "userId": "ada", "messageId": f"m-{n}",
                          "properties": {"url": f"https://example.com/{n}"}})
        else:
            batch.append({"type": "track", "userId": "ada", "messageId": f"m-{n}",
                          "event": "Clicked", "properties": {"n": n}})
    return batch


def _run(pipeline: Pipeline, clock: FakeClock, rounds: int) -> None:
    for _ in range(rounds):
        pipeline.deliver(now=clock)
        if pipeline.store.pending_count() == 0:
            return
        clock.advance(60.0)


def _budget(pipeline: Pipeline, clock: FakeClock) -> StoreBudget:
    config = pipeline.settings.destinations["crm"]
    return StoreBudget(
        store=pipeline.store, account=budget_account_key(config),
        per_hour=config.rate_limit_per_hour, per_minute=config.rate_limit_per_minute, now=clock,
    )


@pytest.mark.parametrize("product", ["suite", "classic"])
def test_configured_above_the_account_everything_is_delivered_without_a_429(
    tmp_path: Path, product: str, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    pipelines = make_pipeline(
        tmp_path, product, clock=clock,
        destination={"rate_limit_per_hour": 5000, "rate_limit_per_minute": 2000},
        sandbox_options={"rate_limit_per_hour": 1000, "rate_limit_per_minute": 400},
    )
    pipeline = next(pipelines)
    try:
        pipeline.send("/v1/batch", {"batch": _messages(15)})
        _run(pipeline, clock, rounds=6)
        statuses = {
            m.message_id: m.status for m in pipeline.store.list_messages(limit=100)
        }
        assert len(statuses) == 16
        assert set(statuses.values()) == {"delivered"}, statuses
        assert [e for e in pipeline.sandbox.request_log() if e["status"] == 429] == []
        limits = _budget(pipeline, clock).effective()
        assert limits.per_hour == 1000
        assert limits.hour_source == "account"
        shown = _status_budget(pipeline, tmp_path)
        assert (shown["per_hour"], shown["per_hour_source"]) == (1000, "account")
        assert shown["account"]["limit"] == 1000 and shown["account"]["window"] == "hour"
        assert "set rate_limit_per_hour = 1000" in shown["mismatch"]
        # The mismatch is logged once, with what to change, however many rounds ran.
        told = [r.getMessage() for r in caplog.records if "rate_limit_per_hour" in r.getMessage()]
        assert len(told) == 1, told
        assert "set rate_limit_per_hour = 1000" in told[0]
    finally:
        pipelines.close()


def test_configured_below_the_account_the_configuration_wins(tmp_path: Path) -> None:
    clock = FakeClock()
    pipelines = make_pipeline(
        tmp_path, "suite", clock=clock,
        destination={"rate_limit_per_hour": 500, "rate_limit_per_minute": 100},
        sandbox_options={"rate_limit_per_hour": 1000, "rate_limit_per_minute": 400},
    )
    pipeline = next(pipelines)
    try:
        pipeline.send("/v1/batch", {"batch": _messages(15)})
        _run(pipeline, clock, rounds=6)
        statuses = {m.status for m in pipeline.store.list_messages(limit=100)}
        assert statuses == {"delivered"}
        assert [e for e in pipeline.sandbox.request_log() if e["status"] == 429] == []
        limits = _budget(pipeline, clock).effective()
        assert (limits.per_hour, limits.hour_source) == (500, "configured")
        assert limits.mismatch() is None
        shown = _status_budget(pipeline, tmp_path)
        assert (shown["per_hour"], shown["per_hour_source"]) == (500, "configured")
        assert shown["mismatch"] is None
        assert limits.account_per_hour == 1000
    finally:
        pipelines.close()


def test_a_minute_limit_far_under_the_hour_never_starves_events(tmp_path: Path) -> None:
    """The sandbox's headers count the tighter of its hour and minute windows: with 60 calls a
    minute against 1,000 an hour, the server's count is small all the time. The reserve kept
    of it is a share of the minute, so events keep flowing, a minute's worth at a time."""
    clock = FakeClock()
    pipelines = make_pipeline(
        tmp_path, "suite", clock=clock,
        destination={"rate_limit_per_hour": 5000, "rate_limit_per_minute": 60},
        sandbox_options={"rate_limit_per_hour": 1000, "rate_limit_per_minute": 60},
    )
    pipeline = next(pipelines)
    try:
        pipeline.send("/v1/batch", {"batch": _messages(150)})
        _run(pipeline, clock, rounds=10)
        statuses = {m.status for m in pipeline.store.list_messages(limit=1000)}
        assert statuses == {"delivered"}
        assert [e for e in pipeline.sandbox.request_log() if e["status"] == 429] == []
    finally:
        pipelines.close()
