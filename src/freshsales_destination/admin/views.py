"""The operations read model: the store turned into the answers operators ask for.

Every consumer (the admin API, the dashboard, the CLI, the metrics) asks here, so each
answer is computed once. Functions are synchronous (the store is); async callers run them
off the loop (``delivery/offloop.py``). Time is passed in (``now``, epoch seconds).

Nothing returned here holds a credential: configured keys and tokens never leave ``config``.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from freshsales_destination.admin.destinations import destinations_status
from freshsales_destination.config import Settings
from freshsales_destination.core.segment import MAX_LANE_LENGTH, bounded_key
from freshsales_destination.core.statuses import MessageStatus
from freshsales_destination.store.base import MessageQuery, Store, StoredMessage

Window = Literal["1h", "24h", "7d"]


@dataclass(frozen=True, slots=True)
class MessageFilter:
    """What ``search`` and the dead-letter actions select; None means any."""

    destination: str | None = None
    user_id: str | None = None
    anonymous_id: str | None = None
    email: str | None = None
    message_id: str | None = None
    status: str | None = None  # a stored status, or "retrying" (pending with a last error)
    type: str | None = None
    reason: str | None = None  # a substring of the stored reason / last error
    since: float | None = None  # received at or after
    until: float | None = None  # received before
    seqs: tuple[int, ...] = ()  # explicit message ids (the store's seq), for actions


@dataclass(frozen=True, slots=True)
class MessageSummary:
    id: int  # the store's seq: the stable id operators use (``messages show ID``)
    source: str
    destination: str
    message_id: str
    type: str
    status: str
    reason: str | None
    user_id: str | None
    anonymous_id: str | None
    received_at: float
    event_at: float
    attempts: int
    last_error: str | None
    finished_at: float | None


@dataclass(frozen=True, slots=True)
class Page:
    items: list[MessageSummary]
    next_cursor: str | None  # opaque; None on the last page


@dataclass(frozen=True, slots=True)
class JourneyStep:
    """One thing that happened to a message, oldest first.

    kind: received | sorted | filtered | discarded | planned | call | retry | held |
    delivered | dead | requeued | dropped | skipped | elided (``steps``: how many steps the
    store cut between the first and the latest, see store/rules.py JOURNEY_CAP). ``detail`` is JSON-ready: for ``call``:
    operation, method, route (path without query secrets), status (None: no answer),
    duration_ms, error (Freshsales' error text, bounded); for ``retry``: reason, error_kind,
    attempt, next_at; for ``held`` (waiting through no fault of its own): reason, next_at;
    for ``dead``: reason, why, attempt; for ``planned``: the explanation of every operation
    and trait (as ``explain`` prints it). ``at`` is None for ``sorted`` and ``planned``
    (derived, not stored; see docs/operations.md "The journey of a message").
    """

    at: float | None
    kind: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Journey:
    message: MessageSummary
    raw: dict[str, Any]  # as the client sent it
    normalized: dict[str, Any]
    steps: list[JourneyStep]


@dataclass(frozen=True, slots=True)
class Bucket:
    start: float
    received: int = 0
    filtered: int = 0
    discarded: int = 0
    delivered: int = 0
    retried: int = 0
    dead: int = 0


@dataclass(frozen=True, slots=True)
class DestinationStats:
    destination: str
    window: Window
    bucket_seconds: int
    buckets: list[Bucket]  # oldest first, covering the whole window
    totals: Bucket  # start = window start
    latency_p50_seconds: float | None  # received -> delivered, of messages delivered in window
    latency_p95_seconds: float | None


@dataclass(frozen=True, slots=True)
class FailureGroup:
    destination: str
    status: str  # dead | discarded | filtered | retrying (pending with a last error)
    reason: str
    count: int
    first_seen: float
    last_seen: float
    samples: list[int]  # message ids (seq), newest first, at most 5


@dataclass(frozen=True, slots=True)
class DestinationOverview:
    name: str
    health: dict[str, Any]  # state, detail, since, last_success_at, ... (delivery/health.py)
    budget: dict[str, Any]  # used and left this hour and minute, limits and their origin
    backlog: dict[str, int]  # messages by status (pending, retrying, dead, ...)
    oldest_pending_age_seconds: float | None
    drain_estimate_seconds: float | None  # None while paused
    learned: dict[str, Any]  # what delivery learned about the account (learned.py facts)
    events_via: dict[str, Any]


# Each window's buckets: (bucket seconds, how many).
WINDOWS: dict[str, tuple[int, int]] = {"1h": (300, 12), "24h": (3600, 24), "7d": (21600, 28)}
# Stored steps are these kinds; outcomes a message row shows without a step (an older row, a
# discard while planning) are derived from it.
FINAL_KINDS = frozenset({"delivered", "skipped", "dead", "dropped", "discarded", "filtered"})
MAX_PAGE = 500
# Not a stored status: pending messages with a last error (as the failure groups name them).
RETRYING = "retrying"


def destinations(store: Store, settings: Settings, now: float) -> list[DestinationOverview]:
    """Each configured destination's state, by name."""
    from freshsales_destination.delivery.events_route import EventsRoute
    from freshsales_destination.delivery.learned import LearnedFacts

    status = destinations_status(store, settings, now)
    out: list[DestinationOverview] = []
    for name, config in sorted(settings.destinations.items()):
        entry = dict(status[name])
        budget = entry.pop("budget")
        entry.pop("backlog")
        drain = entry.get("drain_estimate_seconds")
        oldest = store.oldest_pending(name)
        route = EventsRoute(
            store, name, events_via=config.events_via, has_app_token=config.app_token is not None
        )
        way = route.way(now)
        out.append(DestinationOverview(
            name=name,
            health=entry,
            budget=budget,
            backlog=store.backlog(name),
            oldest_pending_age_seconds=None if oldest is None else max(0.0, now - oldest),
            drain_estimate_seconds=None if drain is None else float(drain),
            learned={k: fact.to_dict() for k, fact in LearnedFacts(store, name).all().items()},
            events_via={
                "setting": config.events_via, "way": way.way, "basis": way.basis,
                "reason": way.reason, "description": route.describe(now),
            },
        ))
    return out


# -- search --------------------------------------------------------------------------------------


def encode_cursor(before: int) -> str:
    return base64.urlsafe_b64encode(f"v1:{before}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The seq a cursor continues below; ValueError when it is not one of ours."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValueError("malformed cursor") from None
    prefix, _, number = text.partition(":")
    if prefix != "v1" or not number.isdigit():
        raise ValueError("malformed cursor")
    return int(number)


def _needle(key: str, value: str) -> bytes:
    """The bytes `"key":"value"` as the normalised message holds them (compact JSON)."""
    return b'"' + key.encode() + b'":' + orjson.dumps(value)


def store_query(flt: MessageFilter) -> MessageQuery:
    """The store's query for `flt`: one person's lane when a user or anonymous id is given
    (``u:<userId>``, else ``a:<anonymousId>`` or a message holding that anonymousId), else the
    email as it appears in the normalised message. What the store cannot narrow by is checked
    by `matches` on the page."""
    lane: str | None = None
    needles: tuple[bytes, ...] = ()
    if flt.user_id:
        lane = bounded_key(f"u:{flt.user_id}", MAX_LANE_LENGTH)
    elif flt.anonymous_id:
        lane = bounded_key(f"a:{flt.anonymous_id}", MAX_LANE_LENGTH)
        needles = (_needle("anonymousId", flt.anonymous_id),)
    elif flt.email:
        needles = tuple(dict.fromkeys(
            [_needle("email", flt.email), _needle("email", flt.email.strip().lower())]
        ))
    retrying = flt.status == RETRYING
    return MessageQuery(
        destination=flt.destination, lane=lane, needles=needles, message_id=flt.message_id,
        status=MessageStatus.PENDING if retrying else flt.status, type=flt.type,
        reason=flt.reason or None, since=flt.since, until=flt.until, seqs=tuple(flt.seqs),
        retrying=retrying,
    )


def _emails(event: dict[str, Any]) -> set[str]:
    found: set[str] = set()
    context = event.get("context")
    for holder in (
        event.get("traits"),
        event.get("properties"),
        context.get("traits") if isinstance(context, dict) else None,
    ):
        if isinstance(holder, dict) and isinstance(holder.get("email"), str):
            found.add(holder["email"].strip().lower())
    return found


def matches(flt: MessageFilter, message: StoredMessage) -> bool:
    """Whether `message` meets the filters the store query may not have applied exactly
    (explicit seqs; the person: a second id, or an email found only as text)."""
    if flt.seqs and message.seq not in flt.seqs:
        return False
    if not (flt.user_id or flt.anonymous_id or flt.email):
        return True
    return _person_matches(flt, message)


def search(
    store: Store, flt: MessageFilter, *, limit: int = 50, cursor: str | None = None
) -> Page:
    """Messages matching ``flt``, newest first; ``cursor`` from the previous page's
    ``next_cursor`` (`limit` is kept within 1..500). Raises ValueError for a malformed cursor.

    The store scans a bounded slice of the queue per call: a page may hold fewer than `limit`
    items while ``next_cursor`` is set (the search goes on from there); None is the end."""
    before = None if cursor is None else decode_cursor(cursor)
    limit = max(1, min(limit, MAX_PAGE))
    page = store.search(store_query(flt), limit=limit, before=before)
    chosen = [m for m in page.messages if matches(flt, m)]
    nxt = None if page.next_before is None else encode_cursor(page.next_before)
    return Page(items=summaries(chosen), next_cursor=nxt)


def _event(message: StoredMessage) -> dict[str, Any]:
    try:
        value = orjson.loads(message.message)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _raw(message: StoredMessage) -> dict[str, Any]:
    try:
        value = orjson.loads(message.raw)
    except orjson.JSONDecodeError:
        return {"unreadable": message.raw[:200].decode("utf-8", "replace")}
    return value if isinstance(value, dict) else {"value": value}


def summaries(messages: Sequence[Any]) -> list[MessageSummary]:
    """Summaries of stored messages (helper for the CLI and API)."""
    out: list[MessageSummary] = []
    for message in messages:
        event = _event(message)
        user, anonymous = event.get("userId"), event.get("anonymousId")
        out.append(MessageSummary(
            id=message.seq,
            source=message.source,
            destination=message.destination,
            message_id=message.message_id,
            type=message.type,
            status=message.status,
            reason=message.reason,
            user_id=user if isinstance(user, str) else None,
            anonymous_id=anonymous if isinstance(anonymous, str) else None,
            received_at=message.received_at,
            event_at=message.event_at,
            attempts=message.attempts,
            last_error=message.last_error,
            finished_at=message.finished_at,
        ))
    return out


# -- one message ---------------------------------------------------------------------------------


def journey(store: Store, settings: Settings, message: int) -> Journey | None:
    """One message's whole journey (by seq); None when there is no such message.

    Stored steps (calls, retries, holds, outcomes, operator actions) come from the journey
    table; being received, sorted, filtered or discarded at ingest, and the plan (``explain``
    run again on the stored message, with the schema and facts known now), are derived."""
    stored = store.get_by_seq(message)
    if stored is None:
        return None
    steps: list[JourneyStep] = [
        JourneyStep(stored.received_at, "received", {
            "source": stored.source, "destination": stored.destination, "type": stored.type,
            "message_id": stored.message_id,
        }),
    ]
    rows = store.steps_of(message)
    at_ingest = stored.status in (MessageStatus.FILTERED, MessageStatus.DISCARDED) and not rows
    steps.append(JourneyStep(None, "sorted", {
        "lane": stored.lane, "outcome": stored.status if at_ingest else "queued",
    }))
    if not at_ingest:
        steps.append(JourneyStep(None, "planned", _plan(store, settings, stored)))
    previous = 0
    for row in rows:
        if row.n > previous + 1:  # the store kept the first steps and the latest
            steps.append(JourneyStep(None, "elided", {"steps": row.n - previous - 1}))
        previous = row.n
        try:
            detail = orjson.loads(row.detail)
        except orjson.JSONDecodeError:
            detail = {}
        steps.append(JourneyStep(row.at, row.kind, detail if isinstance(detail, dict) else {}))
    last_final = next((s.kind for s in reversed(steps) if s.kind in FINAL_KINDS), None)
    if stored.status in FINAL_KINDS and last_final != stored.status:
        steps.append(JourneyStep(stored.finished_at, stored.status, {"reason": stored.reason}))
    return Journey(
        message=summaries([stored])[0], raw=_raw(stored), normalized=_event(stored), steps=steps
    )


def _plan(store: Store, settings: Settings, stored: StoredMessage) -> dict[str, Any]:
    from freshsales_destination.errors import FreshsalesDestinationError

    try:
        return _explain_row(store, settings, stored)
    except FreshsalesDestinationError as exc:
        return {"error": exc.message}


# -- stats -----------------------------------------------------------------------------------


def _percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of sorted `values`."""
    if not values:
        return None
    return values[max(0, math.ceil(q * len(values)) - 1)]


def stats(
    store: Store, settings: Settings, window: Window, now: float
) -> list[DestinationStats]:
    """Counts per destination and bucket (1h: 5 min buckets; 24h: hourly; 7d: 6 hours).

    Buckets are aligned to their size (UTC); the last one holds `now`. received: by
    received_at; filtered, discarded, delivered, dead: by finished_at; retried: retry steps
    of the journey. Latency: received to delivered, of messages delivered in the window."""
    if window not in WINDOWS:
        raise ValueError(f"window must be one of {', '.join(WINDOWS)}")
    size, count = WINDOWS[window]
    end = (math.floor(now / size) + 1) * size
    start = end - size * count
    fields = {"received", "filtered", "discarded", "delivered", "retried", "dead"}
    grid: dict[str, list[dict[str, int]]] = {
        name: [dict.fromkeys(fields, 0) for _ in range(count)] for name in settings.destinations
    }
    rows = [
        *store.received_counts(start=start, end=end, bucket_seconds=size),
        *store.finished_counts(start=start, end=end, bucket_seconds=size),
        *store.retry_counts(start=start, end=end, bucket_seconds=size),
    ]
    for row in rows:
        if row.status not in fields or not 0 <= row.bucket < count:
            continue
        cells = grid.setdefault(
            row.destination, [dict.fromkeys(fields, 0) for _ in range(count)]
        )
        cells[row.bucket][row.status] += row.count
    latencies: dict[str, list[float]] = {}
    for destination, seconds in store.delivery_latencies(start=start, end=end):
        latencies.setdefault(destination, []).append(max(0.0, seconds))
    out: list[DestinationStats] = []
    for name in sorted(grid):
        buckets = [Bucket(start=start + i * size, **cells) for i, cells in enumerate(grid[name])]
        totals = Bucket(start=start, **{f: sum(c[f] for c in grid[name]) for f in fields})
        values = sorted(latencies.get(name, []))
        out.append(DestinationStats(
            destination=name, window=window, bucket_seconds=size, buckets=buckets,
            totals=totals, latency_p50_seconds=_percentile(values, 0.50),
            latency_p95_seconds=_percentile(values, 0.95),
        ))
    return out


def failures(
    store: Store, *, destination: str | None = None, since: float | None = None
) -> list[FailureGroup]:
    """Failure and discard reasons grouped, most frequent first.

    Dead, discarded and filtered messages finished since `since` (any time when None), and
    pending messages waiting with a last error (``retrying``, whatever their age)."""
    groups = [
        FailureGroup(
            destination=row.destination, status=row.status, reason=row.reason,
            count=row.count, first_seen=row.first_seen, last_seen=row.last_seen,
            samples=list(row.samples[:5]),
        )
        for row in store.failure_groups(destination=destination, since=since)
    ]
    groups.sort(key=lambda g: (-g.count, -g.last_seen, g.destination, g.status, g.reason))
    return groups


# -- dead letters ----------------------------------------------------------------------------


def _dead_matching(store: Store, flt: MessageFilter) -> list[int]:
    query = store_query(flt)
    seqs = store.dead_seqs(query)
    if flt.user_id or flt.anonymous_id or flt.email:
        chosen: list[int] = []
        for seq in seqs:
            message = store.get_by_seq(seq)
            if message is not None and matches(flt, message):
                chosen.append(seq)
        return chosen
    return seqs


def _person_matches(flt: MessageFilter, message: StoredMessage) -> bool:
    event = _event(message)
    if flt.user_id and event.get("userId") != flt.user_id:
        return False
    if flt.anonymous_id and event.get("anonymousId") != flt.anonymous_id:
        return False
    return not (flt.email and flt.email.strip().lower() not in _emails(event))


def retry_dead(store: Store, flt: MessageFilter, now: float) -> int:
    """Put dead letters matching ``flt`` back to pending; returns how many changed.
    Only dead messages are ever changed, whatever ``flt.status`` says (at most 100,000 per
    call when chosen by a filter; named ones, ``flt.seqs``, all)."""
    return store.requeue(_dead_matching(store, flt), now=now)


def drop_dead(store: Store, flt: MessageFilter, now: float) -> int:
    """Mark dead letters matching ``flt`` dropped; returns how many changed."""
    return store.drop_dead(_dead_matching(store, flt), now=now)


# -- explain ---------------------------------------------------------------------------------


def explain_event(
    store: Store, settings: Settings, destination: str | None, event: dict[str, Any]
) -> dict[str, Any]:
    """What ``freshsales-destination explain`` prints for a posted event (JSON-ready).
    Raises project errors (``MappingConfigError``...) on bad input or an unknown destination."""
    from freshsales_destination.explain import explain_with

    return explain_with(event, settings, destination=destination, store=store)


def explain_stored(store: Store, settings: Settings, message: int) -> dict[str, Any] | None:
    """The same for a stored message (by seq); None when there is no such message.
    The normalised message is planned for its own destination."""
    stored = store.get_by_seq(message)
    return None if stored is None else _explain_row(store, settings, stored)


def _explain_row(store: Store, settings: Settings, stored: StoredMessage) -> dict[str, Any]:
    out = explain_event(store, settings, stored.destination, _event(stored))
    out["message"] = stored.seq
    return out
