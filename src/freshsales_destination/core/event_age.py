"""`event_max_age_days`: track, page and screen events too old to be worth a call.

A backfill brings months of history; its records (identifies, groups) are what a CRM needs,
while each old page view would spend a call of a budget of about a thousand an hour. A
destination with ``event_max_age_days`` set filters events whose time (the corrected Segment
``timestamp``, the store's ``event_at``) is older than that many days *when delivery plans
them*. Checked then, and not when they are stored, because that is when the call would be
spent: an event that waited in a backlog is judged by its age on leaving it, and setting the
option on a destination that already has a backlog of old events applies to them at once.
Records are never filtered by age: an old identify still carries the person's traits.

Pure: the time is passed in.
"""

from __future__ import annotations

from typing import Final

AGED_TYPES: Final = frozenset({"track", "page", "screen"})
DAY: Final = 86_400.0
REASON_CODE: Final = "event_too_old"


def too_old(kind: str, event_at: float, now: float, max_age_days: float | None) -> str | None:
    """The reason a message of type `kind` that happened at `event_at` is filtered at `now`
    under `max_age_days`; None when it is not (no limit, not an event, or young enough)."""
    if max_age_days is None or kind not in AGED_TYPES:
        return None
    age = now - event_at
    if age <= max_age_days * DAY:
        return None
    return (
        f"{kind} event is {age / DAY:.1f} days old, older than event_max_age_days = "
        f"{max_age_days:g} of this destination"
    )


__all__ = ["AGED_TYPES", "REASON_CODE", "too_old"]
