"""Each destination's state as operators see it: health, budget, backlog, time to drain.

Shared by ``status`` (delivery/cli.py, whose JSON keys these are) and the read model
(admin/views.py ``destinations``). Synchronous store reads; ``now`` is passed in.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from freshsales_destination.config import DestinationConfig, Settings
from freshsales_destination.core.budget import HOUR, MINUTE
from freshsales_destination.store.base import Store


def iso(when: float | None) -> str | None:
    """An epoch as ISO 8601 UTC to the second (``...Z``), or None."""
    if when is None:
        return None
    return datetime.fromtimestamp(when, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def account_budget(store: Store, config: DestinationConfig, now: float) -> dict[str, Any]:
    """The account's budget as delivery spends it (``StoreBudget.summary``: the effective
    limits, the lower of the configured and the account's, and where each came from)."""
    from freshsales_destination.delivery.budget import StoreBudget
    from freshsales_destination.delivery.engine import budget_account_key

    budget = StoreBudget(
        store=store, account=budget_account_key(config), per_hour=config.rate_limit_per_hour,
        per_minute=config.rate_limit_per_minute, now=lambda: now,
    )
    summary = budget.summary()
    for key in ("blocked_until", "last_throttled_at"):
        if isinstance(summary.get(key), int | float):
            summary[key] = iso(summary[key])
    return summary


def drain_seconds(backlog: int, budget: dict[str, Any]) -> float:
    """Rough time to deliver `backlog` messages at one call each: what is left of this hour
    at the minute's pace, the rest at the hourly limit."""
    now_part = min(backlog, int(budget["left_this_hour"]))
    later = backlog - now_part
    return now_part / int(budget["per_minute"]) * MINUTE + later / int(budget["per_hour"]) * HOUR


def destinations_status(store: Store, settings: Settings, now: float) -> dict[str, Any]:
    """Per destination (by name): health, when it last succeeded or failed, its backlog, the
    budget and the estimated time to drain (what ``status`` prints under "destinations")."""
    from freshsales_destination.delivery.engine import budget_account_key
    from freshsales_destination.delivery.health import explain, read_health

    backlogs = {name: store.pending_count(name) for name in settings.destinations}
    out: dict[str, Any] = {}
    for name, config in sorted(settings.destinations.items()):
        health = read_health(store, name)
        budget = account_budget(store, config, now)
        account = budget_account_key(config)
        # Destinations on one account share its budget: the account's backlog drains first.
        shared = sum(
            backlogs[other] for other, c in settings.destinations.items()
            if budget_account_key(c) == account
        )
        entry: dict[str, Any] = {
            "state": health.state,
            "detail": health.detail or None,
            "since": iso(health.since),
            "last_success_at": iso(health.last_success_at),
            "last_failure_at": iso(health.last_failure_at),
            "backlog": backlogs[name],
            "budget": budget,
        }
        if health.paused:
            entry["next_probe_at"] = iso(health.next_probe_at)
            entry["action"] = explain(name, health, config.resolved_base_url(), now)
            entry["drain_estimate_seconds"] = None
            entry["drain_estimate"] = "paused until the destination is fixed"
        else:
            seconds = drain_seconds(shared, budget)
            entry["drain_estimate_seconds"] = round(seconds)
            entry["drain_estimate"] = duration(seconds)
        out[name] = entry
    return out


def duration(seconds: float) -> str:
    """A rough human duration ("about 5 min")."""
    if seconds < 1:
        return "nothing to deliver" if seconds <= 0 else "under a second"
    if seconds < 120:
        return f"about {seconds:.0f} s"
    if seconds < 2 * HOUR:
        return f"about {seconds / MINUTE:.0f} min"
    return f"about {seconds / HOUR:.1f} h"
