"""The ``sales_activity`` rule action: a sales activity on the person, with its dates."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from freshsales_destination.core.mapping_settings import DestinationSettings, SalesActivityRule
from freshsales_destination.core.operations import OperationKind, ref
from freshsales_destination.core.planning.actions import EventCall, RuleHandler
from freshsales_destination.core.planning.builder import PlanBuilder
from freshsales_destination.core.planning.people import ensure_person, targetable
from freshsales_destination.core.planning.result import Stop
from freshsales_destination.core.planning.templates import describe, property_value, render
from freshsales_destination.core.schema import FieldSchema
from freshsales_destination.core.segment import format_time, parse_time
from freshsales_destination.core.statuses import PlanStatus


def activity_type_id(schema: FieldSchema, rule: SalesActivityRule, where: str) -> Any:
    """The activity type's id; ``events_via`` rules name it in ``events_activity_type``."""
    setting = "events_activity_type" if where == "events_via" else f"{where}.activity_type"
    return schema.require("sales_activity_types", rule.activity_type, setting)


def owner_id(schema: FieldSchema, rule: SalesActivityRule, where: str) -> Any:
    """The owner's id when the rule names one, else None."""
    if not rule.owner_email:
        return None
    return schema.require("owners", rule.owner_email, f"{where}.owner_email")


def check(rule: SalesActivityRule, where: str, settings: DestinationSettings, schema: FieldSchema) -> None:
    activity_type_id(schema, rule, where)
    owner_id(schema, rule, where)


def apply(b: PlanBuilder, rule: SalesActivityRule, call: EventCall) -> None:
    where, label, name, props, person = call.where, call.label, call.name, call.props, call.person
    type_id = activity_type_id(b.schema, rule, where)
    start_date, end_date = _activity_dates(b, rule, props)
    title = (render(b, rule.title, label, name, props) if rule.title else None) or label
    ensure_person(b, person, "a sales activity needs the person's id")
    fields: dict[str, Any] = {
        "title": title,
        "sales_activity_type_id": type_id,
        "start_date": start_date,
        "end_date": end_date,
        "notes": describe(title, props, None),
        "targetable_type": targetable(person.record_type),
        "targetable_id": ref("person"),
    }
    if rule.owner_email:
        fields["owner_id"] = owner_id(b.schema, rule, where)
    b.add(OperationKind.CREATE_SALES_ACTIVITY, "sales_activity", fields=dict(sorted(fields.items())))
    if props:
        b.note("properties", "mapped", "listed in the activity's notes", "sales_activity.notes")


def _activity_dates(b: PlanBuilder, rule: SalesActivityRule, props: Mapping[str, Any]) -> tuple[str, str]:
    """A sales activity's start and end: from the properties the rule names when they hold
    dates, else the event's time for the start and the start for the end (an end before the
    start is not sent either). Every choice is explained."""
    start_at: datetime | None
    start = _property_date(b, rule.start_date_property, props, "start", "the activity starts at the event's time")
    if start is not None:
        start_text, start_at = start
        b.note(str(rule.start_date_property), "mapped", "the activity's start", "sales_activity.start_date")
    elif b.timestamp is None:
        raise Stop(PlanStatus.DISCARDED, "missing_timestamp", "a sales activity needs the event's timestamp")
    else:
        start_text, start_at = b.timestamp, parse_time(b.timestamp)
    end = _property_date(b, rule.end_date_property, props, "end", "the activity ends at its start")
    if end is None:
        return start_text, start_text
    end_text, end_at = end
    setting = str(rule.end_date_property)
    if start_at is not None and end_at < start_at:
        began = "from " + str(rule.start_date_property) if start is not None else "the event's time"
        b.note(setting, "dropped", f"{end_text} is before the activity's start {start_text} "
               f"({began}): the activity ends at its start", "sales_activity.end_date")
        return start_text, start_text
    b.note(setting, "mapped", "the activity's end", "sales_activity.end_date")
    return start_text, end_text


def _property_date(
    b: PlanBuilder, setting: str | None, props: Mapping[str, Any], what: str, fallback: str
) -> tuple[str, datetime] | None:
    """The date in the property ``setting`` names (``properties.KEY``); None, explained,
    when there is no such setting, no such property or no date in it."""
    if setting is None:
        return None
    target = f"sales_activity.{what}_date"
    found, value = property_value(props, setting[len("properties.") :])
    if not found or value is None or value == "":
        b.note(setting, "info", f"not in the event: {fallback}", target)
        return None
    when = parse_time(value)
    if when is None:
        shown = json.dumps(value, ensure_ascii=False, default=str)
        shown = shown if len(shown) <= 60 else shown[:59] + "…"
        b.note(setting, "dropped", f"{shown} is not a date (ISO 8601 expected, such as "
               f"2024-05-01T10:00:00Z): {fallback}", target)
        return None
    return format_time(when), when


HANDLER = RuleHandler(check=check, apply=apply)

__all__ = ["HANDLER", "activity_type_id", "apply", "check", "owner_id"]
