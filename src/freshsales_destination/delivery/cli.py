"""Operator commands for delivery: dead letters and the queue's state."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from freshsales_destination.admin.destinations import (
    account_budget,
    destinations_status,
    drain_seconds,
)
from freshsales_destination.config import Settings, load_settings
from freshsales_destination.core.statuses import MessageStatus
from freshsales_destination.delivery.events_route import EventsRoute
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
        return settings, open_store(settings.store.url, pool_size=settings.store.pool_size)
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
        chosen = store.drop_dead(seqs, now=time.time())
        typer.echo(f"dropped {chosen} of {len(seqs)}")
    finally:
        store.close()


def status_command(config: ConfigOption) -> None:
    """Print the queue and each destination's state, as JSON.

    Top level: messages per state; "unsorted": acknowledged, not yet sorted.

    "events_via": per destination, which way track and page events go.

    "destinations": per destination, its health (healthy, auth_failed,
    unreachable, misconfigured, rate_limited) and what to do, when it last
    succeeded, its backlog, the budget used this hour and the time to drain.
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


__all__ = [
    "account_budget", "dead_letters", "destinations_status", "drain_seconds", "status_command",
]
