"""Unit tests of the planner's pieces: operations, schema, coercion, settings, rules."""

from __future__ import annotations

from typing import Any

import pytest

from freshsales_destination.core.identity import IdentityState
from freshsales_destination.core.mapping_settings import (
    DestinationSettings,
    MappingSettings,
    find_rule,
    normalise_event_name,
)
from freshsales_destination.core.operations import Operation, is_ref, merge_person_operations, ref
from freshsales_destination.core.planner import check_settings, plan
from freshsales_destination.core.schema import (
    FieldDef,
    FieldSchema,
    MappingConfigError,
    default_schema,
)
from freshsales_destination.core.traits import camel_to_snake, coerce
from freshsales_destination.errors import FreshsalesDestinationError

SUITE = DestinationSettings.build("suite", False, {})
CLASSIC = DestinationSettings.build("classic", False, {})


def _identify(traits: dict[str, Any], user_id: str = "u1", **extra: Any) -> dict[str, Any]:
    return {"type": "identify", "messageId": "m1", "timestamp": "2024-05-01T00:00:00Z",
            "userId": user_id, "traits": traits, **extra}


def _entry(result: Any, source: str) -> Any:
    hits = [e for e in result.explanation if e.source == source]
    assert hits, source
    return hits[0]


# -- operations ----------------------------------------------------------------------------


def _person(fields: dict[str, Any], key: str, kind: str = "upsert_contact") -> Operation:
    return Operation(kind=kind, entity=kind.removeprefix("upsert_"), key={"external_id": "u1"},
                     fields=fields, provides="person", idempotency_key=key, user_id="u1")


def test_operation_round_trip_and_needs() -> None:
    op = Operation(kind="upsert_deal", entity="deal", key={"name": "D"},
                   fields={"contacts_added_list": [ref("person")], "sales_account_id": ref("account:A")},
                   provides="deal:D", idempotency_key="m:3", user_id="u", timestamp="t")
    assert op.needs == ("account:A", "person")
    assert Operation.from_json(op.to_json()) == op
    assert is_ref({"ref": "x"}) and not is_ref({"ref": "x", "y": 1}) and not is_ref("x")
    with pytest.raises(ValueError):
        Operation.from_json({"kind": "launch_rocket"})


def test_merge_person_operations_last_writer_wins() -> None:
    a = _person({"first_name": "A", "custom_field": {"cf_a": 1, "cf_b": 1}, "job_title": "x"}, "m1:0")
    b = _person({"first_name": "B", "custom_field": {"cf_b": 2}}, "m2:0")
    merged = merge_person_operations([a, b])
    assert merged.fields == {"first_name": "B", "custom_field": {"cf_a": 1, "cf_b": 2}, "job_title": "x"}
    assert merged.idempotency_key.startswith("merged:")
    assert merge_person_operations([a, b]) == merged  # deterministic
    assert merge_person_operations([a]) is a


def test_merge_keeps_only_the_last_kind_and_rejects_mixtures() -> None:
    lead = _person({"company": {"name": "X"}, "last_name": "L"}, "m1:0", "upsert_lead")
    contact = _person({"first_name": "F"}, "m2:0")
    assert merge_person_operations([lead, contact]).fields == {"first_name": "F"}
    other = Operation(kind="upsert_contact", entity="contact", user_id="u2")
    with pytest.raises(ValueError):
        merge_person_operations([contact, other])
    with pytest.raises(ValueError):
        merge_person_operations([Operation(kind="create_note", entity="note", user_id="u1")])
    with pytest.raises(ValueError):
        merge_person_operations([])


def test_merge_person_operations_of_real_plans() -> None:
    first = plan(_identify({"email": "a@b.co", "firstName": "A", "cfAlternateNumber": "1"}), SUITE, default_schema())
    second = plan(_identify({"email": "new@b.co", "lastName": "Z"}, messageId="m2"), SUITE, default_schema())
    merged = merge_person_operations([first.operations[0], second.operations[0]])
    assert merged.fields["emails"] == "new@b.co"
    assert merged.key == {"external_id": "u1", "emails": "new@b.co"}
    assert merged.fields["first_name"] == "A" and merged.fields["last_name"] == "Z"
    assert merged.fields["custom_field"] == {"cf_alternate_number": "1"}


# -- names and coercion --------------------------------------------------------------------


@pytest.mark.parametrize(("camel", "snake"), [
    ("cfAlternateNumber", "cf_alternate_number"), ("cf_alternate_number", "cf_alternate_number"),
    ("jobTitle", "job_title"), ("cfHTTPCode", "cf_http_code"), ("cfField2", "cf_field2"),
])
def test_camel_to_snake(camel: str, snake: str) -> None:
    assert camel_to_snake(camel) == snake


@pytest.mark.parametrize(("type_", "value", "expected"), [
    ("number", "42", 42), ("number", 42.0, 42), ("number", -3, -3),
    ("decimal", "19.99", 19.99), ("decimal", 7, 7), ("decimal", "1e3", 1000),
    ("date", "2024-02-29", "2024-02-29"), ("date", "2024-02-29T23:00:00-05:00", "2024-02-29"),
    ("checkbox", "TRUE", True), ("checkbox", 0, False), ("checkbox", "no", False),
    ("text", 12, "12"), ("text", True, "true"), ("text", 1.5, "1.5"),
    ("tags", "a, b,a", ["a", "b"]), ("date_time_split", "2024-01-01T10:00:00Z", "2024-01-01T10:00:00+00:00"),
])
def test_coerce_ok(type_: str, value: Any, expected: Any) -> None:
    result = coerce(value, FieldDef(name="cf_x", type=type_, default=False), default_schema())
    assert result.ok and result.value == expected and type(result.value) is type(expected)


@pytest.mark.parametrize(("type_", "value"), [
    ("number", 2.5), ("number", "ten"), ("number", True), ("decimal", "NaN"), ("decimal", "1e999"),
    ("date", "2024-13-01"), ("date", 20240101), ("checkbox", "maybe"), ("checkbox", 2),
    ("text", {"a": 1}), ("text", [1]), ("tags", {"a": 1}), ("multi_select_dropdown", 3), ("text", None),
])
def test_coerce_refuses(type_: str, value: Any) -> None:
    result = coerce(value, FieldDef(name="cf_x", type=type_, default=False), default_schema())
    assert not result.ok
    assert "cf_x" in result.reason or result.reason.startswith("null")


def test_dropdown_and_selector_resolution() -> None:
    schema = FieldSchema.from_json({"selectors": {"lead_sources": [{"id": 5, "name": "Web"}]}})
    tier = FieldDef(name="cf_tier", type="dropdown", default=False)
    assert coerce("anything", tier, schema).value == "anything"  # no choices known: passed through
    source = FieldDef(name="lead_source_id", type="dropdown")
    assert coerce("web", source, schema).value == 5
    assert coerce("5", source, schema).value == 5
    refused = coerce("Carrier pigeon", source, schema)
    assert not refused.ok and "no lead source named 'Carrier pigeon'" in refused.reason
    territory = FieldDef(name="territory_id", type="dropdown")
    assert coerce("17", territory, schema).value == 17
    assert not coerce("North", territory, schema).ok


# -- schema --------------------------------------------------------------------------------


def test_schema_parses_api_responses_and_round_trips() -> None:
    data = {
        "contacts": {"fields": [
            {"id": 1, "name": "first_name", "label": "First name", "type": "text", "default": True},
            {"id": 2, "name": "cf_tier", "label": "Tier", "type": "dropdown", "default": False,
             "choices": [{"id": 1, "value": "Gold", "position": 1}, {"id": "x", "value": 3}]},
        ]},
        "selectors": {
            "owners": {"users": [{"id": 7, "email": "Sam@Acme.test", "display_name": "Sam"}, {"id": 8}]},
            "sales_activity_types": {"sales_activity_types": [{"id": 3, "name": "Meeting", "internal_name": "appointment"}]},
        },
    }
    schema = FieldSchema.from_json(data)
    tier = schema.entity("contacts").get("cf_tier")
    assert tier is not None and tier.is_custom and [c.value for c in tier.choices] == ["Gold"]
    assert schema.resolve("owners", "sam@acme.test") == 7
    assert schema.resolve("owners", "Sam") == 7
    assert schema.resolve("sales_activity_types", "appointment") == 3
    assert schema.entity("deals").get("amount") is not None  # absent entities come from the default
    assert FieldSchema.from_json(schema.to_json()) == schema


def test_schema_errors() -> None:
    with pytest.raises(MappingConfigError):
        FieldSchema.from_json({"contacts": {"fields": [{"label": "no name"}]}})
    with pytest.raises(MappingConfigError):
        FieldSchema.from_json({"selectors": {"owners": "nope"}})
    with pytest.raises(MappingConfigError) as info:
        default_schema().require("lifecycle_stages", "Zombie", "mapping.default_lifecycle_stage")
    assert info.value.kind == "lifecycle_stages" and info.value.name == "Zombie"
    assert isinstance(info.value, FreshsalesDestinationError)


def test_default_schema_per_product() -> None:
    suite, classic = default_schema("suite"), default_schema("classic")
    assert suite.entity("leads").fields == ()
    assert classic.entity("leads").get("cf_alternate_number") is not None
    assert suite.entity("contacts").get("lifecycle_stage_id") is not None
    assert classic.entity("contacts").get("lifecycle_stage_id") is None


# -- settings ------------------------------------------------------------------------------


def test_settings_validation() -> None:
    m = MappingSettings.model_validate({"track_events": {"A": "drop", "B": {"action": "note"}}, "page_default": "note"})
    assert m.track_events["A"].action == "drop" and m.page_default.action == "note"
    for bad in ({"track_events": {"A": {"action": "fly"}}}, {"unknown": 1},
                {"track_events": {"A": {"action": "deal", "name": "{bogus}"}}},
                {"track_events": {"A": {"action": "sales_activity"}}}):
        with pytest.raises(MappingConfigError):
            DestinationSettings.build("suite", False, bad)
    with pytest.raises(MappingConfigError):
        DestinationSettings.build("enterprise", False, {})


def test_rule_lookup_normalises_names() -> None:
    rules = {"Order Completed": 1, "order-refunded": 2}
    assert find_rule(rules, "order_completed") == ("Order Completed", 1)
    assert find_rule(rules, "Order Refunded") == ("order-refunded", 2)
    assert find_rule(rules, "Order Shipped") is None
    assert normalise_event_name("  Order__Completed ") == "order completed"


def test_check_settings() -> None:
    schema = default_schema("suite")
    ok = DestinationSettings.build("suite", True, {
        "default_lifecycle_stage": "Customer", "group_id_field": "cf_nope",
        "track_events": {"X": {"action": "sales_activity", "activity_type": "chat"}, "Y": "track_api"}})
    assert check_settings(ok, schema) == ["mapping.group_id_field: no field named cf_nope on sales_accounts; groupId is not stored"]
    classic = DestinationSettings.build("classic", False, {"track_events": {"S": {"action": "lifecycle_stage", "stage": "Customer"}}})
    with pytest.raises(MappingConfigError):
        check_settings(classic, default_schema("classic"))
    no_token = DestinationSettings.build("suite", False, {"page_default": "track_api"})
    with pytest.raises(MappingConfigError) as info:
        check_settings(no_token, schema)
    assert info.value.kind == "app_token"


# -- planner behaviour ---------------------------------------------------------------------


def test_email_change_keeps_the_same_external_id() -> None:
    result = plan(_identify({"email": "new@example.com"}), SUITE, default_schema(),
                  IdentityState(user_id="u1", record_type="contact", record_id=1, email="old@example.com"))
    op = result.operations[0]
    assert op.key == {"external_id": "u1", "emails": "new@example.com"}
    assert op.fields["external_id"] == "u1"


@pytest.mark.parametrize("flag", [True, "true", "TRUE"])
def test_fs_contact_values(flag: Any) -> None:
    result = plan(_identify({"email": "a@b.co", "fs_contact": flag}), CLASSIC, default_schema("classic"))
    assert result.operations[0].kind == "upsert_contact"


@pytest.mark.parametrize("flag", [False, "false", "yes", 1])
def test_not_fs_contact(flag: Any) -> None:
    result = plan(_identify({"email": "a@b.co", "fsContact": flag}), CLASSIC, default_schema("classic"))
    assert result.operations[0].kind == "upsert_lead"
    assert _entry(result, "traits.fsContact").outcome == "used"


def test_known_classic_contact_stays_a_contact() -> None:
    known = IdentityState(user_id="u1", record_type="contact", record_id=3)
    result = plan(_identify({"email": "a@b.co"}), CLASSIC, default_schema("classic"), known)
    assert result.operations[0].kind == "upsert_contact"


def test_invalid_email_trait() -> None:
    result = plan(_identify({"email": "not-an-email"}), SUITE, default_schema())
    assert result.status == "discarded" and result.reason_code == "missing_email"
    assert "traits.email is not an email address" in (result.reason or "")
    fallback = plan(_identify({"email": 5}, user_id="a@b.co"), SUITE, default_schema())
    assert fallback.status == "planned" and fallback.operations[0].fields["emails"] == "a@b.co"
    assert _entry(fallback, "traits.email").outcome == "dropped"


def test_name_split_variants() -> None:
    one = plan(_identify({"email": "a@b.co", "name": "Cher"}), SUITE, default_schema())
    assert one.operations[0].fields["last_name"] == "Cher" and "first_name" not in one.operations[0].fields
    given = plan(_identify({"email": "a@b.co", "name": "A B", "firstName": "X"}), SUITE, default_schema())
    assert given.operations[0].fields["first_name"] == "X" and "last_name" not in given.operations[0].fields
    assert _entry(given, "traits.name").outcome == "dropped"


def test_duplicate_spellings_first_sorted_key_wins() -> None:
    result = plan(_identify({"email": "a@b.co", "first_name": "Snake", "firstName": "Camel"}), SUITE, default_schema())
    assert result.operations[0].fields["first_name"] == "Camel"
    assert "already set from traits.firstName" in _entry(result, "traits.first_name").reason


def test_managed_and_read_only_fields_are_dropped() -> None:
    traits = {"email": "a@b.co", "emails": ["x@y.z"], "externalId": "other", "salesAccounts": [1],
              "customField": {"cf_x": 1}, "displayName": "D", "avatar": "http://x"}
    result = plan(_identify(traits), SUITE, default_schema())
    fields = result.operations[0].fields
    assert fields["emails"] == "a@b.co" and fields["external_id"] == "u1"
    assert set(fields) == {"emails", "external_id"}
    for key in traits:
        if key != "email":
            assert _entry(result, f"traits.{key}").outcome == "dropped"


def test_string_company_and_missing_company_name() -> None:
    result = plan(_identify({"email": "a@b.co", "company": "Acme"}), SUITE, default_schema())
    assert [op.kind for op in result.operations] == ["upsert_contact", "upsert_sales_account", "link_sales_account"]
    nameless = plan(_identify({"email": "a@b.co", "company": {"industry": "x"}}), SUITE, default_schema())
    assert [op.kind for op in nameless.operations] == ["upsert_contact"]
    assert _entry(nameless, "traits.company.industry").outcome == "dropped"


def test_no_clock_and_no_message_id() -> None:
    event = {"type": "track", "userId": "u1", "event": "Demo"}
    dest = DestinationSettings.build("suite", False, {"track_events": {"Demo": {"action": "sales_activity", "activity_type": "Chat"}}})
    result = plan(event, dest, default_schema())
    assert result.status == "discarded" and result.reason_code == "missing_timestamp"
    tracked = plan({**event, "event": "Other"}, DestinationSettings.build("suite", True, {}), default_schema())
    key = tracked.operations[0].idempotency_key
    assert key.startswith("event-") and key.endswith(":0")
    assert plan({**event, "event": "Other"}, DestinationSettings.build("suite", True, {}), default_schema()).operations[0].idempotency_key == key


def test_unknown_event_side_selector_names_are_dropped_not_errors() -> None:
    result = plan(_identify({"email": "a@b.co", "lifecycleStage": "Zombie", "ownerEmail": "x@y.z"}), SUITE, default_schema())
    assert result.status == "planned"
    assert "no lifecycle stage named 'Zombie'" in _entry(result, "traits.lifecycleStage").reason
    assert "no owners" in _entry(result, "traits.ownerEmail").reason


def test_lifecycle_rule_on_a_classic_lead_is_discarded() -> None:
    schema = FieldSchema.from_json({"base": "default", "contacts": {"fields": [{"name": "lifecycle_stage_id", "type": "dropdown"}]}}, product="classic")
    dest = DestinationSettings.build("classic", False, {"track_events": {"Won": {"action": "lifecycle_stage", "stage": "Customer"}}})
    lead = IdentityState(user_id="u1", record_type="lead", record_id=1)
    result = plan({"type": "track", "userId": "u1", "event": "Won", "messageId": "m"}, dest, schema, lead)
    assert result.reason_code == "lead_has_no_lifecycle_stage"


def test_deal_rule_needs_its_name() -> None:
    dest = DestinationSettings.build("suite", False, {"track_events": {"Order Completed": {"action": "deal", "name": "Order {properties.order_id}"}}})
    result = plan({"type": "track", "userId": "u1", "event": "Order Completed", "messageId": "m", "properties": {"revenue": 3}}, dest, default_schema())
    assert result.reason_code == "deal_name_unavailable" and "properties.order_id" in (result.reason or "")


def test_track_api_properties_cannot_rename_the_event() -> None:
    dest = DestinationSettings.build("suite", True, {})
    result = plan({"type": "track", "userId": "u1", "event": "E", "messageId": "m", "properties": {"name": "X", "a": [1]}}, dest, default_schema())
    assert result.operations[0].fields["event"] == {"name": "E", "a": [1]}
    assert _entry(result, "properties.name").outcome == "dropped"


@pytest.mark.parametrize(("integrations", "status"), [
    ({"All": False}, "filtered"), ({"All": False, "Freshsales": True}, "planned"),
    ({"Freshsales Suite - CRM": {"option": 1}}, "planned"), ({"Freshsales": False}, "filtered"), ({}, "planned"),
])
def test_integrations(integrations: dict[str, Any], status: str) -> None:
    event = {"type": "track", "userId": "u1", "event": "E", "messageId": "m", "integrations": integrations}
    assert plan(event, DestinationSettings.build("suite", True, {}), default_schema()).status == status


def test_group_for_known_lead_is_not_linked() -> None:
    lead = IdentityState(user_id="u1", record_type="lead", record_id=1)
    result = plan({"type": "group", "userId": "u1", "groupId": "g", "traits": {"name": "Acme"}}, CLASSIC, default_schema("classic"), lead)
    assert [op.kind for op in result.operations] == ["upsert_sales_account"]


def test_alias_needs_both_ids() -> None:
    assert plan({"type": "alias", "userId": "u1"}, SUITE, default_schema()).reason_code == "missing_previous_id"
    ok = plan({"type": "alias", "userId": "u1", "previousId": "a"}, SUITE, default_schema())
    assert ok.operations[0].api_call is False


def test_delete_without_user_id() -> None:
    assert plan({"type": "delete", "anonymousId": "a"}, SUITE, default_schema()).reason_code == "missing_user_id"


def test_the_settings_example_in_the_docs_is_valid() -> None:
    import re
    import tomllib
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "mapping.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```toml\n(.*?)```", doc, re.S)
    assert blocks
    for block in blocks:
        mapping = tomllib.loads(block)["destinations"]["acme"]["mapping"]
        DestinationSettings.build("suite", False, mapping)


# -- sales activity dates --------------------------------------------------------------------

_MEETING = {"action": "sales_activity", "activity_type": "Meeting"}
_AT = "2024-05-01T12:00:00.000Z"


def _activity(properties: dict[str, Any], timestamp: str | None = _AT, **rule: Any) -> Any:
    dest = DestinationSettings.build("suite", False, {"track_events": {"Demo Booked": {**_MEETING, **rule}}})
    event: dict[str, Any] = {"type": "track", "userId": "u1", "event": "Demo Booked",
                             "messageId": "m1", "properties": properties}
    if timestamp is not None:
        event["timestamp"] = timestamp
    known = IdentityState(user_id="u1", record_type="contact", record_id=9)
    return plan(event, dest, default_schema(), known)


def _dates(result: Any) -> tuple[str, str]:
    assert result.status == "planned", result.reason
    [op] = [op for op in result.operations if op.kind == "create_sales_activity"]
    return op.fields["start_date"], op.fields["end_date"]


def test_activity_dates_default_to_the_event_time() -> None:
    result = _activity({"startDate": "2030-01-01T09:00:00Z"})
    assert _dates(result) == (_AT, _AT)
    assert not [e for e in result.explanation if e.source == "properties.startDate"]


def test_activity_dates_come_from_the_named_properties() -> None:
    result = _activity(
        {"startDate": "2024-06-03T09:00:00+02:00", "endDate": "2024-06-03T10:30:00+02:00"},
        start_date_property="properties.startDate", end_date_property="properties.endDate",
    )
    assert _dates(result) == ("2024-06-03T07:00:00.000Z", "2024-06-03T08:30:00.000Z")
    start = _entry(result, "properties.startDate")
    assert (start.outcome, start.target) == ("mapped", "sales_activity.start_date")
    end = _entry(result, "properties.endDate")
    assert (end.outcome, end.target) == ("mapped", "sales_activity.end_date")


def test_activity_end_defaults_to_its_start_and_bare_or_nested_names_work() -> None:
    result = _activity({"meeting": {"start": "2024-06-03"}}, start_date_property="meeting.start")
    assert _dates(result) == ("2024-06-03T00:00:00.000Z", "2024-06-03T00:00:00.000Z")
    # No event time is needed once the start comes from the event's properties.
    untimed = _activity({"startDate": "2024-06-03T09:00:00Z"}, timestamp=None,
                        start_date_property="properties.startDate")
    assert _dates(untimed) == ("2024-06-03T09:00:00.000Z", "2024-06-03T09:00:00.000Z")


@pytest.mark.parametrize("value", ["next tuesday", "2024-13-45", 1717405200, True, {"at": "x"}, "9" * 80])
def test_an_unparseable_start_is_explained_and_falls_back_to_the_event_time(value: Any) -> None:
    result = _activity({"startDate": value}, start_date_property="properties.startDate")
    assert _dates(result) == (_AT, _AT)
    entry = _entry(result, "properties.startDate")
    assert entry.outcome == "dropped" and entry.target == "sales_activity.start_date"
    assert "is not a date" in entry.reason and "the event's time" in entry.reason
    assert len(entry.reason) < 200


def test_an_unparseable_end_is_explained_and_ends_at_the_start() -> None:
    result = _activity({"startDate": "2024-06-03T09:00:00Z", "endDate": "soon"},
                       start_date_property="properties.startDate", end_date_property="properties.endDate")
    assert _dates(result) == ("2024-06-03T09:00:00.000Z", "2024-06-03T09:00:00.000Z")
    entry = _entry(result, "properties.endDate")
    assert entry.outcome == "dropped" and '"soon" is not a date' in entry.reason
    assert _entry(result, "properties.startDate").outcome == "mapped"


def test_an_end_before_the_start_is_explained_and_not_sent() -> None:
    result = _activity({"startDate": "2024-06-03T09:00:00Z", "endDate": "2024-06-03T08:00:00Z"},
                       start_date_property="properties.startDate", end_date_property="properties.endDate")
    assert _dates(result) == ("2024-06-03T09:00:00.000Z", "2024-06-03T09:00:00.000Z")
    entry = _entry(result, "properties.endDate")
    assert entry.outcome == "dropped" and entry.target == "sales_activity.end_date"
    assert "before the activity's start" in entry.reason
    # Only an end property: an end before the event's time falls back to the event's time.
    only_end = _activity({"endDate": "2024-04-30T12:00:00Z"}, end_date_property="properties.endDate")
    assert _dates(only_end) == (_AT, _AT)
    assert "the event's time" in _entry(only_end, "properties.endDate").reason


def test_an_absent_date_property_is_explained_and_falls_back() -> None:
    result = _activity({"other": 1}, start_date_property="properties.startDate",
                       end_date_property="properties.endDate")
    assert _dates(result) == (_AT, _AT)
    assert _entry(result, "properties.startDate").outcome == "info"
    assert "not in the event" in _entry(result, "properties.endDate").reason
    missing = _activity({"startDate": "soon"}, timestamp=None, start_date_property="properties.startDate")
    assert missing.status == "discarded" and missing.reason_code == "missing_timestamp"


@pytest.mark.parametrize("setting", ["", "properties", "properties.", "properties..x", "a..b"])
def test_a_date_property_setting_must_name_a_property(setting: str) -> None:
    with pytest.raises(MappingConfigError, match="start_date_property"):
        DestinationSettings.build("suite", False, {"track_events": {"X": {**_MEETING, "start_date_property": setting}}})
