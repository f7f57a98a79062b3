"""The ``mapping`` table of a ``[destinations.NAME]`` configuration, and the planner's settings.

Example (TOML)::

    [destinations.acme.mapping]
    default_lifecycle_stage = "Lead"          # Suite: stage given to contacts not seen before
    default_owner_email = "sales@acme.test"   # owner given to people not seen before
    group_id_field = "cf_segment_group_id"    # sales-account field that keeps group's groupId
    company_becomes_primary = false           # a new company link never steals the primary

    [destinations.acme.mapping.track_events."Order Completed"]
    action = "deal"
    name = "Order {properties.order_id|messageId}"
    amount_property = ["revenue", "total"]
    stage = "Won"

    [destinations.acme.mapping.track_events."Demo Requested"]
    action = "sales_activity"
    activity_type = "Meeting"
    start_date_property = "properties.startDate"   # default: the event's time
    end_date_property = "properties.endDate"       # default: the activity's start

    [destinations.acme.mapping.track_events."Signed Up"]
    action = "lifecycle_stage"
    stage = "Sales Qualified Lead"

    [destinations.acme.mapping.track_events."Email Opened"]
    action = "drop"

    [destinations.acme.mapping.page_default]
    action = "note"

Actions: ``auto`` (the way the destination's ``events_via`` says, ``core/events_via.py``: the
tracking API where the account has it, else a note; without an app token a note for track
events and a drop for pages), ``track_api``, ``note``, ``sales_activity``, ``lifecycle_stage``,
``deal`` and ``drop``. Templates (``title``, ``name``) accept ``{event}``, ``{name}``,
``{userId}``, ``{messageId}`` and ``{properties.KEY}``, with ``|`` between fallbacks.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from freshsales_destination.core.events_via import EVENTS_VIA, EventsVia, TrackingApi
from freshsales_destination.core.schema import MappingConfigError

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_ROOTS = ("event", "name", "userId", "messageId")


def template_placeholders(template: str) -> list[list[str]]:
    """The alternatives of every ``{...}`` placeholder in ``template``."""
    return [[p.strip() for p in m.group(1).split("|")] for m in _PLACEHOLDER.finditer(template)]


def _check_template(value: str | None) -> str | None:
    if value is None:
        return value
    for alternatives in template_placeholders(value):
        for alt in alternatives:
            if alt in _ROOTS or (alt.startswith("properties.") and len(alt) > len("properties.")):
                continue
            raise ValueError(
                f"unknown placeholder {{{alt}}}: use event, name, userId, messageId "
                "or properties.KEY"
            )
    return value


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AutoRule(_Rule):
    action: Literal["auto"] = "auto"


class TrackApiRule(_Rule):
    action: Literal["track_api"]


class NoteRule(_Rule):
    action: Literal["note"]
    title: str | None = None

    @field_validator("title")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        return _check_template(value)


def property_path(value: str) -> str:
    """The path inside ``properties`` a setting names: ``properties.startDate`` (or the bare
    ``startDate``) -> ``startDate``; ``properties.meeting.start`` -> ``meeting.start``."""
    path = value.strip()
    if path.startswith("properties."):
        path = path[len("properties.") :]
    if not path or path == "properties" or any(not part for part in path.split(".")):
        raise ValueError(f"{value!r} is not a property path: use properties.KEY")
    return f"properties.{path}"


class SalesActivityRule(_Rule):
    action: Literal["sales_activity"]
    activity_type: str = Field(min_length=1)
    title: str | None = None
    owner_email: str | None = None
    # Where the activity's start and end come from (``properties.startDate``); by default, and
    # whenever the property is absent or not a date, the event's time (see the planner).
    start_date_property: str | None = None
    end_date_property: str | None = None

    @field_validator("title")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        return _check_template(value)

    @field_validator("start_date_property", "end_date_property")
    @classmethod
    def _property(cls, value: str | None) -> str | None:
        return None if value is None else property_path(value)


class LifecycleStageRule(_Rule):
    action: Literal["lifecycle_stage"]
    stage: str = Field(min_length=1)


class DealRule(_Rule):
    action: Literal["deal"]
    name: str = "{event} {properties.order_id|properties.orderId|properties.checkout_id|messageId}"
    amount_property: list[str] = Field(default_factory=lambda: ["revenue", "total", "value"])
    stage: str | None = None

    @field_validator("name")
    @classmethod
    def _template(cls, value: str) -> str | None:
        return _check_template(value)

    @field_validator("amount_property", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class DropRule(_Rule):
    action: Literal["drop"]
    reason: str | None = None


EventRule = Annotated[
    AutoRule | TrackApiRule | NoteRule | SalesActivityRule | LifecycleStageRule | DealRule | DropRule,
    Field(discriminator="action"),
]


class MappingSettings(BaseModel):
    """How events become Freshsales operations (``[destinations.NAME.mapping]``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default_lifecycle_stage: str | None = None
    default_owner_email: str | None = None
    group_id_field: str | None = None
    track_events: dict[str, EventRule] = Field(default_factory=dict)
    track_default: EventRule = Field(default_factory=AutoRule)
    page_rules: dict[str, EventRule] = Field(default_factory=dict)
    page_default: EventRule = Field(default_factory=AutoRule)
    honour_integrations: bool = True
    company_becomes_primary: bool = False
    """An identify's ``company`` linked to a contact that already has accounts becomes its
    primary account; by default the contact's primary stays as it is (the salesperson's choice)."""
    integration_names: list[str] = Field(
        default_factory=lambda: ["Freshsales", "Freshsales Suite - CRM"]
    )

    @field_validator("track_default", "page_default", mode="before")
    @classmethod
    def _bare_action(cls, value: Any) -> Any:
        return {"action": value} if isinstance(value, str) else value

    @field_validator("track_events", "page_rules", mode="before")
    @classmethod
    def _bare_actions(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: ({"action": v} if isinstance(v, str) else v) for k, v in value.items()}
        return value


def normalise_event_name(name: str) -> str:
    """``"Order Completed"``, ``"order_completed"`` and ``"order-completed"`` compare equal."""
    return " ".join(re.split(r"[\s_\-]+", name.strip().casefold())).strip()


def find_rule(rules: Mapping[str, Any], name: str) -> tuple[str, Any] | None:
    """The rule for ``name``: an exact key first, then keys equal after normalisation."""
    if name in rules:
        return name, rules[name]
    wanted = normalise_event_name(name)
    for key in sorted(rules):
        if normalise_event_name(key) == wanted:
            return key, rules[key]
    return None


@dataclass(frozen=True)
class DestinationSettings:
    """What the planner needs to know about one destination."""

    product: Literal["suite", "classic"] = "suite"
    has_app_token: bool = False
    mapping: MappingSettings = MappingSettings()
    # Where track and page events of rule `auto` go (core/events_via.py), the activity type
    # for `events_via = "sales_activity"`, and what delivery learned about the tracking API
    # (data passed in: the planner stays pure).
    events_via: EventsVia = "auto"
    events_activity_type: str | None = None
    tracking_api: TrackingApi = "unknown"
    # Track, page and screen events older than this many days when planned are filtered
    # (core/event_age.py); None: no limit.
    event_max_age_days: float | None = None

    @classmethod
    def build(
        cls, product: str, has_app_token: bool, mapping: Mapping[str, Any] | None,
        *, events_via: str = "auto", events_activity_type: str | None = None,
        event_max_age_days: float | None = None,
    ) -> DestinationSettings:
        """Validate a raw ``mapping`` table; errors become :class:`MappingConfigError`."""
        if product not in ("suite", "classic"):
            raise MappingConfigError(f"product must be 'suite' or 'classic', not {product!r}")
        if events_via not in EVENTS_VIA:
            raise MappingConfigError(
                f"events_via must be one of {', '.join(EVENTS_VIA)}, not {events_via!r}",
                kind="events_via",
            )
        if events_via == "sales_activity" and not events_activity_type:
            raise MappingConfigError(
                'events_via = "sales_activity" needs events_activity_type (a sales activity type '
                "name or id)", kind="events_via",
            )
        if events_via == "tracking" and not has_app_token:
            raise MappingConfigError(
                'events_via = "tracking" needs an app_token', kind="app_token"
            )
        try:
            parsed = MappingSettings.model_validate(dict(mapping or {}))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'mapping'}: {e['msg']}"
                for e in exc.errors(include_input=False, include_url=False)
            )
            raise MappingConfigError(f"invalid mapping settings: {problems}", kind="mapping") from None
        return cls(
            product=product,  # type: ignore[arg-type]
            has_app_token=has_app_token,
            mapping=parsed,
            events_via=events_via,
            events_activity_type=events_activity_type,
            event_max_age_days=event_max_age_days,
        )


__all__ = [
    "AutoRule",
    "DealRule",
    "DestinationSettings",
    "DropRule",
    "EventRule",
    "LifecycleStageRule",
    "MappingSettings",
    "NoteRule",
    "SalesActivityRule",
    "TrackApiRule",
    "find_rule",
    "normalise_event_name",
    "property_path",
    "template_placeholders",
]
