"""The pure parts of delivery/preserve.py: complete custom objects, evidence, link unions."""

from __future__ import annotations

from pathlib import Path

from freshsales_destination.delivery.memory import DeliveryMemory
from freshsales_destination.delivery.preserve import (
    can_probe,
    complete_custom,
    custom_evidence,
    custom_of,
    links_of,
    union_links,
)
from freshsales_destination.store.sqlite import SQLiteStore


def test_complete_custom_keeps_current_values_and_applies_changes() -> None:
    current = {"cf_a": "1", "cf_b": "sales", "cf_empty": None, "cf_blank": ""}
    assert complete_custom(current, {"cf_a": "2", "cf_c": 3}) == {
        "cf_a": "2", "cf_b": "sales", "cf_c": 3,
    }
    assert complete_custom(None, {"cf_a": "2"}) == {"cf_a": "2"}
    # A change to empty is sent: the event clears the field.
    assert complete_custom({"cf_a": "1"}, {"cf_a": None}) == {"cf_a": None}


def test_a_split_write_is_made_only_when_nothing_but_the_messages_values_is_at_stake() -> None:
    assert can_probe({}, {"cf_a": 1, "cf_b": 2})
    assert can_probe({"cf_a": 0, "cf_x": None}, {"cf_a": 1, "cf_b": 2})
    assert not can_probe({"cf_sales": "VIP"}, {"cf_a": 1, "cf_b": 2}), "a salesperson's value"
    assert not can_probe({}, {"cf_a": 1}), "one field shows nothing"
    assert not can_probe(None, {"cf_a": 1, "cf_b": 2}), "current values unknown"


def test_evidence_from_the_answer_to_a_partial_write() -> None:
    before = {"cf_a": "1", "cf_b": "2", "cf_none": None}
    assert custom_evidence(before, {"cf_a": "9"}, {"cf_a": "9", "cf_b": "2"}) == ("merge", ["cf_b"])
    assert custom_evidence(before, {"cf_a": "9"}, {"cf_a": "9"}) == ("replace", ["cf_b"])
    assert custom_evidence(before, {"cf_a": "9"}, {"cf_a": "9", "cf_b": None}) == (
        "replace", ["cf_b"],
    )
    # Nothing else was set, or the answer does not show custom fields: no evidence.
    assert custom_evidence({"cf_a": "1"}, {"cf_a": "9"}, {"cf_a": "9"}) == (None, [])
    assert custom_evidence(before, {"cf_a": "9"}, None) == (None, [])
    assert custom_evidence(None, {"cf_a": "9"}, {"cf_a": "9"}) == (None, [])


def test_answers_are_read_defensively() -> None:
    assert custom_of({"custom_field": {"cf_a": 1}}) == {"cf_a": 1}
    assert custom_of({"id": 1}) is None
    assert custom_of(None) is None
    assert links_of({"id": 1}) is None, "an answer without the list says nothing"
    assert links_of({"sales_accounts": []}) == []
    assert links_of({"sales_accounts": [{"id": 5, "is_primary": True, "name": "A"}, {"x": 1}]}) == [
        {"id": 5, "is_primary": True}
    ]


def test_union_keeps_every_link_and_the_primary() -> None:
    current = [{"id": 1, "is_primary": False}, {"id": 2, "is_primary": True}]
    assert union_links(current, [3]) == [
        {"id": 1, "is_primary": False}, {"id": 2, "is_primary": True}, {"id": 3, "is_primary": False},
    ]
    assert union_links(current, [2]) == current, "already linked: nothing changes"
    assert union_links(current, ["2"]) == current, "ids compare as text"
    assert union_links([], [3, 4]) == [{"id": 3, "is_primary": True}, {"id": 4, "is_primary": False}]


def test_union_moves_the_primary_only_when_asked() -> None:
    current = [{"id": 1, "is_primary": True}]
    assert union_links(current, [3], new_primary=True) == [
        {"id": 1, "is_primary": False}, {"id": 3, "is_primary": True},
    ]
    assert union_links(current, [1], new_primary=True) == current


def test_written_custom_fields_are_remembered_one_by_one(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "m.db")
    store.open()
    try:
        memory = DeliveryMemory(store, "crm")
        memory.remember_written("contact:u", {"first_name": "A", "custom_field": {"cf_a": 1, "cf_b": 2}}, 1.0)
        assert memory.changed_fields("contact:u", {"first_name": "A", "custom_field": {"cf_a": 1, "cf_b": 3}}) == {
            "custom_field": {"cf_b": 3}
        }
        assert memory.changed_fields("contact:u", {"custom_field": {"cf_a": 1}}) == {}
        assert memory.changed_fields("contact:u", {"first_name": "B", "custom_field": {}}) == {"first_name": "B"}
    finally:
        store.close()
