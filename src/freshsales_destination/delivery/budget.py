"""The rate budget of a Freshsales account, persisted in the store and shared by all workers.

The arithmetic is pure (`core.budget`); this adapter reads and writes its state in one store
transaction per call, so workers in several processes never together exceed the limits.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from freshsales_destination.core.budget import (
    HOUR,
    MINUTE,
    Acquisition,
    BudgetLimits,
    BudgetState,
    EffectiveLimits,
    Priority,
    available,
    effective_limits,
    observe_server_headers,
    observe_throttle,
    try_acquire,
)
from freshsales_destination.delivery.offloop import store_call
from freshsales_destination.errors import FreshsalesDestinationError
from freshsales_destination.freshsales.errors import FreshsalesError, Throttled
from freshsales_destination.store.base import Store

NAMESPACE = "budget"

log = logging.getLogger(__name__)

# Mismatches between configuration and account already logged by this process, by destination
# (a process logs each once, however many engines and workers it builds).
_TOLD: dict[tuple[str, str], str | None] = {}


class BudgetExhausted(FreshsalesDestinationError):
    """The account's call budget is spent for now."""

    def __init__(self, wait_seconds: float) -> None:
        super().__init__(f"the Freshsales call budget is spent; next call in {wait_seconds:.1f}s")
        self.wait_seconds = wait_seconds


def load_state(raw: bytes | None) -> BudgetState:
    """A stored budget state; an unreadable one starts afresh (it is an estimate)."""
    if raw is None:
        return BudgetState()
    try:
        return BudgetState.from_json(raw)
    except (ValueError, TypeError):
        return BudgetState()


def budget_summary(state: BudgetState, now: float, configured: BudgetLimits) -> dict[str, Any]:
    """What ``status``, ``check`` and the admin API show of one account's budget."""
    limits = effective_limits(state, now, configured)
    used_hour = sum(1 for g in state.grants if g + HOUR > now)
    used_minute = sum(1 for g in state.grants if g + MINUTE > now)
    server = state.server
    return {
        "per_hour": limits.per_hour,
        "per_hour_source": limits.hour_source,
        "per_minute": limits.per_minute,
        "per_minute_source": limits.minute_source,
        "configured": {"per_hour": configured.per_hour, "per_minute": configured.per_minute},
        "account": None if limits.account_limit is None else {
            "limit": limits.account_limit,
            "window": limits.account_window,
            "seen_at": state.account.seen_at if state.account else None,
        },
        "used_this_hour": used_hour,
        "used_this_minute": used_minute,
        "left_this_hour": max(0, limits.per_hour - used_hour),
        "left_this_minute": max(0, limits.per_minute - used_minute),
        "account_remaining": None if server is None else {
            "remaining": server.remaining, "observed_at": server.observed_at,
            "reset_at": server.reset_at,
        },
        "blocked_until": state.blocked_until if (state.blocked_until or 0) > now else None,
        "last_throttled_at": state.throttled_at,
        "mismatch": limits.mismatch(),
    }


RECORD_BACKLOG_WAIT_SECONDS = 30.0
"""How long an event waits before asking again while the record backlog needs the budget."""


class StoreBudget:
    def __init__(
        self,
        *,
        store: Store,
        account: str,
        per_hour: int,
        per_minute: int,
        now: Callable[[], float] = time.time,
        records_first: bool = True,
        reserve_fraction: float = 0.2,
        max_inline_wait: float = 2.0,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        destination: str | None = None,
    ) -> None:
        self.store = store
        self.account = account
        self.limits = BudgetLimits(per_hour=per_hour, per_minute=per_minute)
        self.now = now
        self.records_first = records_first
        self.reserve_fraction = reserve_fraction if records_first else 0.0
        self.max_inline_wait = max_inline_wait
        # Short waits happen inline; they must pass on the same clock as `now` (tests).
        self.sleep = sleep
        self.destination = destination or account
        self._wait_hint = 0.0
        self.granted = 0
        self.record_backlog_calls = 0
        """Calls the destination's pending record writes are expected to need (set by the bulk
        sender, ``delivery/bulk.py``): while they need at least what the budget can still grant,
        events wait and records get it (a backfill's contacts before its old page views)."""

    def state(self) -> BudgetState:
        return load_state(self.store.kv_get(NAMESPACE, self.account))

    def effective(self) -> EffectiveLimits:
        """The limits spent by now: the lower of the configuration's and the account's."""
        return effective_limits(self.state(), self.now(), self.limits)

    def summary(self) -> dict[str, Any]:
        return budget_summary(self.state(), self.now(), self.limits)

    def _records_need_it(self, state: BudgetState, now: float) -> bool:
        need = self.record_backlog_calls
        return need > 0 and available(
            state, now, self.limits, "record", reserve_fraction_for_records=self.reserve_fraction,
        ) <= need

    def events_wait(self) -> float:
        """Seconds events should wait for the record backlog (0: they may spend now)."""
        if self.record_backlog_calls <= 0:
            return 0.0
        return RECORD_BACKLOG_WAIT_SECONDS if self._records_need_it(self.state(), self.now()) else 0.0

    def _try(self, priority: Priority) -> Acquisition:
        now = self.now()

        def update(raw: bytes | None) -> tuple[Acquisition, bytes]:
            state = load_state(raw)
            if priority == "event" and self._records_need_it(state, now):
                return Acquisition(False, state, RECORD_BACKLOG_WAIT_SECONDS), state.to_json().encode()
            result = try_acquire(
                state, now, self.limits, priority,
                reserve_fraction_for_records=self.reserve_fraction,
            )
            return result, result.state.to_json().encode()

        return self.store.kv_update(NAMESPACE, self.account, update, now=now)

    async def acquire(self, priority: str) -> int:
        """Take one call's worth of budget; the ticket returned goes back with `observe`."""
        wanted: Priority = "record" if priority == "record" else "event"
        while True:
            result = await store_call(self._try, wanted)
            if result.granted:
                self._wait_hint = 0.0
                self.granted += 1
                return result.state.issued
            if result.wait_seconds > self.max_inline_wait:
                self._wait_hint = result.wait_seconds
                raise BudgetExhausted(result.wait_seconds)
            await self.sleep(result.wait_seconds)

    def wait_hint(self) -> float:
        return self._wait_hint

    def note_wait(self, seconds: float) -> None:
        """Nothing is sent for ``seconds`` (events waiting for the record backlog)."""
        self._wait_hint = seconds

    def scarce(self) -> bool:
        """True when events may no longer spend the hour: records then go first."""
        if not self.records_first:
            return False
        state, now = self.state(), self.now()
        if self._records_need_it(state, now):
            return True
        return (
            available(
                state, now, self.limits, "event",
                reserve_fraction_for_records=self.reserve_fraction,
            )
            <= 0
        )

    def observe(self, outcome: Any, ticket: int | None = None) -> None:
        """Learn from what Freshsales said (a Reply or a FreshsalesError) to call `ticket`."""
        now = self.now()
        rate = getattr(outcome, "rate", None)
        if isinstance(outcome, Throttled):
            retry_after = outcome.retry_after

            def throttle(raw: bytes | None) -> tuple[BudgetState, bytes]:
                state = load_state(raw)
                if rate is not None:
                    state = observe_server_headers(
                        state, now, ticket=ticket, limit=rate.limit, reset_seconds=rate.reset_after
                    )
                state = observe_throttle(state, now, retry_after, ticket=ticket)
                return state, state.to_json().encode()

            state = self.store.kv_update(NAMESPACE, self.account, throttle, now=now)
            log.warning(
                "destination %s: Freshsales answered 429 (rate limit); no calls for %.0f s",
                self.destination, max((state.blocked_until or now) - now, 0.0),
            )
            self._tell(state, now)
            return
        if isinstance(outcome, FreshsalesError) and rate is None:
            return
        if rate is None or (rate.limit is None and rate.remaining is None):
            return

        def learn(raw: bytes | None) -> tuple[BudgetState, bytes]:
            state = observe_server_headers(
                load_state(raw), now, ticket=ticket, limit=rate.limit,
                remaining=rate.remaining, reset_seconds=rate.reset_after,
            )
            return state, state.to_json().encode()

        self._tell(self.store.kv_update(NAMESPACE, self.account, learn, now=now), now)

    def _tell(self, state: BudgetState, now: float) -> None:
        """Log a mismatch between configuration and account once (again when it changes)."""
        mismatch = effective_limits(state, now, self.limits).mismatch()
        key = (self.destination, self.account)
        if mismatch is not None and mismatch != _TOLD.get(key):
            log.warning("destination %s: %s", self.destination, mismatch)
        _TOLD[key] = mismatch
