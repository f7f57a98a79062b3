"""``plan``: one normalised Segment message to a :class:`Plan`, through the table of message
types (one module each)."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from freshsales_destination.core.identity import IdentityState
from freshsales_destination.core.mapping_settings import DestinationSettings
from freshsales_destination.core.planning import envelope
from freshsales_destination.core.planning.alias import alias
from freshsales_destination.core.planning.builder import PlanBuilder, sorted_entries, text
from freshsales_destination.core.planning.cleaning import without_controls
from freshsales_destination.core.planning.delete import delete
from freshsales_destination.core.planning.events import page_view, screen, track
from freshsales_destination.core.planning.group import group
from freshsales_destination.core.planning.identify import identify
from freshsales_destination.core.planning.result import Plan, Stop
from freshsales_destination.core.schema import FieldSchema
from freshsales_destination.core.statuses import PlanStatus

MESSAGE_PLANNERS: Mapping[str, Callable[[PlanBuilder], None]] = {
    "identify": identify,
    "track": track,
    "page": page_view,
    "screen": screen,
    "group": group,
    "alias": alias,
    "delete": delete,
}


def plan(
    event: Any,
    settings: DestinationSettings,
    schema: FieldSchema,
    identity: IdentityState | None = None,
) -> Plan:
    """Plan the Freshsales operations for one normalised Segment message."""
    if not isinstance(event, Mapping):
        return Plan(status=PlanStatus.DISCARDED, reason="the event is not a JSON object", reason_code="not_an_object")
    event, cleaned = without_controls(event)
    builder = PlanBuilder(event=event, settings=settings, schema=schema, identity=identity)
    builder.message_id = envelope.message_id(event)
    builder.timestamp = envelope.timestamp(event)
    builder.user_id = text(event.get("userId"))
    if builder.user_id is not None and not builder.user_id.isascii():
        builder.user_id = unicodedata.normalize("NFC", builder.user_id)  # as ingest does
    kind = event.get("type")
    result = _plan(builder, event, kind)
    if not cleaned:
        return result
    # Added after planning: a cleaned value still gets its own verdict (mapped, dropped, ...).
    return replace(result, explanation=sorted_entries([*result.explanation, *cleaned]))


def _plan(builder: PlanBuilder, event: Mapping[str, Any], kind: Any) -> Plan:
    settings = builder.settings
    try:
        handler = MESSAGE_PLANNERS.get(kind) if isinstance(kind, str) else None
        if handler is None:
            valid = ", ".join(sorted(MESSAGE_PLANNERS))
            if kind is None:
                why = f"the event has no type: give \"type\", one of {valid}"
            else:
                shown = repr(kind) if len(repr(kind)) <= 40 else repr(kind)[:37] + "..."
                why = f"unsupported message type {shown}: the valid types are {valid}"
            raise Stop(PlanStatus.DISCARDED, "unsupported_type", why)
        if settings.mapping.honour_integrations and not envelope.integrations_enabled(
            event, settings.mapping.integration_names
        ):
            raise Stop(PlanStatus.FILTERED, "integrations_disabled", "the message's integrations object turns this destination off")
        handler(builder)
    except Stop as stop:
        builder.note(str(kind) if isinstance(kind, str) else "type", "info", stop.reason)
        # Nothing of a discarded or filtered message is sent: say so for every trait.
        prefix = builder.traits_prefix
        traits = event.get("traits") if prefix == "traits" else event["context"]["traits"]
        if isinstance(traits, Mapping):
            explained = {entry.source for entry in builder.entries}
            for key in traits:
                path = f"{prefix}.{key}"
                if not any(s == path or s.startswith(path + ".") for s in explained):
                    builder.note(path, "dropped", f"not sent: {stop.reason}")
        return Plan(
            status=stop.status,
            explanation=sorted_entries(builder.entries),
            reason=stop.reason,
            reason_code=stop.code,
        )
    return Plan(status=PlanStatus.PLANNED, operations=tuple(builder.ops), explanation=sorted_entries(builder.entries))


__all__ = ["MESSAGE_PLANNERS", "plan"]
