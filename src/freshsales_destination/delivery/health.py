"""Destination health in the store: pause a destination whose fault is its own, probe it, say so once.

The decisions are pure (`core/health.py`); this adapter keeps the state per destination in the
store's key-value table (namespace ``health``), so every worker and process shares it and
``status`` (another process) can show it.

How delivery uses it:

* `DestinationHealth.admit` before a worker takes a lane: always yes while the destination
  is healthy (no store read on that path but one every few seconds, to see what other
  processes found); while it is paused, yes only for the one worker that takes the probe.
  A process that just started probes at once (its configuration may have been fixed).
* `HealthObservingBudget` wraps the budget that the executor and the schema cache call
  `observe` on after every call: a success makes the destination healthy, a destination's
  fault (`destination_fault`) makes it unhealthy. Nothing in the executor changes.
* The worker leaves messages untouched (pending, attempts and window unspent) when a call
  failed for the destination's fault, and asks `schema_failed` to judge a failed schema fetch.

One log line per fault, one when it clears (per process: a restarted process says it again).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from freshsales_destination.core.health import (
    Health,
    HealthPolicy,
    Outcome,
    Transition,
    claim_probe,
    observe,
)
from freshsales_destination.core.schema import MappingConfigError
from freshsales_destination.delivery.budget import BudgetExhausted
from freshsales_destination.delivery.offloop import store_call
from freshsales_destination.freshsales.errors import (
    AuthenticationFailed,
    ConnectionFailed,
    DestinationURLRefused,
    FreshsalesError,
    NotFound,
    PermissionDenied,
    RetryableError,
    Throttled,
    TransportFailure,
    UnexpectedResponse,
)
from freshsales_destination.store.base import Store

log = logging.getLogger(__name__)

NAMESPACE = "health"

# Timeouts and dropped connections may be one request's bad luck; this many in a row, with
# no answer in between, make the destination unreachable.
TRANSPORT_FAILURES_FOR_UNREACHABLE = 3
# A healthy process looks at the shared state this often, to pause with the others.
REFRESH_SECONDS = 5.0


def read_health(store: Store, destination: str) -> Health:
    return Health.from_json(store.kv_get(NAMESPACE, destination))


def _words(exc: FreshsalesError) -> str:
    """A short account of an error, status first (never a secret: errors are redacted)."""
    said = exc.freshsales_message
    if exc.status is not None:
        return f"{exc.status}: {said}" if said else f"{exc.status}"
    # No answer: the error's type first, so that one fault reads the same whatever the call.
    return f"{type(exc).__name__}: {exc.message}" if exc.message else type(exc).__name__


def destination_fault(exc: BaseException) -> tuple[Outcome, str] | None:
    """The destination's fault this error shows, if it shows one (whatever the request)."""
    if not isinstance(exc, FreshsalesError):
        return None
    if isinstance(exc, AuthenticationFailed | PermissionDenied):
        if "/track/" in (exc.path or ""):
            # A refused app token on the tracking API: the API key may be fine. The event's
            # own error (permanent) says so; it is not a reason to pause the destination.
            return None
        return ("auth_failed", _words(exc))
    if isinstance(exc, DestinationURLRefused):
        return ("misconfigured", _words(exc))
    if isinstance(exc, ConnectionFailed):
        return ("unreachable", _words(exc))
    if isinstance(exc, Throttled):
        return ("rate_limited", _words(exc))
    return None


def schema_fault(exc: BaseException) -> tuple[Outcome, str]:
    """A schema fetch that failed is always the destination's fault: which one."""
    fault = destination_fault(exc)
    if fault is not None:
        return fault
    if isinstance(exc, MappingConfigError):
        return ("misconfigured", f"unusable field schema: {exc.message}")
    if isinstance(exc, NotFound | UnexpectedResponse):
        return (
            "misconfigured",
            f"{_words(exc)} (the base URL does not lead to the Freshsales API)",
        )
    if isinstance(exc, RetryableError):
        return ("unreachable", _words(exc))
    if isinstance(exc, FreshsalesError):
        return ("misconfigured", f"the field schema cannot be read: {_words(exc)}")
    return ("misconfigured", f"the field schema cannot be read: {type(exc).__name__}")


class DestinationHealth:
    """The health of one destination, shared by its workers in this process."""

    def __init__(
        self,
        store: Store,
        destination: str,
        *,
        base_url: str = "",
        now: Callable[[], float] = time.time,
        policy: HealthPolicy | None = None,
    ) -> None:
        self.store = store
        self.destination = destination
        self.base_url = base_url
        self.now = now
        self.policy = policy or HealthPolicy()
        self._health = Health()
        self._read_at: float | None = None
        self._fresh = True  # this process has not probed yet
        self._probing = False
        self._probe_call = False  # the probe's one call has not been made yet
        self._announced: tuple[str, str] | None = None
        self._transport_failures = 0
        self._lock = threading.Lock()

    # -- reading -------------------------------------------------------------------------------

    @property
    def health(self) -> Health:
        return self._health

    def _refresh(self, now: float) -> Health:
        self._health = read_health(self.store, self.destination)
        self._read_at = now
        return self._health

    def wait_hint(self) -> float:
        """Seconds until this destination may be called again (0: now)."""
        health = self._health
        if not health.paused or self._fresh or health.next_probe_at is None:
            return 0.0
        return max(0.0, health.next_probe_at - self.now())

    # -- admitting workers ----------------------------------------------------------------------

    async def admit(self) -> bool:
        """May a worker take a lane now? Takes the probe when one is due."""
        read_at = self._read_at
        if not self._health.paused and read_at is not None and self.now() - read_at < REFRESH_SECONDS:
            return True  # healthy, and seen so lately that the store need not be read
        return await store_call(self._admit)

    def _admit(self) -> bool:
        now = self.now()
        with self._lock:
            if self._read_at is None or now - self._read_at >= REFRESH_SECONDS or self._health.paused:
                self._refresh(now)
            if not self._health.paused:
                if self._fresh:
                    self._fresh = False
                return True
            if self._probing:
                return False
            force = self._fresh

            def take(raw: bytes | None) -> tuple[bool, bytes]:
                taken, updated = claim_probe(Health.from_json(raw), now, self.policy, force=force)
                return taken, updated.to_json()

            taken = self.store.kv_update(NAMESPACE, self.destination, take, now=now)
            self._refresh(now)
            if taken:
                self._fresh = False
                self._probing = self._probe_call = self._health.paused
            return taken

    def done(self) -> None:
        """The worker that was let in is done (whether or not it made a call)."""
        with self._lock:
            self._probing = self._probe_call = False

    def may_call(self) -> bool:
        """Checked before every call: while the destination is paused, only the probe's one
        call goes out (workers that took a lane before the pause make none)."""
        with self._lock:
            if not self._health.paused:
                return True
            if self._probe_call:
                self._probe_call = False
                return True
            return False

    # -- what calls showed ----------------------------------------------------------------------

    def observe(self, outcome: Any, *, schema: bool = False) -> None:
        """Feed one call's outcome (a Reply or an exception), as the budget gets it.

        ``schema``: the call was part of a schema fetch, where an answer such as a 404 does
        not show that the account works (`schema_failed` judges the fetch as a whole)."""
        if not isinstance(outcome, BaseException):
            self._transport_failures = 0
            self._record("ok", "")
            return
        fault = destination_fault(outcome)
        if fault is not None:
            outcome_kind, detail = fault
            retry_after = outcome.retry_after if isinstance(outcome, Throttled) else None
            self._record(outcome_kind, detail, retry_after=retry_after)
            return
        if isinstance(outcome, TransportFailure):
            self._transport_failures += 1
            if self._transport_failures >= TRANSPORT_FAILURES_FOR_UNREACHABLE:
                self._record(
                    "unreachable",
                    f"{_words(outcome)} ({self._transport_failures} calls in a row got no answer)",
                )
            return
        if isinstance(outcome, FreshsalesError) and outcome.status is not None:
            self._transport_failures = 0
            if outcome.status < 500 and not schema:
                # Freshsales answered about the request itself (a validation error, a
                # missing record): the account works.
                self._record("ok", "")

    def schema_failed(self, exc: BaseException) -> None:
        """The schema could not be fetched or read: the destination's fault, always."""
        if destination_fault(exc) is not None:
            return  # `observe` has recorded it already
        outcome, detail = schema_fault(exc)
        self._record(outcome, detail)

    def holds(self, exc: BaseException) -> bool:
        """True when a unit that failed with `exc` should leave its messages untouched: the
        fault is the destination's, so the messages must not spend their retry window."""
        fault = destination_fault(exc)
        if fault is not None:
            return fault[0] != "rate_limited"  # a 429 stays the messages' throttle (24 h)
        return isinstance(exc, TransportFailure) and self._health.paused

    def _record(self, outcome: Outcome, detail: str, *, retry_after: float | None = None) -> None:
        now = self.now()
        if outcome == "ok" and not self._health.paused and self._health.state == "healthy":
            last = self._health.last_success_at
            if last is not None and now - last < REFRESH_SECONDS:
                return  # healthy and recently written: no store write per call

        def update(raw: bytes | None) -> tuple[Transition, bytes]:
            transition = observe(
                Health.from_json(raw), outcome, now, self.policy,
                detail=detail, retry_after=retry_after,
            )
            return transition, transition.health.to_json()

        transition = self.store.kv_update(NAMESPACE, self.destination, update, now=now)
        with self._lock:
            self._health = transition.health
            self._read_at = now
        self._announce(transition)

    def _announce(self, transition: Transition) -> None:
        """One line per fault and one when it clears, in each process that meets them."""
        health = transition.health
        # The state this process last said (None: not known here, e.g. another process's).
        previous = self._announced[0] if self._announced is not None else None
        if health.state == "healthy":
            if self._announced is not None or transition.recovered:
                log.warning(
                    "destination %s: Freshsales answers again; delivery resumed",
                    self.destination,
                    extra=self._fields("healthy", previous),
                )
            self._announced = None
            return
        key = (health.state, health.detail.split(" ", 1)[0])
        if key == self._announced:
            return
        self._announced = key
        line = explain(self.destination, health, self.base_url, self.now(), self.policy)
        fields = self._fields(health.state, previous or "healthy")
        if health.state == "rate_limited":
            log.warning("destination %s: %s", self.destination, line, extra=fields)
        else:
            log.error("destination %s: %s", self.destination, line, extra=fields)

    def _fields(self, state: str, previous: str | None) -> dict[str, object]:
        """The fields an operator filters on (JSON logs), as dead_letter lines have."""
        return {"kind": "destination_health", "destination": self.destination,
                "state": state, "previous_state": previous}


def explain(
    destination: str, health: Health, base_url: str, now: float,
    policy: HealthPolicy | None = None,
) -> str:
    """The one line that says what happened and what to do (no secrets)."""
    upper = destination.upper()
    wait = ""
    if health.next_probe_at is not None:
        wait = f"next probe in {max(0.0, health.next_probe_at - now):.0f} s"
    if health.state == "auth_failed":
        if health.detail.startswith("403"):
            what = f"Freshsales denied the API key's user access ({health.detail})"
        else:
            what = f"Freshsales refused the API key ({health.detail})"
        todo = (
            f"fix destinations.{destination}.api_key (or FSD_DESTINATIONS__{upper}__API_KEY) "
            "and restart"
        )
    elif health.state == "unreachable":
        what = f"cannot reach Freshsales at {base_url} ({health.detail})"
        todo = (
            f"check destinations.{destination}.domain / base_url and the network; "
            "delivery resumes by itself once Freshsales answers"
        )
    elif health.state == "misconfigured":
        what = f"the destination is misconfigured: {health.detail}"
        todo = f"fix destinations.{destination}.domain / base_url and restart"
    else:  # rate_limited
        return (
            f"Freshsales says the account's rate limit is used up ({health.detail}); "
            f"calls wait for the reset ({wait or 'soon'}); nothing is lost"
        )
    return (
        f"{what}; delivery paused (messages stay pending, their retry window unspent), "
        f"probing with one call with backoff up to one every "
        f"{(policy or HealthPolicy()).cap_seconds / 60:g} min ({wait}); {todo}"
    )


class HealthObservingBudget:
    """The budget the executor and the schema cache see: the real one, plus health.

    Every call's outcome reaches ``observe``; it goes to the budget first, then to health.
    Anything else is the real budget's.
    """

    def __init__(self, budget: Any, health: DestinationHealth, *, schema: bool = False) -> None:
        self._budget = budget
        self.health = health
        self.schema = schema

    async def acquire(self, priority: str) -> int:
        if not self.health.may_call():
            # Paused: the worker stops as when the budget is spent; nothing is failed.
            raise BudgetExhausted(max(self.health.wait_hint(), 1.0))
        ticket: int = await self._budget.acquire(priority)
        return ticket

    def observe(self, outcome: Any, ticket: int | None = None) -> None:
        self._budget.observe(outcome, ticket)
        self.health.observe(outcome, schema=self.schema)

    def wait_hint(self) -> float:
        return max(float(self._budget.wait_hint()), self.health.wait_hint())

    @property
    def record_backlog_calls(self) -> int:
        return int(self._budget.record_backlog_calls)

    @record_backlog_calls.setter
    def record_backlog_calls(self, calls: int) -> None:
        self._budget.record_backlog_calls = calls  # the real budget decides with it

    def __getattr__(self, name: str) -> Any:
        return getattr(self._budget, name)
