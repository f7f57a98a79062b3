"""The document ``status --json`` prints (the command is in admin/cli.py; each destination's
part is admin/destinations.py's)."""

from __future__ import annotations

from typing import Any

from freshsales_destination.admin.destinations import (
    account_budget,
    destinations_status,
    drain_seconds,
)
from freshsales_destination.config import Settings
from freshsales_destination.delivery.events_route import EventsRoute
from freshsales_destination.store.base import Store


def queue_status(store: Store, settings: Settings, now: float) -> dict[str, Any]:
    """Messages per state; "unsorted": acknowledged, not yet sorted; "events_via": per
    destination, which way track and page events go; "destinations": `destinations_status`."""
    counts: dict[str, Any] = dict(store.count_by_status())
    counts["unsorted"] = store.inbox_count()[1]
    counts["events_via"] = {
        name: EventsRoute(
            store, name, events_via=dest.events_via, has_app_token=dest.app_token is not None
        ).describe(now)
        for name, dest in sorted(settings.destinations.items())
    }
    counts["destinations"] = destinations_status(store, settings, now)
    return counts


__all__ = ["account_budget", "destinations_status", "drain_seconds", "queue_status"]
