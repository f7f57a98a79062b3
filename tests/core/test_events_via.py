"""Which way track and page events go (core/events_via.py) and how the planner follows it."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from freshsales_destination.core.events_via import RECHECK_SECONDS, events_way, tracking_state
from freshsales_destination.core.identity import IdentityState
from freshsales_destination.core.mapping_settings import DestinationSettings
from freshsales_destination.core.planner import check_settings, plan
from freshsales_destination.core.schema import MappingConfigError, default_schema

T0 = 2_000_000_000.0
KNOWN = IdentityState(record_id=42, record_type="contact", email="a@x.io")
TRACK = {"type": "track", "messageId": "m1", "timestamp": "2026-12-01T10:00:00Z", "userId": "a@x.io",
         "event": "Order Completed", "properties": {"order_id": "o-1", "items": [1, 2]}}
PAGE = {"type": "page", "messageId": "m2", "timestamp": "2026-12-01T10:01:00Z", "userId": "a@x.io",
        "name": "Pricing", "properties": {"referrer": "ad"},
        "context": {"page": {"url": "https://x.io/pricing", "title": "Pricing"}}}


def test_tracking_state_with_the_daily_recheck() -> None:
    assert tracking_state(None, None, T0) == "unknown"
    assert tracking_state("present", None, T0) == "present"
    recheck = T0 + RECHECK_SECONDS
    assert tracking_state("absent", recheck, T0) == "absent"
    assert tracking_state("absent", recheck, recheck - 1) == "absent"
    assert tracking_state("absent", recheck, recheck) == "recheck"
    assert tracking_state("absent", recheck, recheck + 5 * RECHECK_SECONDS) == "recheck"
    assert tracking_state("absent", None, T0 + 10 * RECHECK_SECONDS) == "absent"
    assert tracking_state("something else", None, T0) == "unknown"
    assert RECHECK_SECONDS == 24 * 3600


@pytest.mark.parametrize(
    "via, token, tracking, way, basis",
    [
        ("auto", True, "unknown", "tracking", "probe"),
        ("auto", True, "present", "tracking", "learned"),
        ("auto", True, "absent", "note", "learned"),
        ("auto", False, "unknown", "note", "no app_token"),
        ("auto", False, "absent", "note", "no app_token"),
        ("note", True, "present", "note", "configured"),
        ("sales_activity", True, "present", "sales_activity", "configured"),
        ("tracking", True, "absent", "tracking", "configured"),
        ("tracking", True, "unknown", "tracking", "configured"),
    ],
)
def test_events_way(via: Any, token: bool, tracking: Any, way: str, basis: str) -> None:
    got = events_way(via, token, tracking)
    assert (got.way, got.basis) == (way, basis)
    assert got.describe().startswith(f"{way} ({basis}): ")


def _settings(**kw: Any) -> DestinationSettings:
    tracking = kw.pop("tracking_api", "unknown")
    return replace(DestinationSettings.build("suite", kw.pop("token", True), {}, **kw), tracking_api=tracking)


def _kinds(result: Any) -> list[str]:
    return [op.kind for op in result.operations]


def test_planner_follows_what_was_learned() -> None:
    schema = default_schema("suite")
    assert _kinds(plan(TRACK, _settings(), schema, KNOWN)) == ["track_event"]
    assert _kinds(plan(TRACK, _settings(tracking_api="present"), schema, KNOWN)) == ["track_event"]
    absent = plan(TRACK, _settings(tracking_api="absent"), schema, KNOWN)
    assert _kinds(absent) == ["create_note"]
    description = absent.operations[0].fields["description"]
    assert description.split("\n") == ["Order Completed", "At: 2026-12-01T10:00:00Z", "items: [1, 2]", "order_id: o-1"]
    assert any(e.source == "event" and "events go by note (learned)" in e.reason for e in absent.explanation)
    page = plan(PAGE, _settings(tracking_api="absent"), schema, KNOWN)
    assert _kinds(page) == ["create_note"]
    text = page.operations[0].fields["description"]
    for line in ("Viewed page Pricing", "At: 2026-12-01T10:01:00Z", "url: https://x.io/pricing",
                 "title: Pricing", "referrer: ad"):
        assert line in text.split("\n")


def test_unknown_person_gets_a_lookup_first() -> None:
    result = plan(TRACK, _settings(tracking_api="absent"), default_schema("suite"), None)
    assert _kinds(result) == ["lookup_person", "create_note"]


def test_events_via_note_and_sales_activity_are_configured_ways() -> None:
    schema = default_schema("suite")
    assert _kinds(plan(TRACK, _settings(events_via="note"), schema, KNOWN)) == ["create_note"]
    assert _kinds(plan(PAGE, _settings(events_via="note", token=False), schema, KNOWN)) == ["create_note"]
    settings = _settings(events_via="sales_activity", events_activity_type="Meeting")
    assert check_settings(settings, schema) == []
    result = plan(TRACK, settings, schema, KNOWN)
    assert _kinds(result) == ["create_sales_activity"]
    fields = result.operations[0].fields
    assert fields["sales_activity_type_id"] == schema.resolve("sales_activity_types", "Meeting")
    assert fields["start_date"] == "2026-12-01T10:00:00Z" and "order_id: o-1" in fields["notes"]
    page = plan(PAGE, settings, schema, KNOWN).operations[0].fields
    assert "url: https://x.io/pricing" in page["notes"] and page["title"] == "Viewed page Pricing"


def test_explicit_rules_still_win_over_events_via() -> None:
    settings = replace(
        DestinationSettings.build("suite", True, {"track_events": {"Order Completed": "drop"}},
                                  events_via="note"),
        tracking_api="absent",
    )
    assert plan(TRACK, settings, default_schema("suite"), KNOWN).status == "filtered"


def test_events_via_settings_are_checked() -> None:
    schema = default_schema("suite")
    with pytest.raises(MappingConfigError, match="events_activity_type"):
        DestinationSettings.build("suite", True, {}, events_via="sales_activity")
    with pytest.raises(MappingConfigError, match="app_token"):
        DestinationSettings.build("suite", False, {}, events_via="tracking")
    with pytest.raises(MappingConfigError, match="events_via must be one of"):
        DestinationSettings.build("suite", True, {}, events_via="carrier pigeon")
    bad = DestinationSettings.build("suite", True, {}, events_via="sales_activity", events_activity_type="Nope")
    with pytest.raises(MappingConfigError, match="events_activity_type: no .*'Nope'"):
        check_settings(bad, schema)


def test_no_app_token_keeps_pages_filtered_under_auto() -> None:
    result = plan(PAGE, _settings(token=False), default_schema("suite"), KNOWN)
    assert result.status == "filtered" and result.reason_code == "page_not_delivered"
    assert _kinds(plan(TRACK, _settings(token=False), default_schema("suite"), KNOWN)) == ["create_note"]
