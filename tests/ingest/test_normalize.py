"""Pure unit tests of core/segment.py: Segment's normalisation and validation."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from freshsales_destination.core.segment import (
    MESSAGE_TYPES,
    format_time,
    integration_enabled,
    normalize,
    parse_time,
)

RECEIVED = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def ids() -> Any:
    counter = itertools.count(1)
    return lambda: f"gen-{next(counter)}"


def run(raw: Any, **kwargs: Any) -> Any:
    return normalize(raw, received_at=RECEIVED, new_id=ids(), **kwargs)


def test_adds_received_at_message_id_and_timestamps() -> None:
    result = run({"type": "identify", "userId": "u1"})
    assert result.status == "pending" and result.reason is None
    msg = result.message
    assert msg["receivedAt"] == "2024-05-01T12:00:00.000Z"
    assert msg["messageId"] == result.message_id == "gen-1"
    assert msg["originalTimestamp"] == msg["timestamp"] == "2024-05-01T12:00:00.000Z"
    assert result.event_at == RECEIVED.timestamp()
    assert result.lane == "u:u1"


def test_keeps_the_client_message_id() -> None:
    assert run({"type": "identify", "userId": "u", "messageId": "m-1"}).message_id == "m-1"
    assert run({"type": "identify", "userId": "u", "messageId": 17}).message_id == "17"
    assert run({"type": "identify", "userId": "u", "messageId": ""}).message_id == "gen-1"
    assert run({"type": "identify", "userId": "u", "messageId": {"x": 1}}).message_id == "gen-1"
    assert len(run({"type": "identify", "userId": "u", "messageId": "x" * 300}).message_id) == 100


def test_clock_skew_correction() -> None:
    # The device clock is 1 hour behind: it stamped 10:00 and sent at 10:00:05; we received
    # at 12:00:00, so the event happened 5 s before receipt.
    result = run(
        {"type": "track", "userId": "u", "event": "E", "timestamp": "2024-05-01T10:00:00Z"},
        batch_sent_at="2024-05-01T10:00:05.000Z",
    )
    msg = result.message
    assert msg["originalTimestamp"] == "2024-05-01T10:00:00.000Z"
    assert msg["timestamp"] == "2024-05-01T11:59:55.000Z"
    assert msg["sentAt"] == "2024-05-01T10:00:05.000Z"
    assert result.event_at == (RECEIVED - timedelta(seconds=5)).timestamp()


def test_message_sent_at_wins_over_batch_sent_at() -> None:
    result = run(
        {"type": "track", "userId": "u", "event": "E", "timestamp": "2024-05-01T10:00:00Z",
         "sentAt": "2024-05-01T10:00:01Z"},
        batch_sent_at="2024-05-01T10:00:05Z",
    )
    assert result.message["timestamp"] == "2024-05-01T11:59:59.000Z"


def test_without_sent_at_the_client_timestamp_is_kept() -> None:
    result = run({"type": "track", "userId": "u", "event": "E",
                  "timestamp": "2020-01-02T03:04:05.678+02:00"})
    assert result.message["originalTimestamp"] == "2020-01-02T01:04:05.678Z"
    assert result.message["timestamp"] == "2020-01-02T01:04:05.678Z"


def test_original_timestamp_is_preferred_to_timestamp() -> None:
    result = run({"type": "track", "userId": "u", "event": "E",
                  "originalTimestamp": "2020-01-01T00:00:00Z",
                  "timestamp": "2021-01-01T00:00:00Z"})
    assert result.message["originalTimestamp"] == "2020-01-01T00:00:00.000Z"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T12:00:00.000+00:00", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-05-01T12:00:00.123456+00:00", datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)),
        ("2024-05-01T12:00:00Z", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-05-01T14:00:00+02:00", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-05-01T12:00:00", datetime(2024, 5, 1, 12, tzinfo=UTC)),  # naive = UTC
        ("2015-2-02T00:30:08.276Z", datetime(2015, 2, 2, 0, 30, 8, 276000, tzinfo=UTC)),
        ("2015-2-2T05:30:08+0530", datetime(2015, 2, 2, 0, 0, 8, tzinfo=UTC)),
        ("2024-05-01", datetime(2024, 5, 1, tzinfo=UTC)),
    ],
)
def test_parse_time_accepts_what_clients_send(text: str, expected: datetime) -> None:
    assert parse_time(text) == expected


@pytest.mark.parametrize(
    "value",
    [None, "", "yesterday", 1714564800, "2024-13-45T00:00:00Z", "x" * 100,
     "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-05:00", "9999-12-31T23:59:59-0500"],
)
def test_parse_time_rejects_non_timestamps(value: Any) -> None:
    assert parse_time(value) is None


@pytest.mark.parametrize(
    "text",
    ["2024-05-01T12:00:00.123Z", "2024-05-01T12:00:00.123+00:00", "2024-05-01T12:00:00.123+01:00",
     "2024-W18-3T12:00:00.000Z", "2024-05-01T12:00:00.123456Z", "2024-05-01 12:00:00.123Z",
     "2024-05-01T12:00:00.123-00:00", "2015-2-02T00:30:08.276Z"],
)
def test_original_timestamp_is_always_in_segment_form(text: str) -> None:
    result = run({"type": "identify", "userId": "u", "timestamp": text})
    parsed = parse_time(text)
    assert parsed is not None
    assert result.message["originalTimestamp"] == format_time(parsed)
    assert result.message["timestamp"] == format_time(parsed)


@given(st.datetimes(timezones=st.just(UTC)))
def test_format_time_round_trips(value: datetime) -> None:
    text = format_time(value)
    assert len(text) == 24 and text.endswith("Z")
    assert parse_time(text) == value.replace(microsecond=value.microsecond // 1000 * 1000)


def test_absurd_clocks_do_not_crash() -> None:
    result = run(
        {"type": "track", "userId": "u", "event": "E", "timestamp": "9999-12-31T00:00:00Z"},
        batch_sent_at="0001-01-01T00:00:00Z",
    )
    assert result.status == "pending"
    assert result.message["timestamp"] == "9999-12-31T00:00:00.000Z"


def test_format_time() -> None:
    assert format_time(datetime(2024, 1, 2, 3, 4, 5, 678900, tzinfo=UTC)) == \
        "2024-01-02T03:04:05.678Z"


def test_batch_context_and_integrations_are_merged() -> None:
    result = run(
        {"type": "identify", "userId": "u", "context": {"ip": "1.2.3.4", "locale": "fr"},
         "integrations": {"Salesforce": False}},
        batch_context={"locale": "en", "library": {"name": "lib"}},
        batch_integrations={"All": True, "Mixpanel": False},
    )
    msg = result.message
    assert msg["context"] == {"ip": "1.2.3.4", "locale": "fr", "library": {"name": "lib"}}
    assert msg["integrations"] == {"All": True, "Mixpanel": False, "Salesforce": False}


def test_batch_context_fills_a_message_without_context() -> None:
    result = run({"type": "identify", "userId": "u"}, batch_context={"locale": "en"})
    assert result.message["context"] == {"locale": "en"}


def test_numeric_ids_become_strings_and_null_means_absent() -> None:
    result = run({"type": "group", "userId": 42, "anonymousId": None, "groupId": 7.0,
                  "previousId": 1.5, "traits": None, "messageId": None})
    msg = result.message
    assert (msg["userId"], msg["groupId"], msg["previousId"]) == ("42", "7", "1.5")
    assert "anonymousId" not in msg and "traits" not in msg
    assert result.status == "pending"


def test_anonymous_lane_and_anonymous_only_messages() -> None:
    result = run({"type": "page", "anonymousId": "a-1", "name": "Home"})
    assert result.status == "pending" and result.lane == "a:a-1"


def test_forced_type_overrides_the_body() -> None:
    result = run({"type": "identify", "userId": "u", "event": "E"}, forced_type="track")
    assert result.type == "track" and result.message["type"] == "track"


def test_write_key_is_dropped() -> None:
    assert "writeKey" not in run({"type": "identify", "userId": "u", "writeKey": "k"}).message


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ({"type": "identify"}, "message has neither userId nor anonymousId"),
        ({"type": "identify", "userId": "", "anonymousId": ""},
         "message has neither userId nor anonymousId"),
        ({"type": "track", "userId": "u"}, "track message has no event name"),
        ({"type": "track", "userId": "u", "event": "  "}, "track message has no event name"),
        ({"type": "group", "userId": "u"}, "group message has no groupId"),
        ({"type": "alias", "userId": "u"}, "alias message has no previousId"),
        ({"type": "fly", "userId": "u"}, "unknown message type 'fly'"),
        ({"userId": "u"}, "message has no type"),
        ({"type": "identify", "userId": True}, "message has neither userId nor anonymousId"),
        ({"type": "identify", "anonymousId": "a", "userId": ["x"]},
         "userId is not a string or a number"),
        ({"type": "identify", "userId": "u", "context": "x"}, "context is not an object"),
        ({"type": "track", "userId": "u", "event": "E", "properties": 3},
         "properties is not an object"),
    ],
)
def test_undeliverable_messages_are_discarded_with_a_reason(raw: Any, reason: str) -> None:
    result = run(raw)
    assert result.status == "discarded"
    assert result.reason == reason
    assert result.message["receivedAt"]  # still normalised, to be kept


def test_non_object_message_is_discarded_and_kept() -> None:
    result = run([1, 2])
    assert result.status == "discarded" and result.reason == "message is not a JSON object"
    assert result.message["value"] == [1, 2] and result.type == "invalid"


def test_delete_is_only_accepted_where_allowed() -> None:
    raw = {"type": "delete", "userId": "u"}
    assert run(raw).status == "discarded"
    assert run(raw, allowed_types=MESSAGE_TYPES).status == "pending"


@pytest.mark.parametrize(
    ("integrations", "enabled"),
    [
        (None, True),
        ({}, True),
        ({"All": True}, True),
        ({"All": False}, False),
        ({"All": False, "Freshsales": True}, True),
        ({"All": False, "Freshsales Suite - CRM": True}, True),
        ({"All": False, "Freshsales": {"option": 1}}, True),
        ({"Freshsales": False}, False),
        ({"All": True, "Freshsales": False}, False),
        ({"Salesforce": False}, True),
        ("nonsense", True),
    ],
)
def test_integrations_switches(integrations: Any, enabled: bool) -> None:
    assert integration_enabled(integrations) is enabled
    raw = {"type": "identify", "userId": "u"}
    if integrations is not None:
        raw["integrations"] = integrations
    result = run(raw)
    assert result.status == ("pending" if enabled else "filtered")
    if not enabled:
        assert result.reason


def test_batch_integrations_can_filter() -> None:
    result = run({"type": "identify", "userId": "u"}, batch_integrations={"All": False})
    assert result.status == "filtered"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
field_values = json_values | st.sampled_from(
    ["identify", "track", "group", "alias", "page", "2024-05-01T12:00:00Z", "2015-2-2",
     "9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+14:00"]
)
messages = st.dictionaries(
    st.sampled_from(["type", "userId", "anonymousId", "event", "groupId", "previousId",
                     "messageId", "timestamp", "originalTimestamp", "sentAt", "traits",
                     "context", "integrations", "properties"]),
    field_values,
    max_size=10,
)


@settings(max_examples=300, deadline=None)
@given(raw=messages | json_values, sent_at=field_values, context=json_values)
def test_normalize_never_raises_and_always_serialises(raw: Any, sent_at: Any, context: Any) -> None:
    result = run(raw, batch_sent_at=sent_at,
                 batch_context=context if isinstance(context, dict) else None)
    assert result.status in ("pending", "discarded", "filtered")
    assert (result.status == "pending") == (result.reason is None)
    assert result.message["messageId"] == result.message_id
    assert 0 < len(result.message_id) <= 100
    orjson.dumps(result.message)
    if result.status == "pending":
        assert isinstance(result.message.get("userId") or result.message.get("anonymousId"), str)


def test_long_message_ids_sharing_a_prefix_stay_distinct() -> None:
    from datetime import UTC, datetime

    from freshsales_destination.core.segment import normalize

    now = datetime(2026, 1, 1, tzinfo=UTC)
    ids = ["x" * 150 + "a", "x" * 150 + "b"]
    results = [
        normalize({"type": "track", "userId": "u", "event": "e", "messageId": mid},
                  received_at=now, new_id=lambda: "generated")
        for mid in ids
    ]
    assert results[0].message_id != results[1].message_id
    assert all(len(r.message_id) <= 100 for r in results)
    again = normalize({"type": "track", "userId": "u", "event": "e", "messageId": ids[0]},
                      received_at=now, new_id=lambda: "generated")
    assert again.message_id == results[0].message_id
