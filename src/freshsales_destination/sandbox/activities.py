"""Sales activities and notes: records attached to a lead, contact, account or deal."""

from __future__ import annotations

from typing import Any

from freshsales_destination.sandbox.errors import validation_error
from freshsales_destination.sandbox.records import (
    apply_attrs,
    as_id,
    create_record,
    draft,
    public,
    require_text,
    settle,
    stamp_new,
    unwrap,
    update_record,
)
from freshsales_destination.sandbox.state import SandboxState

TARGET_KINDS = {"Contact": "contacts", "Lead": "leads", "SalesAccount": "sales_accounts", "Deal": "deals"}
ACTIVITY_ATTRS = {
    "title": "str", "sales_activity_type_id": "sel:sales_activity_types", "owner_id": "sel:owners",
    "start_date": "datetime", "end_date": "datetime", "notes": "str",
    "sales_activity_outcome_id": "sel:sales_activity_outcomes", "location": "str", "latitude": "str",
    "longitude": "str", "checkedin_at": "datetime",
}


def _target(state: SandboxState, candidate: dict[str, Any], attrs: dict[str, Any], creating: bool) -> None:
    if not creating and "targetable_type" not in attrs and "targetable_id" not in attrs:
        return
    ttype = attrs.get("targetable_type", candidate.get("targetable_type"))
    tid_raw = attrs.get("targetable_id", candidate.get("targetable_id"))
    if ttype is None or tid_raw is None:
        raise validation_error("Targetable can't be blank")
    if ttype not in TARGET_KINDS:
        raise validation_error(f"Targetable type {ttype} is invalid")
    if ttype == "Lead" and state.options.product != "classic":
        raise validation_error("Targetable type Lead is invalid")
    tid = as_id(tid_raw)
    if tid is None:
        raise validation_error("The type for targetable_id is invalid.")
    if state.get(TARGET_KINDS[ttype], tid) is None:
        raise validation_error(f"{ttype} {tid} does not exist")
    candidate["targetable_type"], candidate["targetable_id"] = ttype, tid
    candidate["targetables"] = [{"id": tid, "type": ttype}]


def _apply_activity(state: SandboxState, record: dict[str, Any], attrs: dict[str, Any], creating: bool) -> None:
    candidate = draft(state, "sales_activities", record, attrs, ACTIVITY_ATTRS)
    problems = []
    for name, label in (("title", "Title"), ("start_date", "Start date"), ("end_date", "End date"),
                        ("sales_activity_type_id", "Sales activity type")):
        if (creating or name in attrs) and candidate.get(name) in (None, ""):
            problems.append(f"{label} can't be blank")
    if problems:
        raise validation_error(*problems)
    _target(state, candidate, attrs, creating)
    settle(state, record, candidate, creating)


def _new_activity(state: SandboxState) -> dict[str, Any]:
    record: dict[str, Any] = {name: None for name in ACTIVITY_ATTRS}
    record.update({"id": state.new_id(), "custom_field": {}, "status": False, "completed_date": None,
                   "conversation_time": None, "creater_id": state.selectors["owners"][0]["id"],
                   "updater_id": state.selectors["owners"][0]["id"]})
    if record["owner_id"] is None:
        record["owner_id"] = state.selectors["owners"][0]["id"]
    return stamp_new(state, record)


def create_activity(state: SandboxState, body: dict[str, Any]) -> dict[str, Any]:
    attrs = unwrap(body, "sales_activity")
    return create_record(state, "sales_activities", attrs, _new_activity, _apply_activity)


def update_activity(state: SandboxState, record_id: int, body: dict[str, Any]) -> dict[str, Any]:
    return update_record(state, "sales_activities", "sales_activity", record_id, body, _apply_activity)


def _new_note(state: SandboxState) -> dict[str, Any]:
    return stamp_new(state, {"id": state.new_id(), "description": None,
                             "creater_id": state.selectors["owners"][0]["id"]})


def create_note(state: SandboxState, body: dict[str, Any]) -> dict[str, Any]:
    return create_record(state, "notes", unwrap(body, "note"), _new_note, _apply_note)


def _apply_note(state: SandboxState, record: dict[str, Any], attrs: dict[str, Any], creating: bool) -> None:
    candidate = dict(record)
    apply_attrs(state, candidate, attrs, {"description": "str"})
    if creating or "description" in attrs:
        require_text(candidate, "description", "Description")
    _target(state, candidate, attrs, creating)
    settle(state, record, candidate, creating)


def update_note(state: SandboxState, record_id: int, body: dict[str, Any]) -> dict[str, Any]:
    return update_record(state, "notes", "note", record_id, body, _apply_note)


def render(record: dict[str, Any]) -> dict[str, Any]:
    return public(record)


def timeline(state: SandboxState, ttype: str, record_id: int) -> list[dict[str, Any]]:
    """Everything attached to one record: sales activities, notes, tracked events and page views."""
    items: list[dict[str, Any]] = []
    for kind, label in (("sales_activities", "sales_activity"), ("notes", "note")):
        for rec in state.table(kind).values():
            if rec.get("targetable_type") == ttype and rec.get("targetable_id") == record_id:
                items.append({"id": rec["id"], "action_type": label, "created_at": rec["created_at"],
                              "targetable_type": ttype, "targetable_id": record_id, "data": public(rec)})
    for entry in state.tracking:
        if entry.get("targetable_type") == ttype and entry.get("targetable_id") == record_id:
            items.append({"id": entry["id"], "action_type": entry["type"], "created_at": entry["created_at"],
                          "targetable_type": ttype, "targetable_id": record_id, "data": entry.get("data")})
    items.sort(key=lambda i: (i["created_at"], i["id"]))
    return items
