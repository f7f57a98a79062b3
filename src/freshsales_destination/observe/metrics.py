"""Prometheus metrics: ``GET /metrics``.

Two kinds, never mixed up:

* **Events, counted where they happen, per process**: messages received, filtered, discarded,
  delivered, skipped, retried and dead-lettered; every Freshsales call; delivery latency
  (received -> delivered) and ingest request latency. Module-level counters and histograms,
  updated by sorting (`count_sorted`), the delivery worker (`count_*`), the Freshsales client
  (`call_observer`) and the serving app (`INGEST_TRACKING`, `INGEST_WEBHOOK`).
* **State, read from the store at scrape time** (`StoreCollector`): backlog by status, the
  oldest pending message's age, the budget left, destination health, the sorting backlog.
  The same from whichever process answers, since they all share the store.

Label values come from bounded sets only: configured destination names, message types
(``other`` for anything a client invented), reason codes (`core/reason_codes.py`), route
templates (ids replaced by ``{id}``) and status classes. Never a user id, an email, a
reason's free text or a credential.

With ``server.workers > 1`` the serving processes share one port, so a scrape reaches any one
of them: `serve` then points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory and every
process's counters are summed from it (prometheus_client's multiprocess mode). Processes of
separate roles (``--role ingest`` / ``worker``) are separate targets: scrape each, and sum the
counters across them (`sum without (instance)`); the store gauges are the same on every target.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from freshsales_destination.admin.auth import refusal
from freshsales_destination.config import Settings
from freshsales_destination.core.reason_codes import (
    failure_reason_code,
    ingest_reason_code,
    planner_reason_code,
    status_code_label,
    type_label,
)
from freshsales_destination.store.base import NewMessage, Store

PREFIX = "freshsales_destination"
# No ``*_created`` series beside every counter: they double the page and no alert uses them.
disable_created_metrics()  # type: ignore[no-untyped-call]
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# This process's counters (in multiprocess mode their values live in PROMETHEUS_MULTIPROC_DIR).
PROCESS = CollectorRegistry(auto_describe=True)

RECEIVED = Counter(
    f"{PREFIX}_messages_received", "Messages sorted into the queue (duplicates excluded).",
    ["destination", "type"], registry=PROCESS,
)
DUPLICATES = Counter(
    f"{PREFIX}_messages_duplicate", "Messages skipped as already received (source, messageId).",
    ["destination"], registry=PROCESS,
)
FILTERED = Counter(
    f"{PREFIX}_messages_filtered", "Messages switched off (integrations, a drop rule).",
    ["destination", "type", "reason"], registry=PROCESS,
)
DISCARDED = Counter(
    f"{PREFIX}_messages_discarded", "Messages that can never be delivered, by reason code.",
    ["destination", "type", "reason"], registry=PROCESS,
)
DELIVERED = Counter(
    f"{PREFIX}_messages_delivered", "Messages delivered to Freshsales.",
    ["destination", "type"], registry=PROCESS,
)
SKIPPED = Counter(
    f"{PREFIX}_messages_skipped", "Messages finished with nothing to send to Freshsales.",
    ["destination", "type"], registry=PROCESS,
)
RETRIED = Counter(
    f"{PREFIX}_messages_retried", "Delivery attempts that failed and were scheduled again.",
    ["destination", "type", "reason"], registry=PROCESS,
)
DEAD = Counter(
    f"{PREFIX}_messages_dead", "Messages dead-lettered (failed for good or out of retries).",
    ["destination", "type", "reason"], registry=PROCESS,
)
CALLS = Counter(
    f"{PREFIX}_freshsales_calls", "Calls to Freshsales, by route template and answer.",
    ["destination", "method", "route", "status"], registry=PROCESS,
)
DELIVERY_SECONDS = Histogram(
    f"{PREFIX}_delivery_latency_seconds", "From receipt to delivery, per message.",
    ["destination"], registry=PROCESS,
    buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600),
)
INGEST_SECONDS = Histogram(
    f"{PREFIX}_ingest_request_seconds", "Time to answer a tracking API or webhook request.",
    ["endpoint"], registry=PROCESS,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)
# Bound once: looking a child up by its labels costs more than observing (ServiceApp times
# every request).
INGEST_TRACKING = INGEST_SECONDS.labels("tracking")
INGEST_WEBHOOK = INGEST_SECONDS.labels("webhook")


# -- counting, where events happen --------------------------------------------------------------

def count_sorted(messages: Sequence[NewMessage], fresh: Sequence[bool]) -> None:
    """A committed sorting transaction's messages (ingest/sorting.py `Sorter.record`): tallied
    first, so a chunk of a thousand messages costs a few counter updates."""
    received: dict[tuple[str, str], int] = {}
    duplicates: Tally[str] = Tally()
    refused: Tally[tuple[str, str, str, str]] = Tally()
    for row, new in zip(messages, fresh, strict=True):
        if not new:
            duplicates[row.destination] += 1
            continue
        key = (row.destination, row.type)
        received[key] = received.get(key, 0) + 1
        if row.status != "pending":
            code = ingest_reason_code(row.status, row.reason)
            refused[(row.status, row.destination, type_label(row.type), code)] += 1
    for (destination, kind), n in received.items():
        RECEIVED.labels(destination, type_label(kind)).inc(n)
    for destination, n in duplicates.items():
        DUPLICATES.labels(destination).inc(n)
    for (status, destination, kind, code), n in refused.items():
        family = FILTERED if status == "filtered" else DISCARDED
        family.labels(destination, kind, code).inc(n)


def count_planned_out(destination: str, kind: str, status: str, code: str | None) -> None:
    """A message the planner filtered or discarded (delivery/worker.py)."""
    family = FILTERED if status == "filtered" else DISCARDED
    family.labels(destination, type_label(kind), planner_reason_code(code)).inc()


def count_finished(
    destination: str, kinds: Iterable[str], *, delivered: bool,
    latencies: Iterable[float] = (),
) -> None:
    """Messages delivered (with their receipt-to-delivery seconds) or skipped."""
    family = DELIVERED if delivered else SKIPPED
    for kind, n in Tally(type_label(k) for k in kinds).items():
        family.labels(destination, kind).inc(n)
    if delivered:
        histogram = DELIVERY_SECONDS.labels(destination)
        for seconds in latencies:
            histogram.observe(max(seconds, 0.0))


def count_failed(
    destination: str, kinds: Iterable[str], *, dead: bool, status: int | None, error_type: str
) -> None:
    """A failed attempt: retried (the unit's head) or dead (each message of the unit)."""
    code = failure_reason_code(status, error_type)
    family = DEAD if dead else RETRIED
    for kind, n in Tally(type_label(k) for k in kinds).items():
        family.labels(destination, kind, code).inc(n)


_ROUTE_WORD = re.compile(r"[a-z_]{1,40}")


def route_template(path: str) -> str:
    """A Freshsales path as a bounded label: no query, and every segment that is not a fixed
    word of the API (an id, a name) as ``{id}``."""
    path = path.split("?", 1)[0]
    return "/".join(
        part if not part or _ROUTE_WORD.fullmatch(part) else "{id}" for part in path.split("/")
    )


def call_observer(destination: str) -> Callable[[str, str, int | None, float], None]:
    """What `FreshsalesClient.on_call` gets for `destination`: counts each call."""

    def observe(method: str, path: str, status: int | None, seconds: float) -> None:
        CALLS.labels(destination, method, route_template(path), status_code_label(status)).inc()

    return observe


# -- state, read from the store at scrape time --------------------------------------------------

HEALTH_STATES = ("healthy", "rate_limited", "auth_failed", "unreachable", "misconfigured")


class StoreCollector(Collector):
    """Gauges computed from the store when scraped (in a thread: see `metrics_route`),
    through the operations read model (admin/views.py), as the admin API and CLI see it."""

    def __init__(self, store: Store, settings: Settings, now: Callable[[], float] = time.time):
        self.store = store
        self.settings = settings
        self.now = now

    def collect(self) -> Iterator[Metric]:
        from freshsales_destination.admin import views

        up = GaugeMetricFamily(f"{PREFIX}_store_up", "1 when the store answered this scrape.")
        try:
            now = self.now()
            overviews = views.destinations(self.store, self.settings, now)
            entries, unsorted = self.store.inbox_count()
        except Exception:  # noqa: BLE001 - a scrape says the store is down rather than failing
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        backlog = GaugeMetricFamily(
            f"{PREFIX}_backlog_messages",
            "Messages waiting: pending (retrying: those of them after a failure) and dead.",
            labels=["destination", "status"],
        )
        oldest = GaugeMetricFamily(
            f"{PREFIX}_oldest_pending_age_seconds",
            "Age of the oldest message waiting for delivery (0 when none waits).",
            labels=["destination"],
        )
        budget = GaugeMetricFamily(
            f"{PREFIX}_budget_remaining_calls",
            "Freshsales calls left in the current window (hour, minute), as delivery spends them.",
            labels=["destination", "window"],
        )
        limit = GaugeMetricFamily(
            f"{PREFIX}_budget_limit_calls", "The effective Freshsales limit per window.",
            labels=["destination", "window"],
        )
        blocked = GaugeMetricFamily(
            f"{PREFIX}_budget_blocked_seconds",
            "Seconds until Freshsales' 429 lets calls through again (0 when not blocked).",
            labels=["destination"],
        )
        healthy = GaugeMetricFamily(
            f"{PREFIX}_destination_healthy",
            "1 while the destination is healthy, 0 while delivery to it is paused or throttled.",
            labels=["destination"],
        )
        state = GaugeMetricFamily(
            f"{PREFIX}_destination_health",
            "1 for the destination's current health state.",
            labels=["destination", "state"],
        )
        for overview in overviews:
            name = overview.name
            for status, count in sorted(overview.backlog.items()):
                backlog.add_metric([name, str(status)], count)
            oldest.add_metric([name], overview.oldest_pending_age_seconds or 0.0)
            for window, left_key, limit_key in (
                ("hour", "left_this_hour", "per_hour"), ("minute", "left_this_minute", "per_minute")
            ):
                if _number(overview.budget.get(left_key)) is not None:
                    budget.add_metric([name, window], _number(overview.budget[left_key]) or 0.0)
                if _number(overview.budget.get(limit_key)) is not None:
                    limit.add_metric([name, window], _number(overview.budget[limit_key]) or 0.0)
            until = _epoch(overview.budget.get("blocked_until"))
            blocked.add_metric([name], max(0.0, until - now) if until is not None else 0.0)
            current = str(overview.health.get("state") or "healthy")
            healthy.add_metric([name], 1.0 if current == "healthy" else 0.0)
            for known in HEALTH_STATES:
                state.add_metric([name, known], 1.0 if known == current else 0.0)
        yield from (backlog, oldest, budget, limit, blocked, healthy, state)
        sorting = GaugeMetricFamily(
            f"{PREFIX}_sorting_backlog_messages",
            "Acknowledged messages not yet sorted into the queue.",
        )
        sorting.add_metric([], unsorted)
        yield sorting
        requests = GaugeMetricFamily(
            f"{PREFIX}_sorting_backlog_requests", "Acknowledged requests not yet sorted."
        )
        requests.add_metric([], entries)
        yield requests


def _epoch(value: Any) -> float | None:
    """A time as epoch seconds, given as a number or as ISO 8601 text (as `status` shows it)."""
    number = _number(value)
    if number is not None or not isinstance(value, str):
        return number
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


class _Scrape:
    """What one scrape renders: this process's counters (or every process's, in multiprocess
    mode) and the store's gauges."""

    def __init__(self, store_collector: StoreCollector) -> None:
        self.store_collector = store_collector

    def collect(self) -> Iterator[Metric]:
        directory = os.environ.get(MULTIPROC_ENV)
        if directory:
            yield from MultiProcessCollector(None, path=directory).collect()  # type: ignore[no-untyped-call]
        else:
            yield from PROCESS.collect()
        yield from self.store_collector.collect()


def render(store: Store, settings: Settings, now: Callable[[], float] = time.time) -> bytes:
    """The text exposition of one scrape (synchronous: it reads the store)."""
    return generate_latest(_Scrape(StoreCollector(store, settings, now)))


def metrics_routes(store: Store, settings: Settings) -> list[Route]:
    """``GET /metrics`` as ``server.metrics`` says: public, behind the admin token, or none."""
    mode = settings.server.metrics
    if mode == "off":
        return []

    async def metrics(request: Request) -> Response:
        if mode == "admin":
            # The admin API's check (admin/auth.py): the Bearer token, or a dashboard session.
            refused = refusal(request, settings)
            if refused is not None:
                return refused
        body = await asyncio.to_thread(render, store, settings)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return [Route("/metrics", metrics, methods=["GET"])]


__all__ = [
    "PROCESS",
    "StoreCollector",
    "call_observer",
    "count_failed",
    "count_finished",
    "count_planned_out",
    "count_sorted",
    "metrics_routes",
    "render",
    "route_template",
]
