"""Properties of the planner over generated events (hypothesis)."""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from freshsales_destination.core.identity import IdentityState
from freshsales_destination.core.mapping_settings import DestinationSettings
from freshsales_destination.core.operations import Operation
from freshsales_destination.core.planner import check_settings, plan
from freshsales_destination.core.schema import FieldSchema, MappingConfigError, default_schema

FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SELECTORS = {
    "selectors": {
        "owners": [{"id": 7001, "email": "sam@acme.test", "display_name": "Sam"}],
        "lifecycle_stages": [{"id": "ls-1", "name": "Lead"}, {"id": "ls-3", "name": "Customer"}],
        "sales_activity_types": [{"id": 31, "name": "Chat"}, {"id": 32, "name": "Meeting"}],
        "deal_stages": [{"id": 44, "name": "Won"}],
        "lead_sources": [{"id": 51, "name": "Web"}],
    },
    "base": "default",
    "contacts": {
        "fields": [
            {"name": "cf_seats", "type": "number", "default": False},
            {"name": "cf_mrr", "type": "decimal", "default": False},
            {"name": "cf_renewal", "type": "date", "default": False},
            {"name": "cf_vip", "type": "checkbox", "default": False},
            {"name": "cf_tier", "type": "dropdown", "default": False,
             "choices": [{"id": 1, "value": "Gold"}]},
            {"name": "cf_channels", "type": "multi_select_dropdown", "default": False,
             "choices": [{"id": 1, "value": "Email"}, {"id": 2, "value": "SMS"}]},
        ]
    },
}
MAPPING = {
    "default_lifecycle_stage": "Lead",
    "group_id_field": "cf_segment_group_id",
    "track_events": {
        "Order Completed": {"action": "deal", "stage": "Won"},
        "Demo": {"action": "sales_activity", "activity_type": "Meeting"},
        "Signed Up": {"action": "lifecycle_stage", "stage": "Customer"},
        "Noise": {"action": "drop"},
    },
    "page_rules": {"Pricing": {"action": "note"}},
}

SCHEMAS = {p: FieldSchema.from_json(SELECTORS, product=p) for p in ("suite", "classic")}
SETTINGS = [
    DestinationSettings.build(product, token, mapping)
    for product in ("suite", "classic")
    for token in (False, True)
    for mapping in ({}, MAPPING)
]


def _usable(dest: DestinationSettings) -> bool:
    # The planner may raise only for settings check_settings refuses (a Classic account has no
    # lifecycle stages for the "Signed Up" rule): delivery never plans with those.
    try:
        check_settings(dest, SCHEMAS[dest.product])
    except MappingConfigError:
        return False
    return True


SETTINGS = [dest for dest in SETTINGS if _usable(dest)]
IDENTITIES = [
    None,
    IdentityState(user_id="u1", record_type="contact", record_id=1, email="a@b.co"),
    IdentityState(user_id="u1", record_type="lead", record_id=2, sales_account_ids=(9,)),
]

json_leaf = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12)
json_value = st.recursive(
    json_leaf,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
trait_names = st.sampled_from(
    [
        "firstName", "first_name", "lastName", "name", "email", "title", "phone", "address",
        "company", "deal", "fsContact", "fs_contact", "cfAlternateNumber", "cfSeats", "cfMrr",
        "cfRenewal", "cfVip", "cfTier", "cfChannels", "cfUnknown", "createdAt", "id", "age",
        "lifecycleStage", "leadSource", "ownerEmail", "tags", "city", "website", "emails",
        "external_id", "customField", "sales_accounts", "avatar", "mobileNumber",
    ]
) | st.text(max_size=10)
trait_value = (
    json_value
    | st.sampled_from(["true", "Gold", "Email;SMS", "2024-01-31", "12", "ada@example.com", "Web", "Customer"])
    | st.fixed_dictionaries({"name": st.text(max_size=10)}, optional={"amount": json_value, "industry": json_value})
)
traits = st.dictionaries(trait_names, trait_value, max_size=8)
user_ids = st.none() | st.sampled_from(["u1", "ada@example.com", "", "x@y"]) | st.text(max_size=6)

events = st.fixed_dictionaries(
    {"type": st.sampled_from(["identify", "track", "page", "screen", "group", "alias", "delete", "other"])},
    optional={
        "messageId": st.text(max_size=6),
        "timestamp": st.sampled_from(["2024-05-01T12:00:00Z", "nonsense"]) | json_value,
        "userId": user_ids,
        "anonymousId": st.text(max_size=4),
        "traits": traits | json_value,
        "properties": st.dictionaries(st.sampled_from(["url", "title", "name", "revenue", "order_id", "x"]), trait_value, max_size=5) | json_value,
        "context": st.fixed_dictionaries({}, optional={"traits": traits | json_value, "page": st.dictionaries(st.sampled_from(["url", "title"]), json_value)}) | json_value,
        "event": st.sampled_from(["Order Completed", "order_completed", "Demo", "Signed Up", "Noise", "Other"]) | json_value,
        "name": st.sampled_from(["Pricing", "Home"]) | json_value,
        "groupId": json_value,
        "previousId": json_value,
        "integrations": st.dictionaries(st.sampled_from(["All", "Freshsales", "Other"]), json_value, max_size=3),
    },
)


def _settings_and_identity(data: st.DataObject) -> tuple[DestinationSettings, IdentityState | None]:
    chosen = data.draw(st.sampled_from(SETTINGS))
    return chosen, data.draw(st.sampled_from(IDENTITIES))


@FAST
@given(event=json_value | events, data=st.data())
def test_never_raises_and_is_json(event: Any, data: st.DataObject) -> None:
    dest, identity = _settings_and_identity(data)
    result = plan(event, dest, SCHEMAS[dest.product], identity)
    doc = result.to_json()
    json.dumps(doc)  # serialisable
    assert doc["explanation"]["status"] in ("planned", "discarded", "filtered")
    if result.status != "planned":
        assert result.operations == () and result.reason and result.reason_code
    for op in result.operations:
        assert Operation.from_json(json.loads(json.dumps(op.to_json()))) == op
        for needed in op.needs:
            if needed in ("person", "person_type"):
                continue
            assert any(o.provides == needed for o in result.operations)


@FAST
@given(event=events, data=st.data())
def test_every_trait_is_explained(event: dict[str, Any], data: st.DataObject) -> None:
    event = {**event, "type": "identify"}
    dest, identity = _settings_and_identity(data)
    result = plan(event, dest, SCHEMAS[dest.product], identity)
    raw = event.get("traits")
    if not isinstance(raw, dict):
        return
    sources = [e.source for e in result.explanation]
    for key in raw:
        path = f"traits.{key}"
        assert any(s == path or s.startswith(path + ".") for s in sources), (key, sources)
        value = raw[key]
        if key in ("company", "deal") and isinstance(value, dict) and result.status == "planned":
            for sub in value:
                sub_path = f"{path}.{sub}"
                assert any(s == sub_path or s.startswith(sub_path + ".") for s in sources), sub_path


@FAST
@given(event=events, data=st.data())
def test_planning_is_deterministic_and_order_independent(event: dict[str, Any], data: st.DataObject) -> None:
    dest, identity = _settings_and_identity(data)
    schema = SCHEMAS[dest.product]
    first = plan(copy.deepcopy(event), dest, schema, identity).to_json()
    again = plan(copy.deepcopy(event), dest, schema, identity).to_json()
    assert first == again
    shuffled = dict(reversed(list(event.items())))
    for key in ("traits", "properties"):
        if isinstance(shuffled.get(key), dict):
            shuffled[key] = dict(reversed(list(shuffled[key].items())))
    assert json.dumps(plan(shuffled, dest, schema, identity).to_json(), sort_keys=True) == json.dumps(
        first, sort_keys=True
    )


@FAST
@given(event=events)
def test_default_schema_never_raises(event: dict[str, Any]) -> None:
    for product in ("suite", "classic"):
        plan(event, DestinationSettings.build(product, False, {}), default_schema(product))
