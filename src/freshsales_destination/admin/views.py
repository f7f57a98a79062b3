"""The operations read model: the store turned into the answers operators ask for.

Every consumer (the admin API, the dashboard, the CLI, the metrics) asks here, so each
answer is computed once. Functions are synchronous (the store is); async callers run them
off the loop (``delivery/offloop.py``). Time is passed in (``now``, epoch seconds).

Nothing returned here holds a credential: configured keys and tokens never leave ``config``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from freshsales_destination.config import Settings
from freshsales_destination.store.base import Store

Window = Literal["1h", "24h", "7d"]


@dataclass(frozen=True, slots=True)
class MessageFilter:
    """What ``search`` and the dead-letter actions select; None means any."""

    destination: str | None = None
    user_id: str | None = None
    anonymous_id: str | None = None
    email: str | None = None
    message_id: str | None = None
    status: str | None = None
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

    kind: received | sorted | filtered | discarded | planned | call | retry | delivered |
    dead | requeued | dropped | skipped. ``detail`` is JSON-ready: for ``call``: method,
    route (path without query secrets), status, duration_ms, error (Freshsales' error text,
    bounded); for ``retry``: reason, attempt, next_at; for ``planned``: the explanation of
    every operation and trait (as ``explain`` prints it).
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


def destinations(store: Store, settings: Settings, now: float) -> list[DestinationOverview]:
    """Each configured destination's state, by name."""
    raise NotImplementedError


def search(
    store: Store, flt: MessageFilter, *, limit: int = 50, cursor: str | None = None
) -> Page:
    """Messages matching ``flt``, newest first; ``cursor`` from the previous page's
    ``next_cursor``. Raises ValueError for a malformed cursor."""
    raise NotImplementedError


def journey(store: Store, settings: Settings, message: int) -> Journey | None:
    """One message's whole journey (by seq); None when there is no such message."""
    raise NotImplementedError


def stats(
    store: Store, settings: Settings, window: Window, now: float
) -> list[DestinationStats]:
    """Counts per destination and bucket (1h: 5 min buckets; 24h: hourly; 7d: 6 hours)."""
    raise NotImplementedError


def failures(
    store: Store, *, destination: str | None = None, since: float | None = None
) -> list[FailureGroup]:
    """Failure and discard reasons grouped, most frequent first."""
    raise NotImplementedError


def retry_dead(store: Store, flt: MessageFilter, now: float) -> int:
    """Put dead letters matching ``flt`` back to pending; returns how many changed.
    Only dead messages are ever changed, whatever ``flt.status`` says."""
    raise NotImplementedError


def drop_dead(store: Store, flt: MessageFilter, now: float) -> int:
    """Mark dead letters matching ``flt`` dropped; returns how many changed."""
    raise NotImplementedError


def explain_event(
    store: Store, settings: Settings, destination: str | None, event: dict[str, Any]
) -> dict[str, Any]:
    """What ``freshsales-destination explain`` prints for a posted event (JSON-ready)."""
    raise NotImplementedError


def explain_stored(store: Store, settings: Settings, message: int) -> dict[str, Any] | None:
    """The same for a stored message (by seq); None when there is no such message."""
    raise NotImplementedError


def summaries(messages: Sequence[Any]) -> list[MessageSummary]:
    """Summaries of stored messages (helper for the CLI and API)."""
    raise NotImplementedError
