"""Track and page on an account without the tracking API (reference §13.3), end to end.

Ingest over HTTP, the real store, delivery, and the sandbox over HTTP playing an account whose
``/track/*`` paths answer 404 (or an HTML page). The events reach the contact another way, and
the missing API is called at most once per day, not once per event.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from freshsales_destination.cli import _register
from freshsales_destination.cli import app as cli_app
from freshsales_destination.core.events_via import RECHECK_SECONDS
from freshsales_destination.delivery.events_route import PROBE_LEASE_SECONDS, EventsRoute
from freshsales_destination.delivery.learned import TRACKING_API, LearnedFacts
from freshsales_destination.explain import explain
from tests.delivery.conftest import API_KEY, APP_TOKEN, FakeClock, Pipeline, make_pipeline

IDENTIFY = {
    "userId": "u-1", "messageId": "id-1", "timestamp": "2026-12-01T10:00:00Z",
    "traits": {"email": "ada@example.com", "firstName": "Ada", "lastName": "Lovelace"},
}
IDENTIFY_2 = {
    "userId": "u-2", "messageId": "id-2", "timestamp": "2026-12-01T10:00:00Z",
    "traits": {"email": "bob@example.com", "lastName": "Bob"},
}


def _track(mid: str, user: str = "u-1", event: str = "Order Completed", **props: Any) -> dict[str, Any]:
    return {"userId": user, "messageId": mid, "event": event, "timestamp": "2026-12-01T10:05:00Z",
            "properties": props or {"order_id": "ord-77", "revenue": 19.99}}


PAGE = {
    "userId": "u-1", "messageId": "page-1", "name": "Pricing", "timestamp": "2026-12-01T10:06:00Z",
    "properties": {"path": "/pricing"},
    "context": {"page": {"url": "https://example.com/pricing", "title": "Pricing | Example"}},
}


def _pipeline(tmp_path: Path, product: str, tracking_api: str, clock: FakeClock | None = None,
              **destination: Any) -> Iterator[Pipeline]:
    yield from make_pipeline(
        tmp_path, product, clock=clock, sandbox_options={"tracking_api": tracking_api},
        destination=destination or None,
    )


def _track_calls(pipeline: Pipeline) -> list[dict[str, Any]]:
    return [r for r in pipeline.sandbox.request_log() if r["kind"] == "track"]


def _status(pipeline: Pipeline, message_id: str) -> Any:
    stored = pipeline.store.get_message("web", message_id)
    assert stored is not None
    return stored


def _contact_id(pipeline: Pipeline, email: str) -> int:
    for contact in pipeline.records("contacts"):
        if email in json.dumps(contact):
            return int(contact["id"])
    raise AssertionError(f"no contact {email}")


def _config_file(pipeline: Pipeline, tmp_path: Path, **destination: Any) -> Path:
    dest = pipeline.settings.destinations["crm"]
    lines = [
        "[store]", f'url = "{pipeline.settings.store.url}"',
        "[[sources]]", 'write_key = "k"', 'destination = "crm"',
        "[destinations.crm]", f'product = "{dest.product}"', f'base_url = "{dest.base_url}"',
        "allow_custom_base_url = true", f'api_key = "{API_KEY}"', f'app_token = "{APP_TOKEN}"',
    ]
    lines += [f"{key} = {json.dumps(value)}" for key, value in destination.items()]
    path = tmp_path / "explain.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("tracking_api", ["absent", "html"])
def test_suite_without_tracking_api_writes_notes_and_probes_once(tmp_path: Path, tracking_api: str) -> None:
    for suite in _pipeline(tmp_path, "suite", tracking_api):
        suite.send("/v1/batch", {"batch": [
            dict(IDENTIFY, type="identify"), dict(IDENTIFY_2, type="identify"),
            dict(_track("t-1"), type="track"),
            dict(_track("t-2", event="Signed Up", plan="pro", seats=3), type="track"),
            dict(PAGE, type="page"),
            dict(_track("t-3", user="u-2", event="Email Opened", subject="Hi"), type="track"),
        ]})
        suite.deliver()
        for mid in ("t-1", "t-2", "page-1", "t-3"):
            assert _status(suite, mid).status == "delivered", _status(suite, mid)
        # One probe in total (one worker), never once per event; nothing reached /track.
        assert len(_track_calls(suite)) == 1
        assert suite.records("tracking") == []
        ada, bob = _contact_id(suite, "ada@example.com"), _contact_id(suite, "bob@example.com")
        notes = {n["description"].split("\n")[0]: n for n in suite.records("notes")}
        assert set(notes) == {"Order Completed", "Signed Up", "Viewed page Pricing", "Email Opened"}
        order = notes["Order Completed"]
        assert (order["targetable_type"], int(order["targetable_id"])) == ("Contact", ada)
        assert order["description"].split("\n")[1:] == [
            "At: 2026-12-01T10:05:00.000Z", "order_id: ord-77", "revenue: 19.99",
        ]
        assert "plan: pro" in notes["Signed Up"]["description"]
        page = notes["Viewed page Pricing"]["description"]
        for text in ("At: 2026-12-01T10:06:00.000Z", "url: https://example.com/pricing",
                     "title: Pricing | Example", "path: /pricing"):
            assert text in page
        assert int(notes["Email Opened"]["targetable_id"]) == bob
        fact = LearnedFacts(suite.store, "crm").get(TRACKING_API)
        assert fact is not None and fact.value == "absent"
        assert fact.recheck_at == pytest.approx(fact.learned_at + RECHECK_SECONDS)
        assert ("404" in fact.evidence) if tracking_api == "absent" else ("HTML" in fact.evidence)

        # Later events: no call to the tracking path at all; a replay writes no second note.
        suite.send("/v1/track", _track("t-4", event="Upgraded"))
        suite.send("/v1/track", _track("t-1"))
        suite.deliver()
        assert len(_track_calls(suite)) == 1
        assert sorted(n["description"].split("\n")[0] for n in suite.records("notes")).count("Order Completed") == 1
        assert _status(suite, "t-4").status == "delivered"

        # explain and status say which way, and that it was learned.
        config = _config_file(suite, tmp_path)
        out = explain(dict(_track("x"), type="track"), config=config)
        assert [op["kind"] for op in out["operations"]][-1] == "create_note"
        assert out["events_via"]["way"] == "note" and out["events_via"]["basis"] == "learned"
        assert out["events_via"]["tracking_api"]["value"] == "absent"
        assert any("events go by note (learned)" in e["reason"] for e in out["explanation"]["entries"])
        _register()
        status = CliRunner().invoke(cli_app, ["status", "--json", "--config", str(config)])
        assert status.exit_code == 0, status.output
        assert json.loads(status.output)["events_via"]["crm"].startswith("note (learned)")


def test_a_person_unknown_to_freshsales_is_skipped_with_the_reason(tmp_path: Path) -> None:
    for suite in _pipeline(tmp_path, "suite", "absent"):
        suite.send("/v1/track", _track("t-1", user="stranger@example.com"))
        suite.deliver()
        stored = _status(suite, "t-1")
        assert stored.status == "skipped" and "no such person" in (stored.reason or "")
        assert suite.records("notes") == [] and len(_track_calls(suite)) == 1


def test_suite_events_as_sales_activities_when_configured(tmp_path: Path) -> None:
    for suite in _pipeline(tmp_path, "suite", "absent", events_via="sales_activity",
                           events_activity_type="Meeting"):
        suite.send("/v1/identify", IDENTIFY)
        suite.send("/v1/track", _track("t-1"))
        suite.send("/v1/page", PAGE)
        suite.deliver()
        assert _status(suite, "t-1").status == "delivered" and _status(suite, "page-1").status == "delivered"
        assert _track_calls(suite) == []  # configured: the tracking path is never asked
        ada = _contact_id(suite, "ada@example.com")
        meeting = next(t["id"] for t in suite.sandbox.state.selectors["sales_activity_types"]
                       if t["name"] == "Meeting")
        activities = {a["title"]: a for a in suite.records("sales_activities")}
        assert set(activities) == {"Order Completed", "Viewed page Pricing"}
        order = activities["Order Completed"]
        assert int(order["targetable_id"]) == ada and order["targetable_type"] == "Contact"
        assert int(order["sales_activity_type_id"]) == int(meeting)
        assert order["start_date"].startswith("2026-12-01T10:05:00")
        assert "order_id: ord-77" in order["notes"] and "revenue: 19.99" in order["notes"]
        assert "url: https://example.com/pricing" in activities["Viewed page Pricing"]["notes"]
        out = explain(dict(_track("x"), type="track"), config=_config_file(suite, tmp_path, events_via="sales_activity",
                                                         events_activity_type="Meeting"))
        assert out["events_via"]["way"] == "sales_activity" and out["events_via"]["basis"] == "configured"
        assert out["operations"][-1]["kind"] == "create_sales_activity"


def test_classic_with_tracking_api_uses_it_and_learns_it(tmp_path: Path) -> None:
    for classic in _pipeline(tmp_path, "classic", "present"):
        config = _config_file(classic, tmp_path)
        before = explain(dict(_track("x"), type="track"), config=config)
        assert before["events_via"]["basis"] == "probe"
        assert before["operations"][-1]["kind"] == "track_event"
        classic.send("/v1/identify", IDENTIFY)
        classic.send("/v1/track", _track("t-1"))
        classic.send("/v1/page", PAGE)
        classic.deliver()
        assert _status(classic, "t-1").status == "delivered"
        assert [r["path"] for r in _track_calls(classic)] == ["/track/events", "/track/page_views"]
        assert len(classic.records("tracking")) == 2 and classic.records("notes") == []
        fact = LearnedFacts(classic.store, "crm").get(TRACKING_API)
        assert fact is not None and fact.value == "present" and fact.recheck_at is None
        after = explain(dict(_track("x"), type="track"), config=config)
        assert after["events_via"]["way"] == "tracking" and after["events_via"]["basis"] == "learned"


def test_absent_api_is_rechecked_once_a_day_by_one_event(tmp_path: Path) -> None:
    clock = FakeClock()
    for suite in _pipeline(tmp_path, "suite", "absent", clock=clock):
        suite.send("/v1/identify", IDENTIFY)
        suite.send("/v1/track", _track("t-1"))
        suite.deliver(clock)
        assert len(_track_calls(suite)) == 1
        clock.advance(RECHECK_SECONDS - 60)
        suite.send("/v1/track", _track("t-2", event="Second"))
        suite.deliver(clock)
        assert len(_track_calls(suite)) == 1  # not yet due
        clock.advance(120)
        suite.send("/v1/batch", {"batch": [dict(_track(f"t-{i}", event=f"E{i}"), type="track")
                                           for i in (3, 4, 5)]})
        suite.deliver(clock)
        assert len(_track_calls(suite)) == 2  # one event re-checked; the others went as notes
        assert len(suite.records("notes")) == 5
        # The account gained the tracking API: the next re-check finds it and events use it.
        suite.sandbox.state.options = suite.sandbox.state.options.with_changes(tracking_api="present")
        clock.advance(RECHECK_SECONDS + 1)
        suite.send("/v1/batch", {"batch": [dict(_track(f"t-{i}", event=f"E{i}"), type="track")
                                           for i in (6, 7)]})
        suite.deliver(clock)
        assert len(_track_calls(suite)) == 4 and len(suite.records("tracking")) == 2
        assert len(suite.records("notes")) == 5
        fact = LearnedFacts(suite.store, "crm").get(TRACKING_API)
        assert fact is not None and fact.value == "present"


def test_events_via_tracking_on_an_absent_api_waits_with_a_clear_reason(tmp_path: Path) -> None:
    clock = FakeClock()
    for suite in _pipeline(tmp_path, "suite", "absent", clock=clock, events_via="tracking"):
        suite.send("/v1/identify", IDENTIFY)
        suite.send("/v1/track", _track("t-1"))
        suite.send("/v1/track", _track("t-2", event="Second"))
        suite.deliver(clock)
        for _ in range(3):
            clock.advance(600)
            suite.deliver(clock)
        held = _status(suite, "t-1")
        assert held.status == "pending" and held.attempts == 0
        assert "configuration error" in (held.last_error or "")
        assert "tracking API is absent" in (held.last_error or "")
        assert 'events_via = "tracking"' in (held.last_error or "")
        assert _status(suite, "t-2").status == "pending"  # behind it in its lane
        assert len(_track_calls(suite)) == 1 and suite.records("notes") == []
        # The operator switches to notes: nothing was lost.
        suite.settings = suite.settings.model_copy(update={"destinations": {
            "crm": suite.settings.destinations["crm"].model_copy(update={"events_via": "auto"})}})
        clock.advance(600)
        suite.deliver(clock)
        assert _status(suite, "t-1").status == "delivered" and _status(suite, "t-2").status == "delivered"
        assert len(suite.records("notes")) == 2 and len(_track_calls(suite)) == 1


def test_a_track_api_rule_on_an_absent_api_waits_without_a_call_per_event(tmp_path: Path) -> None:
    clock = FakeClock()
    for suite in make_pipeline(tmp_path, "suite", clock=clock, sandbox_options={"tracking_api": "absent"},
                               mapping={"track_events": {"Order Completed": "track_api"}},
                               destination={"events_via": "note"}):
        suite.send("/v1/identify", IDENTIFY)
        suite.send("/v1/identify", IDENTIFY_2)
        suite.send("/v1/track", _track("t-1"))
        suite.send("/v1/track", _track("t-2"))
        suite.send("/v1/track", _track("t-3", user="u-2", event="Other"))
        for _ in range(3):
            suite.deliver(clock)
            clock.advance(600)
        assert len(_track_calls(suite)) == 1
        held = _status(suite, "t-1")
        assert held.status == "pending" and "tracking API is absent" in (held.last_error or "")
        assert _status(suite, "t-3").status == "delivered"
        assert [n["description"].split("\n")[0] for n in suite.records("notes")] == ["Other"]


def test_while_another_worker_probes_events_wait_without_spending_their_window(tmp_path: Path) -> None:
    clock = FakeClock()
    for suite in _pipeline(tmp_path, "suite", "absent", clock=clock):
        suite.send("/v1/identify", IDENTIFY)
        suite.send("/v1/track", _track("t-1"))
        # Another worker (here: its lease in the store) is asking the tracking API right now.
        other = EventsRoute(suite.store, "crm", events_via="auto", has_app_token=True)
        assert other.claim_probe(clock()) == "probe"
        suite.deliver(clock)
        waiting = _status(suite, "t-1")
        assert waiting.status == "pending" and waiting.attempts == 0 and waiting.first_failure_at is None
        assert "tracking API's first answer" in (waiting.last_error or "")
        assert _status(suite, "id-1").status == "delivered"  # records are not held
        assert _track_calls(suite) == []
        # That probe never answered (its worker died): its lease runs out and this event asks.
        clock.advance(PROBE_LEASE_SECONDS + 1)
        suite.deliver(clock)
        assert _status(suite, "t-1").status == "delivered" and len(_track_calls(suite)) == 1
        assert [n["description"].split("\n")[0] for n in suite.records("notes")] == ["Order Completed"]


def test_a_configuration_error_is_logged_once_and_spends_no_retry_window(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """events_via = "tracking" on an account without the tracking API: twenty people's
    events wait; one log line says why (not one per lane per re-check), and the waiting
    messages keep their retry window untouched for when the configuration is fixed."""
    caplog.set_level(logging.WARNING)
    clock = FakeClock()
    pipelines = make_pipeline(
        tmp_path, "classic", clock=clock, sandbox_options={"tracking_api": "absent"},
        destination={"events_via": "tracking"},
    )
    pipeline = next(pipelines)
    try:
        batch: list[dict[str, Any]] = [
            {"type": "identify", "userId": f"u{n}", "messageId": f"i{n}",
             "traits": {"email": f"u{n}@example.com", "lastName": f"L{n}"}} for n in range(20)
        ]
        batch += [{"type": "track", "userId": f"u{n}", "messageId": f"t{n}", "event": "Clicked"}
                  for n in range(20)]
        pipeline.send("/v1/batch", {"batch": batch})
        for _ in range(6):  # half an hour of re-checks every 5 minutes
            pipeline.deliver(now=clock)
            clock.advance(301)
        lines = [r.getMessage() for r in caplog.records
                 if "configuration error" in r.getMessage()]
        assert len(lines) == 1, lines
        waiting = [pipeline.store.get_message("web", f"t{n}") for n in range(20)]
        assert all(m is not None and m.status == "pending" for m in waiting)
        assert all(m is not None and m.attempts == 0 and m.first_failure_at is None
                   for m in waiting)
    finally:
        pipelines.close()


def test_a_probe_the_budget_stopped_is_given_up_at_once(tmp_path: Path) -> None:
    """The event that took the probe could not spend (the hour's event share is used up by the
    schema and the identify): the probe is free again at once, not after its 60 s lease, so the
    other events do not wait for an answer nobody is asking for."""
    clock = FakeClock()
    for suite in _pipeline(tmp_path, "suite", "present", clock=clock, rate_limit_per_hour=12):
        suite.send("/v1/identify", IDENTIFY)
        suite.send("/v1/track", _track("t-1"))
        suite.deliver(clock)
        assert _status(suite, "id-1").status == "delivered"
        assert _status(suite, "t-1").status == "pending" and _track_calls(suite) == []
        other = EventsRoute(suite.store, "crm", events_via="auto", has_app_token=True)
        assert other.claim_probe(clock() + 1) == "probe"
