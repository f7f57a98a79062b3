"""The rate budget of a Freshsales account, persisted in the store and shared by all workers.

The arithmetic is pure (`core.budget`); this adapter reads and writes its state in one store
transaction per call, so workers in several processes never together exceed the limits.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from freshsales_destination.core.budget import (
    Acquisition,
    BudgetLimits,
    BudgetState,
    Priority,
    available,
    observe_server_headers,
    observe_throttle,
    try_acquire,
)
from freshsales_destination.errors import FreshsalesDestinationError
from freshsales_destination.freshsales.errors import FreshsalesError, Throttled
from freshsales_destination.store.base import Store

NAMESPACE = "budget"


class BudgetExhausted(FreshsalesDestinationError):
    """The account's call budget is spent for now."""

    def __init__(self, wait_seconds: float) -> None:
        super().__init__(f"the Freshsales call budget is spent; next call in {wait_seconds:.1f}s")
        self.wait_seconds = wait_seconds


def _load(raw: bytes | None) -> BudgetState:
    if raw is None:
        return BudgetState()
    try:
        return BudgetState.from_json(raw)
    except (ValueError, TypeError):
        return BudgetState()


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
        self._wait_hint = 0.0
        self.granted = 0

    def _try(self, priority: Priority) -> Acquisition:
        now = self.now()

        def update(raw: bytes | None) -> tuple[Acquisition, bytes]:
            result = try_acquire(
                _load(raw), now, self.limits, priority,
                reserve_fraction_for_records=self.reserve_fraction,
            )
            return result, result.state.to_json().encode()

        return self.store.kv_update(NAMESPACE, self.account, update, now=now)

    async def acquire(self, priority: str) -> None:
        wanted: Priority = "record" if priority == "record" else "event"
        while True:
            result = await asyncio.to_thread(self._try, wanted)
            if result.granted:
                self._wait_hint = 0.0
                self.granted += 1
                return
            if result.wait_seconds > self.max_inline_wait:
                self._wait_hint = result.wait_seconds
                raise BudgetExhausted(result.wait_seconds)
            await self.sleep(result.wait_seconds)

    def wait_hint(self) -> float:
        return self._wait_hint

    def scarce(self) -> bool:
        """True when events may no longer spend the hour: records then go first."""
        if not self.records_first:
            return False
        raw = self.store.kv_get(NAMESPACE, self.account)
        return (
            available(
                _load(raw), self.now(), self.limits, "event",
                reserve_fraction_for_records=self.reserve_fraction,
            )
            <= 0
        )

    def observe(self, outcome: Any) -> None:
        """Correct the budget from what Freshsales said (a Reply or a FreshsalesError)."""
        now = self.now()
        rate = getattr(outcome, "rate", None)
        if isinstance(outcome, Throttled):
            retry_after = outcome.retry_after

            def throttle(raw: bytes | None) -> tuple[None, bytes]:
                state = observe_throttle(_load(raw), now, retry_after)
                return None, state.to_json().encode()

            self.store.kv_update(NAMESPACE, self.account, throttle, now=now)
            return
        if isinstance(outcome, FreshsalesError) and rate is None:
            return
        remaining = getattr(rate, "remaining", None)
        if remaining is None:
            return
        reset = getattr(rate, "reset_after", None)
        hour_only = BudgetLimits(per_hour=self.limits.per_hour, per_minute=self.limits.per_hour)

        def correct(raw: bytes | None) -> tuple[None, bytes]:
            state = _load(raw)
            # The server may report the tighter of its hour and minute windows (the sandbox
            # does). Only calls our own state cannot explain were made by someone else: taking
            # a spent minute for a spent hour stalled delivery for an hour.
            hour_left = available(state, now, hour_only, "record", reserve_fraction_for_records=0)
            both_left = available(state, now, self.limits, "record", reserve_fraction_for_records=0)
            unexplained = both_left - remaining
            if unexplained > 0:
                state = observe_server_headers(
                    state, now, self.limits, hour_left - unexplained, reset
                )
            return None, state.to_json().encode()

        self.store.kv_update(NAMESPACE, self.account, correct, now=now)
