"""RudderStack's identify: traits in ``context.traits`` only (its SDKs never send top-level
traits); the planner reads them there, as RudderStack's own transformers do, and says so."""

from __future__ import annotations

from typing import Any

from freshsales_destination.core.mapping_settings import DestinationSettings
from freshsales_destination.core.planner import Plan, plan
from freshsales_destination.core.schema import default_schema

SUITE = DestinationSettings.build("suite", False, {})


def _identify(**extra: Any) -> dict[str, Any]:
    return {"type": "identify", "messageId": "m1", "timestamp": "2024-05-01T00:00:00Z",
            "userId": "u1", **extra}


def _entries(result: Plan) -> dict[str, tuple[str, str]]:
    return {e.source: (e.outcome, e.reason) for e in result.explanation}


def test_context_traits_are_the_traits_of_an_identify_without_traits() -> None:
    event = _identify(context={
        "traits": {"email": "ada@example.com", "firstName": "Ada", "cfAlternateNumber": "12"},
        "library": {"name": "analytics-python", "version": "2.1.9"},
    })
    result = plan(event, SUITE, default_schema())
    assert result.status == "planned"
    (person,) = result.operations
    assert person.kind == "upsert_contact"
    assert person.fields["emails"] == "ada@example.com"
    assert person.fields["first_name"] == "Ada"
    assert person.fields["custom_field"] == {"cf_alternate_number": "12"}
    entries = _entries(result)
    outcome, reason = entries["context.traits"]
    assert outcome == "used" and "no top-level traits" in reason
    assert entries["context.traits.firstName"][0] == "mapped"
    assert entries["context.traits.email"][0] == "mapped"
    assert not any(source.startswith("traits.") for source in entries)


def test_empty_or_null_top_level_traits_count_as_none() -> None:
    for traits in ({}, None):
        event = _identify(traits=traits, context={"traits": {"email": "ada@example.com"}})
        result = plan(event, SUITE, default_schema())
        assert result.status == "planned", traits
        assert result.operations[0].fields["emails"] == "ada@example.com"


def test_top_level_traits_win_over_context_traits() -> None:
    event = _identify(
        traits={"email": "top@example.com", "lastName": "Top"},
        context={"traits": {"email": "ctx@example.com", "firstName": "Ctx"}},
    )
    result = plan(event, SUITE, default_schema())
    (person,) = result.operations
    assert person.fields["emails"] == "top@example.com"
    assert person.fields["last_name"] == "Top"
    assert "first_name" not in person.fields  # context.traits are not merged in
    entries = _entries(result)
    outcome, reason = entries["context.traits"]
    assert outcome == "info" and "top-level traits" in reason
    assert entries["traits.email"][0] == "mapped"
    assert "context.traits.firstName" not in entries


def test_a_discarded_rudder_identify_explains_every_context_trait() -> None:
    event = _identify(userId="not-an-email", context={"traits": {"firstName": "Ada", "plan": "pro"}})
    result = plan(event, SUITE, default_schema())
    assert result.status == "discarded" and result.reason_code == "missing_email"
    assert result.reason is not None and "context.traits.email" in result.reason
    entries = _entries(result)
    for source in ("context.traits.firstName", "context.traits.plan"):
        assert entries[source][0] == "dropped", source
