"""Which way a destination's track and page events go: the tracking API, a note or a sales activity.

Pure: the learned fact about the tracking API and the time are passed in.

The tracking API (``/track/events``, ``/track/page_views``) is attested only on Classic hosts
(reference §13.3). With ``events_via = "auto"`` (the default) delivery uses it where it works
and writes a note on the person where it does not; whether it works is learned per destination
from the account's first answers (a 404, a 405 or an HTML page on the tracking path means
absent) and re-checked at most once a day (:data:`RECHECK_SECONDS`) by one event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

EventsVia = Literal["auto", "tracking", "sales_activity", "note"]
EVENTS_VIA: tuple[EventsVia, ...] = ("auto", "tracking", "sales_activity", "note")

TrackingApi = Literal["unknown", "present", "absent"]
"""What the planner is told about the tracking API: ``unknown`` means "call it and learn"."""

TrackingState = Literal["unknown", "present", "absent", "recheck"]
"""What is known at a moment: ``recheck`` is an ``absent`` fact whose recheck time has come."""

Way = Literal["tracking", "note", "sales_activity", "none"]
Basis = Literal["configured", "learned", "probe", "no app_token"]

RECHECK_SECONDS = 24 * 3600.0
"""An absent tracking API is tested again (by one event) this long after it was learned."""


def tracking_state(value: str | None, recheck_at: float | None, now: float) -> TrackingState:
    """The tracking API's state from the learned fact (``None``: nothing learned yet)."""
    if value == "present":
        return "present"
    if value == "absent":
        if recheck_at is not None and now >= recheck_at:
            return "recheck"
        return "absent"
    return "unknown"


@dataclass(frozen=True)
class EventsWay:
    """Where track and page events of ``action = "auto"`` go, and why."""

    way: Way
    basis: Basis
    reason: str

    def describe(self) -> str:
        """One line for ``status`` and ``explain``."""
        return f"{self.way} ({self.basis}): {self.reason}"


def events_way(events_via: EventsVia, has_app_token: bool, tracking: TrackingApi) -> EventsWay:
    """The way events go for a destination, given its setting and what was learned.

    ``tracking`` is what the caller decided to tell the planner: ``unknown`` when the tracking
    API is to be called to learn (the first events, or the one event of a daily recheck).
    """
    if events_via == "note":
        return EventsWay("note", "configured", 'events_via = "note": a note on the person')
    if events_via == "sales_activity":
        return EventsWay(
            "sales_activity", "configured",
            'events_via = "sales_activity": a sales activity on the person (events_activity_type)',
        )
    if events_via == "tracking":
        if tracking == "absent":
            return EventsWay(
                "tracking", "configured",
                'events_via = "tracking", but this account answered that the tracking API is '
                "absent: events wait (misconfigured destination)",
            )
        return EventsWay("tracking", "configured", 'events_via = "tracking": the tracking API')
    if not has_app_token:
        return EventsWay(
            "note", "no app_token",
            "events_via = auto and no app_token: a note on the person (pages are not delivered "
            "unless a page rule says otherwise)",
        )
    if tracking == "present":
        return EventsWay(
            "tracking", "learned", "events_via = auto: the tracking API answered on this account"
        )
    if tracking == "absent":
        return EventsWay(
            "note", "learned",
            "events_via = auto: this account answered that the tracking API is absent "
            "(404/405/HTML on /track); a note on the person until the daily re-check",
        )
    return EventsWay(
        "tracking", "probe",
        "events_via = auto: not yet known whether this account has the tracking API; its first "
        "answer decides (absent: a note on the person instead)",
    )


__all__ = [
    "EVENTS_VIA",
    "RECHECK_SECONDS",
    "Basis",
    "EventsVia",
    "EventsWay",
    "TrackingApi",
    "TrackingState",
    "Way",
    "events_way",
    "tracking_state",
]
