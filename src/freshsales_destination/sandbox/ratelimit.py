"""A pure sliding-window rate limiter: per key, several windows, an injected clock."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from freshsales_destination.sandbox.clock import Clock

HOUR = 3600.0
MINUTE = 60.0


@dataclass(frozen=True)
class Window:
    seconds: float
    limit: int


@dataclass(frozen=True)
class Decision:
    """The limiter's answer for one request."""

    allowed: bool
    limit: int
    remaining: int
    reset_at: float
    """Epoch seconds at which the most constraining window next frees a slot."""
    retry_after: float
    """Seconds until a request would be let through; 0 when allowed."""


class SlidingWindowLimiter:
    """Counts admitted requests per key over sliding windows (hour and minute by default).

    A request is admitted only if every window still has room; refused requests are not
    counted. ``limit`` in a decision is the first (longest) window's budget.
    """

    def __init__(self, windows: list[Window], clock: Clock) -> None:
        if not windows:
            raise ValueError("at least one window")
        self.windows = sorted(windows, key=lambda w: -w.seconds)
        self.clock = clock
        self._hits: dict[str, deque[float]] = {}

    @classmethod
    def hourly_and_minutely(cls, per_hour: int, per_minute: int, clock: Clock) -> SlidingWindowLimiter:
        return cls([Window(HOUR, per_hour), Window(MINUTE, per_minute)], clock)

    def _prune(self, key: str, now: float) -> deque[float]:
        hits = self._hits.setdefault(key, deque())
        horizon = now - self.windows[0].seconds
        while hits and hits[0] <= horizon:
            hits.popleft()
        return hits

    def _evaluate(self, hits: deque[float], now: float) -> tuple[bool, int, float, float]:
        allowed = True
        remaining = math.inf
        retry_after = 0.0
        reset_at = now + self.windows[0].seconds
        for window in self.windows:
            start = now - window.seconds
            in_window = [t for t in hits if t > start] if window is not self.windows[0] else list(hits)
            used = len(in_window)
            left = window.limit - used
            remaining = min(remaining, max(left, 0))
            if left <= 0:
                allowed = False
                # The slot that frees first is the (used - limit + 1)-th oldest in the window.
                index = used - window.limit
                free_at = in_window[index] + window.seconds if window.limit > 0 else math.inf
                retry_after = max(retry_after, free_at - now)
        if not allowed:
            reset_at = now + retry_after
        elif hits:
            reset_at = hits[0] + self.windows[0].seconds
        return allowed, int(remaining), reset_at, retry_after

    def peek(self, key: str) -> Decision:
        """The state for ``key`` without consuming anything."""
        now = self.clock()
        allowed, remaining, reset_at, retry_after = self._evaluate(self._prune(key, now), now)
        return Decision(allowed, self.windows[0].limit, remaining, reset_at, retry_after)

    def hit(self, key: str) -> Decision:
        """Admit and count one request for ``key`` if the budget allows."""
        now = self.clock()
        hits = self._prune(key, now)
        allowed, remaining, reset_at, retry_after = self._evaluate(hits, now)
        if allowed:
            hits.append(now)
            remaining = max(remaining - 1, 0)
            reset_at = hits[0] + self.windows[0].seconds
        return Decision(allowed, self.windows[0].limit, remaining, reset_at, retry_after)

    def reset(self) -> None:
        self._hits.clear()
