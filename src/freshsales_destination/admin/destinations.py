"""Each destination's state as operators see it: health, budget, backlog, time to drain.

Shared by ``status`` (delivery/cli.py, whose JSON keys these are) and the read model
(admin/views.py ``destinations``). Synchronous store reads; ``now`` is passed in.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
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


def record_calls(records: int, *, bulk: bool) -> int:
    """Calls ``records`` pending record messages should take: one each, or, when bulk upsert is
    in use, about ``CALLS_PER_BATCH`` per 100 (a job, its poll, a search, a share of accounts)."""
    from freshsales_destination.delivery.bulk import CALLS_PER_BATCH
    from freshsales_destination.freshsales.bulk import MAX_BULK_ITEMS

    if not bulk:
        return records
    return -(-records // MAX_BULK_ITEMS) * CALLS_PER_BATCH


def backlog_drain(
    own: Mapping[str, int], shared: Mapping[str, int], budget: dict[str, Any], *, bulk: bool = False,
) -> dict[str, Any]:
    """The backlog split into records (identify, group, alias, delete) and events (track,
    page, screen), from pending counts by type (`own`: this destination's; `shared`: all
    destinations of its account, which spend one budget), and the time to drain each.

    Records: at the earliest, the time their calls take with the budget to themselves (delivery
    keeps a fifth of each hour for them, and favours them once events have spent their share;
    until then they share the budget with events in queue order, so they may take longer).
    Events: the time to drain everything, records included, since events get what records
    leave. One call per message (`drain_seconds`), records fewer when bulk upsert is in use
    (`record_calls`)."""
    from freshsales_destination.delivery.events_route import EVENT_TYPES

    def split(counts: Mapping[str, int]) -> tuple[int, int]:
        events = sum(count for kind, count in counts.items() if kind in EVENT_TYPES)
        return sum(counts.values()) - events, events

    own_records, own_events = split(own)
    records, events = split(shared)
    calls = record_calls(records, bulk=bulk)
    records_seconds = drain_seconds(calls, budget)
    events_seconds = drain_seconds(calls + events, budget) if events else 0.0
    return {
        "backlog_records": own_records,
        "backlog_events": own_events,
        "drain_records_seconds": round(records_seconds),
        "drain_records": duration(records_seconds),
        "drain_events_seconds": round(events_seconds),
        "drain_events": duration(events_seconds),
    }


def destinations_status(store: Store, settings: Settings, now: float) -> dict[str, Any]:
    """Per destination (by name): health, when it last succeeded or failed, its backlog, the
    budget and the estimated time to drain (what ``status`` prints under "destinations")."""
    from freshsales_destination.core.bulk import describe_bulk
    from freshsales_destination.delivery.engine import budget_account_key
    from freshsales_destination.delivery.health import explain, read_health
    from freshsales_destination.delivery.learned import BULK_API, LearnedFacts

    by_type = {name: store.pending_by_type(name) for name in settings.destinations}
    backlogs = {name: sum(counts.values()) for name, counts in by_type.items()}
    out: dict[str, Any] = {}
    for name, config in sorted(settings.destinations.items()):
        health = read_health(store, name)
        budget = account_budget(store, config, now)
        account = budget_account_key(config)
        # Destinations on one account share its budget: the account's backlog drains first.
        sharing = [
            other for other, c in settings.destinations.items() if budget_account_key(c) == account
        ]
        shared_types: Counter[str] = Counter()
        for other in sharing:
            shared_types.update(by_type[other])
        fact = LearnedFacts(store, name).get(BULK_API)
        bulk, _ = describe_bulk(
            config.product, config.bulk, fact.value if fact else None,
            fact.recheck_at if fact else None, now, config.bulk_min_records,
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
            entry.update(backlog_drain(by_type[name], shared_types, budget, bulk=bulk))
            for key in ("drain_records", "drain_events"):
                entry[f"{key}_seconds"] = None
                entry[key] = "paused until the destination is fixed"
        else:
            drain = backlog_drain(by_type[name], shared_types, budget, bulk=bulk)
            seconds = max(drain["drain_records_seconds"], drain["drain_events_seconds"])
            entry["drain_estimate_seconds"] = round(seconds)
            entry["drain_estimate"] = duration(seconds)
            entry.update(drain)
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
