"""Operator commands for delivery: dead letters and the queue's state."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from freshsales_destination.config import DestinationConfig, Settings, load_settings
from freshsales_destination.core.budget import HOUR, MINUTE
from freshsales_destination.core.statuses import MessageStatus
from freshsales_destination.delivery.events_route import EVENT_TYPES, EventsRoute
from freshsales_destination.errors import FreshsalesDestinationError
from freshsales_destination.store.base import Store
from freshsales_destination.store.factory import open_store

dead_letters = typer.Typer(
    help="List, retry or drop messages that delivery gave up on.", no_args_is_help=True
)

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="TOML configuration file.")]


def _store(config: Path) -> Store:
    return _open(config)[1]


def _open(config: Path) -> tuple[Settings, Store]:
    try:
        settings = load_settings(config)
        return settings, open_store(settings.store.url)
    except FreshsalesDestinationError as exc:  # bad configuration, unreachable store
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None


@dead_letters.command("list")
def list_dead(
    config: ConfigOption,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 100,
) -> None:
    """Print dead letters as JSON lines: seq, message id, type, attempts, last error."""
    store = _store(config)
    try:
        for message in store.list_messages(status=MessageStatus.DEAD, limit=limit):
            typer.echo(
                json.dumps(
                    {
                        "seq": message.seq,
                        "source": message.source,
                        "destination": message.destination,
                        "message_id": message.message_id,
                        "type": message.type,
                        "attempts": message.attempts,
                        "error": message.reason or message.last_error,
                    }
                )
            )
    finally:
        store.close()


@dead_letters.command("retry")
def retry_dead(
    config: ConfigOption,
    seqs: Annotated[list[int], typer.Argument(help="Sequence numbers from `list`.")],
) -> None:
    """Put dead letters back in their lanes with fresh attempts."""
    store = _store(config)
    try:
        changed = store.requeue(seqs, now=time.time())
        typer.echo(f"requeued {changed} of {len(seqs)}")
    finally:
        store.close()


@dead_letters.command("drop")
def drop_dead(
    config: ConfigOption,
    seqs: Annotated[list[int], typer.Argument(help="Sequence numbers from `list`.")],
) -> None:
    """Mark dead letters as dropped: kept for the record, never delivered."""
    store = _store(config)
    try:
        dead = {m.seq for m in store.list_messages(status=MessageStatus.DEAD, limit=1_000_000)}
        chosen = [seq for seq in seqs if seq in dead]
        store.finish(chosen, status=MessageStatus.DROPPED, now=time.time(), reason=None)
        typer.echo(f"dropped {len(chosen)} of {len(seqs)}")
    finally:
        store.close()


def status_command(config: ConfigOption) -> None:
    """Print the queue and each destination's state, as JSON.

    Top level: messages per state; "unsorted": acknowledged, not yet sorted.

    "events_via": per destination, which way track and page events go.

    "destinations": per destination, its health (healthy, auth_failed,
    unreachable, misconfigured, rate_limited) and what to do, when it last
    succeeded, its backlog, the budget used this hour and the time to drain;
    the backlog and the time to drain also split into records (identify, group,
    alias, delete) and events (track, page, screen).
    """
    settings, store = _open(config)
    try:
        counts: dict[str, Any] = dict(store.count_by_status())
        counts["unsorted"] = store.inbox_count()[1]
        counts["events_via"] = {
            name: EventsRoute(
                store, name, events_via=dest.events_via, has_app_token=dest.app_token is not None
            ).describe(time.time())
            for name, dest in sorted(settings.destinations.items())
        }
        counts["destinations"] = destinations_status(store, settings, time.time())
        typer.echo(json.dumps(counts, sort_keys=True))
    finally:
        store.close()


def _iso(when: float | None) -> str | None:
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
            summary[key] = _iso(summary[key])
    return summary


def drain_seconds(backlog: int, budget: dict[str, Any]) -> float:
    """Rough time to deliver `backlog` messages at one call each: what is left of this hour
    at the minute's pace, the rest at the hourly limit."""
    now_part = min(backlog, int(budget["left_this_hour"]))
    later = backlog - now_part
    return now_part / int(budget["per_minute"]) * MINUTE + later / int(budget["per_hour"]) * HOUR


def backlog_drain(
    own: Mapping[str, int], shared: Mapping[str, int], budget: dict[str, Any]
) -> dict[str, Any]:
    """The backlog split into records (identify, group, alias, delete) and events (track,
    page, screen), from pending counts by type (`own`: this destination's; `shared`: all
    destinations of its account, which spend one budget), and the time to drain each.

    Records: at the earliest, the time their calls take with the budget to themselves (delivery
    keeps a fifth of each hour for them, and favours them once events have spent their share;
    until then they share the budget with events in queue order, so they may take longer).
    Events: the time to drain everything, records included, since events get what records
    leave. Both at one call per message (`drain_seconds`)."""
    def split(counts: Mapping[str, int]) -> tuple[int, int]:
        events = sum(count for kind, count in counts.items() if kind in EVENT_TYPES)
        return sum(counts.values()) - events, events

    own_records, own_events = split(own)
    records, events = split(shared)
    records_seconds = drain_seconds(records, budget)
    events_seconds = drain_seconds(records + events, budget) if events else 0.0
    return {
        "backlog_records": own_records,
        "backlog_events": own_events,
        "drain_records_seconds": round(records_seconds),
        "drain_records": _duration(records_seconds),
        "drain_events_seconds": round(events_seconds),
        "drain_events": _duration(events_seconds),
    }


def destinations_status(store: Store, settings: Settings, now: float) -> dict[str, Any]:
    from freshsales_destination.delivery.engine import budget_account_key
    from freshsales_destination.delivery.health import explain, read_health

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
        shared = sum(backlogs[other] for other in sharing)
        shared_types: Counter[str] = Counter()
        for other in sharing:
            shared_types.update(by_type[other])
        entry: dict[str, Any] = {
            "state": health.state,
            "detail": health.detail or None,
            "since": _iso(health.since),
            "last_success_at": _iso(health.last_success_at),
            "last_failure_at": _iso(health.last_failure_at),
            "backlog": backlogs[name],
            "budget": budget,
        }
        if health.paused:
            entry["next_probe_at"] = _iso(health.next_probe_at)
            entry["action"] = explain(name, health, config.resolved_base_url(), now)
            entry["drain_estimate_seconds"] = None
            entry["drain_estimate"] = "paused until the destination is fixed"
            entry.update(backlog_drain(by_type[name], shared_types, budget))
            for key in ("drain_records", "drain_events"):
                entry[f"{key}_seconds"] = None
                entry[key] = "paused until the destination is fixed"
        else:
            seconds = drain_seconds(shared, budget)
            entry["drain_estimate_seconds"] = round(seconds)
            entry["drain_estimate"] = _duration(seconds)
            entry.update(backlog_drain(by_type[name], shared_types, budget))
        out[name] = entry
    return out


def _duration(seconds: float) -> str:
    if seconds < 1:
        return "nothing to deliver" if seconds <= 0 else "under a second"
    if seconds < 120:
        return f"about {seconds:.0f} s"
    if seconds < 2 * HOUR:
        return f"about {seconds / MINUTE:.0f} min"
    return f"about {seconds / HOUR:.1f} h"
