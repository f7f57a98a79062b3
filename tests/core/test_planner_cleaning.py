"""Control characters in trait and property values are removed before Freshsales sees them,
and the explanation says so; ids are compared as Unicode NFC."""

from __future__ import annotations

import unicodedata

from freshsales_destination.core.mapping_settings import DestinationSettings
from freshsales_destination.core.planner import plan
from freshsales_destination.core.schema import default_schema

SUITE = DestinationSettings.build("suite", False, {})


def test_control_characters_are_removed_and_explained() -> None:
    event = {
        "type": "identify", "messageId": "m1", "userId": "u1",
        "traits": {"email": "ada@example.com", "firstName": "A\x00da", "lastName": "Byron",
                   "company": {"name": "Ana\x01lytical"}, "bad\x00": "v", "\x00": "gone"},
    }
    result = plan(event, SUITE, default_schema())
    assert result.status == "planned"
    person = result.operations[0]
    assert person.fields["first_name"] == "Ada" and person.fields["last_name"] == "Byron"
    assert result.operations[1].key == {"name": "Analytical"}
    by_source: dict[str, list[tuple[str, str]]] = {}
    for entry in result.explanation:
        by_source.setdefault(entry.source, []).append((entry.outcome, entry.reason))
    assert ("mapped" in [o for o, _ in by_source["traits.firstName"]])
    assert any("control characters" in r for o, r in by_source["traits.firstName"] if o == "info")
    assert any("control characters" in r for _, r in by_source["traits.company.name"])
    assert any("read as traits.bad" in r for _, r in by_source["traits.bad\x00"])
    assert [o for o, _ in by_source["traits.\x00"]] == ["dropped"]
    assert "traits.lastName" in by_source
    assert not any("control characters" in r for _, r in by_source["traits.lastName"])


def test_a_clean_event_gets_no_such_entry_and_is_not_copied() -> None:
    event = {"type": "identify", "messageId": "m1", "userId": "u1",
             "traits": {"email": "ada@example.com", "address": "line 1\nline 2\tx"}}
    result = plan(event, SUITE, default_schema())
    assert not any("control characters" in e.reason for e in result.explanation)
    assert result.operations[0].fields["address"] == "line 1\nline 2\tx"


def test_the_user_id_is_planned_as_nfc() -> None:
    decomposed = unicodedata.normalize("NFD", "josé@example.com")
    event = {"type": "identify", "messageId": "m1", "userId": decomposed, "traits": {}}
    result = plan(event, SUITE, default_schema())
    assert result.operations[0].fields["external_id"] == unicodedata.normalize("NFC", decomposed)
