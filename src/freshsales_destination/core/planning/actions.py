"""What a rule action is given (:class:`EventCall`) and what it provides (:class:`RuleHandler`).

The handlers themselves and the one table of them are in ``rules.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from freshsales_destination.core.mapping_settings import DestinationSettings
from freshsales_destination.core.planning.builder import PlanBuilder
from freshsales_destination.core.planning.people import Person
from freshsales_destination.core.schema import FieldSchema


@dataclass(frozen=True)
class EventCall:
    """A track, page or screen meeting its rule.

    ``where`` names the rule in the settings (``mapping.track_events['Demo']``,
    ``events_via``); ``label`` is the event's name as Freshsales shows it (``Viewed page
    Pricing`` for a page); ``page`` holds a page view's ``url``, ``url_source``, ``title`` and
    ``name``, and is None for a track.
    """

    where: str
    label: str
    name: str | None
    props: Mapping[str, Any]
    person: Person
    page: dict[str, Any] | None


# check(rule, where, settings, schema): raise MappingConfigError for what the account or the
# destination lacks. apply(builder, rule, call): the operations and their explanation. apply
# resolves names through the same helpers check calls, each at the point where planning needs
# it, so an event discarded for its own reasons (no timestamp, no deal name) is discarded
# before a settings problem further on is raised, as it always was.
RuleCheck = Callable[[Any, str, DestinationSettings, FieldSchema], None]
RuleApply = Callable[[PlanBuilder, Any, EventCall], None]


@dataclass(frozen=True)
class RuleHandler:
    """One rule action: its settings check (shared by planning and ``check_settings``) and
    what it plans. ``page_as_properties``: a page view reaches it with its url and title
    among the properties (everything but the tracking API, which has page views)."""

    check: RuleCheck
    apply: RuleApply
    page_as_properties: bool = True


__all__ = ["EventCall", "RuleApply", "RuleCheck", "RuleHandler"]
