"""The operator commands: ``status``, ``explain``, ``messages`` and ``dead-letters``.

Every answer comes from the operations read model (admin/views.py; ``status`` and ``explain``
from the functions it shares with them), so the CLI, the admin API and the dashboard agree.
Each command finds its service with ``--config FILE`` or, without it, the embedded one that
``serve`` keeps under ``--data-dir`` (admin/locate.py). Output is a table for people by
default and JSON with ``--json``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from freshsales_destination.admin import params, views
from freshsales_destination.admin.locate import (
    DEFAULT_DATA_DIR,
    Target,
    find_target,
    open_target_store,
)
from freshsales_destination.admin.params import BadParameter
from freshsales_destination.core.statuses import MessageStatus
from freshsales_destination.errors import FreshsalesDestinationError
from freshsales_destination.store.base import Store

T = TypeVar("T")

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c",
        help="TOML configuration file; without it, the embedded service of --data-dir.",
    ),
]
DataDirOption = Annotated[
    Path,
    typer.Option(help="Where `serve` without --config keeps its files (used without --config)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="JSON instead of a table.")]


def fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _target(config: Path | None, data_dir: Path) -> Target:
    try:
        return find_target(config, data_dir)
    except FreshsalesDestinationError as exc:
        raise fail(exc.message) from None


def with_store(config: Path | None, data_dir: Path, use: Callable[[Target, Store], T]) -> T:
    """Run `use` with the target's store open; project errors become a clear exit 2."""
    target = _target(config, data_dir)
    try:
        store = open_target_store(target)
    except FreshsalesDestinationError as exc:
        raise fail(exc.message) from None
    try:
        return use(target, store)
    except FreshsalesDestinationError as exc:
        raise fail(exc.message) from None
    finally:
        store.close()


def console() -> Console:
    """Tables as wide as the terminal; a pipe or file gets wide lines rather than wrapping."""
    out = Console(soft_wrap=False)
    if not out.is_terminal:
        out = Console(width=200, soft_wrap=False)
    return out


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False, default=str) + "\n")


def iso(when: float | None) -> str:
    if when is None:
        return ""
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def checked(option: str, check: Callable[[], T]) -> T:
    """Run one of the admin API's parameter checks (admin/params.py) for a CLI option; a
    refusal exits 2 naming the option, with the API's words."""
    try:
        return check()
    except BadParameter as exc:
        raise fail(f"{option}: {exc.message}") from None


ALWAYS_SHOWN = ("pending", "retrying", "dead", "delivered")  # `status` shows these at 0 too

# -- status -----------------------------------------------------------------------------------


def status_command(
    config: ConfigOption = None,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    as_json: JsonOption = False,
) -> None:
    """The queue and each destination's state: messages per status, health, backlog, budget.

    With --json: messages per state at the top level ("unsorted": acknowledged, not yet
    sorted); "events_via": per destination, which way track and page events go;
    "destinations": per destination, its health (healthy, auth_failed, unreachable,
    misconfigured, rate_limited) and what to do, when it last succeeded, its backlog, the
    budget used this hour and the time to drain.
    """
    from freshsales_destination.delivery.cli import queue_status

    def read(target: Target, store: Store) -> tuple[dict[str, Any], int]:
        retrying = sum(store.backlog(name).get("retrying", 0)
                       for name in target.settings.destinations)
        return queue_status(store, target.settings, time.time()), retrying

    doc, retrying = with_store(config, data_dir, read)
    if as_json:
        typer.echo(json.dumps(doc, sort_keys=True))
        return
    out = console()
    counts = Table(title="Messages", title_justify="left")
    counts.add_column("status")
    counts.add_column("messages", justify="right")
    # The states an operator looks for are always shown, at 0 too; any other present.
    shown = {"pending": 0, "delivered": 0, "dead": 0,
             **{k: v for k, v in doc.items() if isinstance(v, int)}, "retrying": retrying}
    for key in ALWAYS_SHOWN:
        counts.add_row(key, str(shown.pop(key)))
    for key in sorted(shown):
        counts.add_row(key, str(shown[key]))
    out.print(counts)
    table = Table(title="Destinations", title_justify="left")
    for column in ("destination", "health", "backlog", "budget left (hour)", "drain",
                   "drain records", "drain events", "events"):
        table.add_column(column)
    for name, entry in sorted(doc["destinations"].items()):
        budget = entry.get("budget") or {}
        health = entry["state"] + (f": {entry['detail']}" if entry.get("detail") else "")
        table.add_row(
            name, health, str(entry.get("backlog", "")),
            f"{budget.get('left_this_hour', '?')} of {budget.get('per_hour', '?')}",
            str(entry.get("drain_estimate", "")),
            str(entry.get("drain_records", "")), str(entry.get("drain_events", "")),
            str(doc["events_via"].get(name, "")).split(":", 1)[0],
        )
    out.print(table)
    for name, entry in sorted(doc["destinations"].items()):
        if entry.get("action"):
            out.print(f"{name}: {entry['action']}", markup=False)


# -- explain ----------------------------------------------------------------------------------


def explain_command(
    event_file: Annotated[
        Path | None, typer.Argument(help="A JSON file holding one Segment message.")
    ] = None,
    message: Annotated[
        int | None, typer.Option("--message", help="A stored message's id (from `messages list`).")
    ] = None,
    config: ConfigOption = None,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    destination: Annotated[
        str | None, typer.Option("--destination", help="The destination (destinations.NAME) to plan for.")
    ] = None,
    schema: Annotated[
        Path | None,
        typer.Option(
            "--schema",
            help=(
                "A JSON field schema (default: the one cached in the store, else the "
                "sandbox's when the destination points at one, else the built-in one)."
            ),
        ),
    ] = None,
    identity: Annotated[
        Path | None,
        typer.Option("--identity", help="A JSON identity state, as if the person were known."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """The Freshsales operations an event (a file, or a stored message with --message) would
    become, and why each trait was or was not delivered. Nothing is sent."""
    from freshsales_destination.explain import explain_document

    if (event_file is None) == (message is None):
        raise fail("give an event file or --message ID (one of them)")
    if message is not None:
        doc = with_store(
            config, data_dir, lambda t, s: views.explain_stored(s, t.settings, message)
        )
        if doc is None:
            raise fail(f"no message {message}", 1)
    else:
        assert event_file is not None
        target = _target(config, data_dir)
        try:
            doc = explain_document(
                event_file, settings=target.settings, where=target.where,
                destination=destination, schema_path=schema, identity_path=identity,
            )
        except FreshsalesDestinationError as exc:
            raise fail(exc.message) from None
    if as_json:
        emit_json(doc)
        return
    print_explanation(console(), doc)


def print_explanation(out: Console, doc: dict[str, Any]) -> None:
    explanation = doc.get("explanation") or {}
    verdict = str(explanation.get("status", ""))
    reason = explanation.get("reason")
    out.print(
        f"destination {doc.get('destination', '?')} ({doc.get('product', '?')}): "
        f"{verdict}{f' ({reason})' if reason else ''}", markup=False,
    )
    out.print(f"schema: {doc.get('schema', doc.get('schema_source', '?'))}", markup=False)
    events_via = doc.get("events_via")
    if isinstance(events_via, dict):
        out.print(f"events go by: {events_via.get('way')} ({events_via.get('reason')})", markup=False)
    operations = Table(title="Operations", title_justify="left")
    for column in ("#", "kind", "key", "fields"):
        operations.add_column(column, overflow="fold")
    for index, op in enumerate(doc.get("operations") or [], 1):
        operations.add_row(
            str(index), str(op.get("kind")), _compact(op.get("key")), _compact(op.get("fields"))
        )
    out.print(operations)
    entries = Table(title="Why", title_justify="left")
    for column in ("source", "outcome", "target", "reason"):
        entries.add_column(column, overflow="fold")
    for entry in explanation.get("entries") or []:
        entries.add_row(
            str(entry.get("source")), str(entry.get("outcome")), str(entry.get("target") or ""),
            str(entry.get("reason") or ""),
        )
    out.print(entries)
    for warning in doc.get("warnings") or []:
        out.print(f"warning: {warning}", markup=False)


def _compact(value: Any) -> str:
    if value in (None, {}, []):
        return ""
    return json.dumps(value, ensure_ascii=False, default=str)[:300]


# -- messages ---------------------------------------------------------------------------------

messages = typer.Typer(help="Search stored messages and show one message's journey.",
                       no_args_is_help=True)


def _filter(
    now: float, *, destination: str | None = None, user_id: str | None = None,
    anonymous_id: str | None = None, email: str | None = None, message_id: str | None = None,
    status: str | None = None, type_: str | None = None, reason: str | None = None,
    since: str | None = None, until: str | None = None, seqs: tuple[int, ...] = (),
) -> views.MessageFilter:
    """The filter, checked as the admin API checks its parameters (admin/params.py)."""
    query = {
        "destination": destination, "user_id": user_id, "anonymous_id": anonymous_id,
        "email": email, "message_id": message_id, "status": status, "type": type_,
        "reason": reason, "since": since, "until": until,
    }
    for name, value in query.items():
        try:
            _check(name, value, now)
        except BadParameter as exc:
            raise fail(f"--{name.replace('_', '-')}: {exc.message}") from None
    flt, _, _ = checked("options", lambda: params.search(
        {k: v for k, v in query.items() if v is not None}, now=now
    ))
    return dataclasses.replace(flt, seqs=seqs)


def _check(name: str, value: str | None, now: float) -> None:
    """One option, checked alone so that a refusal names it."""
    if name == "status":
        params.one_of(name, params.text(name, value), params.STATUSES)
    elif name == "type":
        params.one_of(name, params.text(name, value), params.MESSAGE_TYPES)
    elif name in ("since", "until"):
        params.timestamp(name, value, now=now)
    else:
        params.text(name, value)


def summary_json(item: views.MessageSummary) -> dict[str, Any]:
    return dataclasses.asdict(item)


def messages_table(items: list[views.MessageSummary], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("id", "received", "destination", "type", "status", "person", "message id",
                   "attempts", "reason"):
        table.add_column(column, overflow="fold")
    for item in items:
        person = f"user {item.user_id}" if item.user_id else (
            f"anon {item.anonymous_id}" if item.anonymous_id else "")
        table.add_row(
            str(item.id), iso(item.received_at), item.destination, item.type, item.status,
            person, item.message_id, str(item.attempts),
            (item.reason or item.last_error or "")[:160],
        )
    return table


@messages.command("list")
def list_messages(
    config: ConfigOption = None,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    user_id: Annotated[str | None, typer.Option(help="Messages of this userId.")] = None,
    anonymous_id: Annotated[str | None, typer.Option(help="Messages of this anonymousId.")] = None,
    email: Annotated[str | None, typer.Option(help="Messages carrying this email.")] = None,
    message_id: Annotated[str | None, typer.Option(help="The client's messageId.")] = None,
    status: Annotated[
        str | None,
        typer.Option(help=(
            "pending, delivered, skipped, discarded, filtered, dead, dropped, or retrying "
            "(pending after a failed attempt)."
        )),
    ] = None,
    type_: Annotated[
        str | None, typer.Option("--type", help="identify, track, page, screen, group, alias, delete.")
    ] = None,
    reason: Annotated[
        str | None, typer.Option(help="Text the reason or last error contains.")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="Received at or after: ISO 8601 time, or an age (2h, 7d).")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Received before: ISO 8601 time, or an age (2h, 7d).")
    ] = None,
    destination: Annotated[str | None, typer.Option(help="Only this destination.")] = None,
    limit: Annotated[
        int, typer.Option(help=f"At most this many (1 to {params.MAX_LIMIT}).")
    ] = params.DEFAULT_LIMIT,
    cursor: Annotated[
        str | None, typer.Option(help="The next page: the cursor the previous page printed.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Messages matching every filter given, newest first, a page at a time."""
    flt = _filter(
        time.time(), destination=destination, user_id=user_id, anonymous_id=anonymous_id,
        email=email, message_id=message_id, status=status, type_=type_, reason=reason,
        since=since, until=until,
    )
    limit = checked("--limit", lambda: params.limit(limit))

    def search(target: Target, store: Store) -> views.Page:
        try:
            return views.search(store, flt, limit=limit, cursor=cursor)
        except ValueError as exc:
            raise fail(f"--cursor: {exc}") from None

    page = with_store(config, data_dir, search)
    if as_json:
        # The admin API's shape (GET /admin/v1/messages).
        emit_json({"messages": [summary_json(i) for i in page.items],
                   "next_cursor": page.next_cursor})
        return
    out = console()
    out.print(messages_table(page.items, f"Messages ({len(page.items)})"))
    if page.next_cursor:
        out.print(f"more: --cursor {page.next_cursor}", markup=False)


@messages.command("show")
def show_message(
    message: Annotated[str, typer.Argument(
        help="The message's id (digits, from `messages list`) or the event's messageId."
    )],
    config: ConfigOption = None,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    as_json: JsonOption = False,
) -> None:
    """One message's journey: received, sorted, planned (with every trait's explanation), each
    Freshsales call, retries, and how it ended. MESSAGE is the store's id (digits) or the
    event's messageId; when several sources sent that messageId, they are listed to choose
    an id from."""
    shown = message if len(message) <= 40 else message[:37] + "..."

    def find(target: Target, store: Store) -> views.Journey | list[views.MessageSummary] | None:
        if message.isdigit():
            seq = checked("MESSAGE", lambda: params.message_seq(message))
            return views.journey(store, target.settings, seq)
        checked("MESSAGE", lambda: params.text("message_id", message))
        found = views.search(store, views.MessageFilter(message_id=message), limit=20)
        if len(found.items) == 1:
            return views.journey(store, target.settings, found.items[0].id)
        return found.items or None

    journey = with_store(config, data_dir, find)
    if journey is None:
        raise fail(f"no message with id or messageId {shown!r}", 1)
    if isinstance(journey, list):
        for item in journey:
            typer.echo(f"id {item.id}: source {item.source}, destination {item.destination}, "
                       f"{item.type}, {item.status}")
        raise fail(
            f"{len(journey)} messages have messageId {shown!r} (from different sources): "
            "give one's id"
        )
    if as_json:
        emit_json(dataclasses.asdict(journey))
        return
    out = console()
    item = journey.message
    out.print(messages_table([item], f"Message {item.id}"))
    steps = Table(title="Journey", title_justify="left")
    for column in ("at", "step", "detail"):
        steps.add_column(column, overflow="fold")
    for step in journey.steps:
        steps.add_row(iso(step.at), step.kind, _step_detail(step))
    out.print(steps)
    plan = next((s.detail for s in journey.steps if s.kind == "planned" and "operations" in s.detail),
                None)
    if plan is not None:
        out.print("Plan (as `explain` shows it now):", markup=False)
        print_explanation(out, plan)


def _step_detail(step: views.JourneyStep) -> str:
    detail = step.detail
    if step.kind == "call":
        parts = [str(detail.get(k)) for k in ("method", "route", "status") if detail.get(k)]
        if detail.get("duration_ms") is not None:
            parts.append(f"{detail['duration_ms']} ms")
        if detail.get("error"):
            parts.append(str(detail["error"]))
        return " ".join(parts)
    if step.kind == "planned":
        if "error" in detail:
            return f"cannot plan: {detail['error']}"
        kinds = [str(op.get("kind")) for op in detail.get("operations") or []]
        verdict = (detail.get("explanation") or {}).get("status", "")
        return f"{verdict}: {', '.join(kinds) or 'no operations'} (the plan below)"
    return _compact(detail)


# -- dead letters -----------------------------------------------------------------------------

dead_letters = typer.Typer(
    help="List, retry or drop messages that delivery gave up on.", no_args_is_help=True
)


def _all_pages(store: Store, flt: views.MessageFilter) -> Iterator[views.MessageSummary]:
    cursor: str | None = None
    while True:
        page = views.search(store, flt, limit=500, cursor=cursor)
        yield from page.items
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


@dead_letters.command("list")
def list_dead(
    config: ConfigOption = None,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    destination: Annotated[str | None, typer.Option(help="Only this destination.")] = None,
    reason: Annotated[str | None, typer.Option(help="Text the error contains.")] = None,
    since: Annotated[
        str | None, typer.Option(help="Received at or after: ISO 8601 time, or an age (2h, 7d).")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many.")] = 100,
    as_json: JsonOption = False,
) -> None:
    """Dead letters, newest first. --json: one JSON document {"messages": [...]} (empty when
    there are none), each with seq, source, destination, message_id, type, attempts, error."""
    flt = _filter(time.time(), destination=destination, reason=reason, since=since,
                  status=MessageStatus.DEAD)

    def collect(target: Target, store: Store) -> list[views.MessageSummary]:
        found: list[views.MessageSummary] = []
        for item in _all_pages(store, flt):
            found.append(item)
            if len(found) >= limit:
                break
        return found

    items = with_store(config, data_dir, collect)
    if as_json:
        # One JSON document, as `messages list --json` prints one (an empty list when none).
        emit_json({"messages": [{
            "seq": item.id, "source": item.source, "destination": item.destination,
            "message_id": item.message_id, "type": item.type, "attempts": item.attempts,
            "error": item.reason or item.last_error,
        } for item in items]})
        return
    console().print(messages_table(items, f"Dead letters ({len(items)})"))


def _act(
    verb: str,
    action: Callable[[Store, views.MessageFilter, float], int],
    ids: list[int] | None,
    everything: bool,
    destination: str | None,
    reason: str | None,
    since: str | None,
    config: Path | None,
    data_dir: Path,
    as_json: bool,
) -> None:
    chosen = tuple(ids or ())
    if not (chosen or destination or reason or since or everything):
        raise fail(
            f"say which dead letters to {verb}: ids, --destination, --reason or --since; "
            "or --all for every one"
        )
    now = time.time()
    flt = _filter(now, destination=destination, reason=reason, since=since, seqs=chosen,
                  status=MessageStatus.DEAD)

    def run(target: Target, store: Store) -> tuple[list[int], int]:
        # Listed first, to say which; no more than one call can change, plus one.
        matched = [item.id for item in islice(_all_pages(store, flt), MATCHES_LISTED)]
        return matched, action(store, flt, now)

    matched, changed = with_store(config, data_dir, run)
    done = {"retry": "requeued", "drop": "dropped"}[verb]
    if as_json:
        emit_json({"action": verb, "changed": changed, "matched": matched,
                   "asked": list(chosen) or None})
        return
    of = f" of {len(chosen)}" if chosen else ""
    typer.echo(f"{done} {changed}{of} dead letter{'s' if changed != 1 else ''}")
    if matched:
        shown = ", ".join(str(seq) for seq in matched[:50])
        more = f" and {len(matched) - 50} more" if len(matched) > 50 else ""
        typer.echo(f"matching ids: {shown}{more}")
    if changed < len(matched):
        # One call changes a bounded number (admin/views.py); the rest wait for the next.
        at_least = "at least " if len(matched) == MATCHES_LISTED else ""
        typer.echo(f"{at_least}{len(matched) - changed} more matched and were not changed: "
                   "run the command again")


MATCHES_LISTED = 100_001  # views changes at most 100,000 dead letters chosen by a filter per call

IdsArgument = Annotated[
    list[int] | None, typer.Argument(help="Message ids (from `dead-letters list`).")
]
AllOption = Annotated[
    bool, typer.Option("--all", help="Every dead letter matching the filters (or every one).")
]
DestinationFilter = Annotated[str | None, typer.Option(help="Only this destination's.")]
ReasonFilter = Annotated[str | None, typer.Option(help="Only those whose error contains this.")]
SinceFilter = Annotated[
    str | None, typer.Option(help="Only those received since: ISO 8601 time or an age (2h).")
]


@dead_letters.command("retry")
def retry_dead(
    ids: IdsArgument = None,
    everything: AllOption = False,
    destination: DestinationFilter = None,
    reason: ReasonFilter = None,
    since: SinceFilter = None,
    config: ConfigOption = None,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    as_json: JsonOption = False,
) -> None:
    """Put dead letters back in their lanes with fresh attempts; prints how many and which."""
    _act("retry", views.retry_dead, ids, everything, destination, reason, since, config,
         data_dir, as_json)


@dead_letters.command("drop")
def drop_dead(
    ids: IdsArgument = None,
    everything: AllOption = False,
    destination: DestinationFilter = None,
    reason: ReasonFilter = None,
    since: SinceFilter = None,
    config: ConfigOption = None,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    as_json: JsonOption = False,
) -> None:
    """Mark dead letters dropped: kept for the record, never delivered; prints how many."""
    _act("drop", views.drop_dead, ids, everything, destination, reason, since, config,
         data_dir, as_json)


__all__ = [
    "dead_letters",
    "explain_command",
    "messages",
    "status_command",
]
