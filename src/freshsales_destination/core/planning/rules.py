"""Rule actions for track, page and screen events, and THE table of them.

:data:`RULE_HANDLERS` maps each actionable rule type to its :class:`RuleHandler`: planning
applies an event's rule through it (:func:`apply_rule`) and ``check_settings`` checks every
configured rule through it (:func:`check_rule`), so both resolve the same names the same way.
``auto`` and ``drop`` never reach it: ``events.py`` turns ``auto`` into the destination's
way for events and stops at ``drop``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from freshsales_destination.core.mapping_settings import (
    DealRule,
    DestinationSettings,
    LifecycleStageRule,
    NoteRule,
    SalesActivityRule,
    TrackApiRule,
)
from freshsales_destination.core.operations import OperationKind, ref
from freshsales_destination.core.planning import activity_rule, deal_rule
from freshsales_destination.core.planning.actions import EventCall, RuleHandler
from freshsales_destination.core.planning.builder import PlanBuilder
from freshsales_destination.core.planning.people import ensure_person, targetable
from freshsales_destination.core.planning.result import Stop
from freshsales_destination.core.planning.templates import describe, page_props, render
from freshsales_destination.core.schema import FieldSchema, MappingConfigError
from freshsales_destination.core.statuses import PlanStatus

# -- track_api: the tracking API's events and page views ---------------------------------------


def _check_track_api(rule: TrackApiRule, where: str, settings: DestinationSettings, schema: FieldSchema) -> None:
    if not settings.has_app_token:
        raise MappingConfigError(f"{where} uses track_api, but the destination has no app_token", kind="app_token")


def _track_api(b: PlanBuilder, rule: TrackApiRule, call: EventCall) -> None:
    person, props, page = call.person, call.props, call.page
    identifier = person.email or person.user_id
    _check_track_api(rule, call.where, b.settings, b.schema)
    if page is None:
        event: dict[str, Any] = {"name": call.label}
        for k in sorted(props):
            if k == "name":
                b.note("properties.name", "dropped", "would overwrite the event name")
                continue
            event[k] = props[k]
        if props:
            b.note("properties", "mapped", f"{len(event) - 1} properties sent with the event", "event")
        b.add(OperationKind.TRACK_EVENT, "event", fields={"identifier": identifier, "event": event})
    else:
        if page["url"] is None:
            raise Stop(PlanStatus.DISCARDED, "missing_url", "a page view needs properties.url or context.page.url")
        view = {"url": page["url"]}
        b.note(page["url_source"], "mapped", "the page view's url", "page_view.url")
        if page["title"] is not None:
            view["title"] = page["title"]
        if call.name is not None:
            view["name"] = call.name
        for k in sorted(props):
            if k not in ("url", "title", "name"):
                b.note(f"properties.{k}", "dropped", "a page view carries url, title and name only")
        b.add(OperationKind.TRACK_PAGE_VIEW, "page_view", fields={"identifier": identifier, "page_view": view})
    b.note("identifier", "used", f"the tracking API identifies the person by {'email' if person.email else 'userId'}")


# -- note ----------------------------------------------------------------------------------------


def _check_nothing(rule: Any, where: str, settings: DestinationSettings, schema: FieldSchema) -> None:
    return None


def _note(b: PlanBuilder, rule: NoteRule, call: EventCall) -> None:
    label, props, person = call.label, call.props, call.person
    title = render(b, rule.title, label, call.name, props) if rule.title else label
    ensure_person(b, person, "a note needs the person's id")
    description = describe(title or label, props, b.timestamp)
    b.add(
        OperationKind.CREATE_NOTE,
        "note",
        fields={
            "description": description,
            "targetable_type": targetable(person.record_type),
            "targetable_id": ref("person"),
        },
    )
    if props:
        b.note("properties", "mapped", "listed in the note", "note.description")


# -- lifecycle_stage -------------------------------------------------------------------------------


def lifecycle_stage_id(schema: FieldSchema, rule: LifecycleStageRule, where: str) -> Any:
    """The stage's id; refused when contacts have no lifecycle stage in this account."""
    if schema.entity("contacts").get("lifecycle_stage_id") is None:
        raise MappingConfigError(
            f"{where}: contacts have no lifecycle_stage_id field in this account",
            kind="lifecycle_stages",
            name=rule.stage,
        )
    return schema.require("lifecycle_stages", rule.stage, f"{where}.stage")


def _check_lifecycle_stage(rule: LifecycleStageRule, where: str, settings: DestinationSettings, schema: FieldSchema) -> None:
    lifecycle_stage_id(schema, rule, where)


def _lifecycle_stage(b: PlanBuilder, rule: LifecycleStageRule, call: EventCall) -> None:
    stage_id = lifecycle_stage_id(b.schema, rule, call.where)
    if call.person.record_type == "lead":
        raise Stop(PlanStatus.DISCARDED, "lead_has_no_lifecycle_stage", "lifecycle stages apply to contacts, and this person is a Classic lead")
    ensure_person(b, call.person, "a lifecycle stage change needs the contact's id")
    b.add(
        OperationKind.UPDATE_LIFECYCLE_STAGE,
        "contact",
        key={"id": ref("person")},
        fields={"lifecycle_stage_id": stage_id},
    )
    b.note("event", "info", f"sets the lifecycle stage {rule.stage!r}", "contact.lifecycle_stage_id")


# -- the table -------------------------------------------------------------------------------------

RULE_HANDLERS: Mapping[type[Any], RuleHandler] = {
    TrackApiRule: RuleHandler(check=_check_track_api, apply=_track_api, page_as_properties=False),
    NoteRule: RuleHandler(check=_check_nothing, apply=_note),
    SalesActivityRule: activity_rule.HANDLER,
    LifecycleStageRule: RuleHandler(check=_check_lifecycle_stage, apply=_lifecycle_stage),
    DealRule: deal_rule.HANDLER,
}


def apply_rule(b: PlanBuilder, rule: Any, call: EventCall) -> None:
    """Plan what ``rule`` does with the event."""
    handler = RULE_HANDLERS.get(type(rule))
    if handler is None:
        raise AssertionError(f"unhandled rule {rule!r}")  # pragma: no cover
    if call.page is not None and handler.page_as_properties:
        call = EventCall(call.where, call.label, call.name, page_props(call.page, call.props),
                         call.person, call.page)
    handler.apply(b, rule, call)


def check_rule(rule: Any, where: str, settings: DestinationSettings, schema: FieldSchema) -> None:
    """Raise :class:`MappingConfigError` when the account or destination cannot carry out
    ``rule`` (set at ``where``); rules without a handler (``auto``, ``drop``) need nothing."""
    handler = RULE_HANDLERS.get(type(rule))
    if handler is not None:
        handler.check(rule, where, settings, schema)


__all__ = ["RULE_HANDLERS", "apply_rule", "check_rule", "lifecycle_stage_id"]
