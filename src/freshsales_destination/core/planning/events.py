"""track, page and screen: find the event's rule, then let the rule act (``rules.py``).

A track's ``context.traits`` update its person first (``identify.py``). The rule ``auto``
stands for the destination's way for events (``core/events_via.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from freshsales_destination.core.events_via import EventsWay, events_way
from freshsales_destination.core.mapping_settings import (
    AutoRule,
    DropRule,
    NoteRule,
    SalesActivityRule,
    TrackApiRule,
    find_rule,
)
from freshsales_destination.core.planning.actions import EventCall
from freshsales_destination.core.planning.builder import PlanBuilder, text
from freshsales_destination.core.planning.identify import context_traits
from freshsales_destination.core.planning.people import event_person
from freshsales_destination.core.planning.result import Stop
from freshsales_destination.core.planning.rules import apply_rule
from freshsales_destination.core.statuses import PlanStatus


def track(b: PlanBuilder) -> None:
    name = text(b.event.get("event")) if isinstance(b.event.get("event"), str) else None
    if name is None:
        raise Stop(PlanStatus.DISCARDED, "missing_event_name", "track needs an event name")
    props = b.obj("properties")
    context = b.obj("context")
    ctx_traits = b.obj("traits", context) if context else {}
    person = event_person(b, ctx_traits)
    key, rule = _pick(b, b.settings.mapping.track_events, b.settings.mapping.track_default, name, "track_events", "track_default")
    if isinstance(rule, DropRule):
        b.drop_all(ctx_traits, "context.traits", "the event is dropped by its rule")
        raise Stop(PlanStatus.FILTERED, "rule_drop", rule.reason or f"{key} drops {name!r}")
    if ctx_traits:
        context_traits(b, ctx_traits, person)
    if isinstance(rule, AutoRule):
        key, rule = "events_via", events_rule(b, "event", _events_way(b))
    apply_rule(b, rule, EventCall(key, f"{name}", name, props, person, None))


def page(b: PlanBuilder, kind: str) -> None:
    """A page or screen view (``kind``)."""
    props = b.obj("properties")
    context = b.obj("context")
    page_ctx = b.obj("page", context) if context else {}
    name = text(b.event.get("name")) if isinstance(b.event.get("name"), str) else None
    if name is None and isinstance(props.get("name"), str):
        name = text(props.get("name"))
    url = props.get("url") if isinstance(props.get("url"), str) and props.get("url") else None
    url_source = "properties.url"
    if url is None and isinstance(page_ctx.get("url"), str) and page_ctx.get("url"):
        url, url_source = page_ctx["url"], "context.page.url"
    title = props.get("title") if isinstance(props.get("title"), str) else None
    if title is None and isinstance(page_ctx.get("title"), str):
        title = page_ctx["title"]
    person = event_person(b, {})
    rules = b.settings.mapping.page_rules
    key, rule = _pick(b, rules, b.settings.mapping.page_default, name or "", "page_rules", "page_default")
    if isinstance(rule, AutoRule):
        way = _events_way(b)
        if way.basis != "no app_token":
            key, rule = "events_via", events_rule(b, kind, way)
        else:
            raise Stop(
                PlanStatus.FILTERED,
                "page_not_delivered",
                f"{kind} views go to the tracking API, and the destination has no app_token "
                "(set mapping.page_default to record them another way)",
            )
    if isinstance(rule, DropRule):
        raise Stop(PlanStatus.FILTERED, "rule_drop", rule.reason or f"{key} drops this {kind}")
    label = f"Viewed {kind} {name or url or ''}".strip()
    view = {"url": url, "url_source": url_source, "title": title, "name": name}
    apply_rule(b, rule, EventCall(key, label, name, props, person, view))


def _events_way(b: PlanBuilder) -> EventsWay:
    s = b.settings
    return events_way(s.events_via, s.has_app_token, s.tracking_api)


def events_rule(b: PlanBuilder, source: str, way: EventsWay) -> Any:
    """The rule standing for ``auto``: the way this destination's events go (events_via)."""
    b.note(source, "info", f"events go by {way.describe()}")
    if way.way == "tracking":
        return TrackApiRule(action="track_api")
    if way.way == "sales_activity":
        return SalesActivityRule(
            action="sales_activity", activity_type=b.settings.events_activity_type or ""
        )
    return NoteRule(action="note")


def _pick(
    b: PlanBuilder, rules: Mapping[str, Any], default: Any, name: str, where: str, default_where: str
) -> tuple[str, Any]:
    found = find_rule(rules, name) if name else None
    if found is not None:
        key, rule = found
        label = f"mapping.{where}[{key!r}]"
        b.note("event" if where == "track_events" else "name", "used", f"matches {label}: {rule.action}")
        return label, rule
    label = f"mapping.{default_where}"
    b.note("event" if where == "track_events" else "name", "used", f"no rule for {name!r}: {label} ({default.action})")
    return label, default


def screen(b: PlanBuilder) -> None:
    page(b, "screen")


def page_view(b: PlanBuilder) -> None:
    page(b, "page")


__all__ = ["events_rule", "page", "page_view", "screen", "track"]
