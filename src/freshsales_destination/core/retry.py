"""Retry decisions as data (pure: no I/O, no clock, randomness passed in).

The delivery engine calls ``decide`` after a failed attempt and stores the resulting
``RetryDecision`` in the job row: ``retry`` at ``at`` (epoch seconds), or ``dead``.

Rules:

- **permanent** errors go dead at once.
- **retryable** errors (transport failures, 408 and every 5xx, whatever the body) count as a failed attempt and wait an
  exponential, jittered, capped delay: the ceiling after ``n`` failed attempts is
  ``min(cap, base * 2**(n-1))`` and the delay is drawn from
  ``[ceiling * (1 - jitter), ceiling]``. A server ``Retry-After`` is honoured up to the cap.
- **throttled** (429) does not count as a failed attempt (``attempts_after == attempts``) and
  waits at least ``retry_after`` when the server gave one. Without a hint it backs off by the
  time already spent failing (so waits roughly double), between ``throttle_base_seconds`` and
  ``throttle_cap_seconds``.
- A job whose next try would fall after its window goes dead with its last error: 4 h for
  retryable errors and 24 h for throttling by default, both measured from ``first_failure_at``
  (the first failure of any kind, which the store keeps).

Times are epoch seconds (float) or timezone-aware datetimes (naive ones are read as UTC); the
decision always carries floats.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from freshsales_destination.config import DeliveryConfig

__all__ = [
    "Action",
    "ErrorKind",
    "RetryDecision",
    "RetryPolicy",
    "backoff_ceiling",
    "backoff_delay",
    "decide",
]

# The one definition of an error's kind: ``freshsales.errors`` gives every error class one, and
# the worker passes it here. Status decides it (408 and 5xx retryable, 429 throttled, other
# 4xx permanent), never the body.
ErrorKind = Literal["retryable", "throttled", "permanent"]
Action = Literal["retry", "dead"]

_ERROR_KINDS: frozenset[str] = frozenset({"retryable", "throttled", "permanent"})


@dataclass(frozen=True)
class RetryPolicy:
    base_seconds: float = 5.0
    cap_seconds: float = 900.0
    # Share of the backoff ceiling that is random: 0 = no jitter, 1 = "full jitter".
    jitter: float = 0.5
    error_window_seconds: float = 4 * 3600.0
    throttle_window_seconds: float = 24 * 3600.0
    # Backoff for a 429 without Retry-After or X-RateLimit-Reset.
    throttle_base_seconds: float = 30.0
    throttle_cap_seconds: float = 3600.0
    # Random extra wait after a server-given Retry-After, to spread the workers out.
    throttle_spread_seconds: float = 1.0
    # Optional hard limit on failed attempts (None = only the window applies).
    max_attempts: int | None = None

    def __post_init__(self) -> None:
        for name in (
            "base_seconds",
            "cap_seconds",
            "error_window_seconds",
            "throttle_window_seconds",
            "throttle_base_seconds",
            "throttle_cap_seconds",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"RetryPolicy.{name} must be a positive number")
        if self.cap_seconds < self.base_seconds:
            raise ValueError("RetryPolicy.cap_seconds must be at least base_seconds")
        if self.throttle_cap_seconds < self.throttle_base_seconds:
            raise ValueError(
                "RetryPolicy.throttle_cap_seconds must be at least throttle_base_seconds"
            )
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("RetryPolicy.jitter must be between 0 and 1")
        if not (math.isfinite(self.throttle_spread_seconds) and self.throttle_spread_seconds >= 0):
            raise ValueError("RetryPolicy.throttle_spread_seconds must be >= 0")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError("RetryPolicy.max_attempts must be at least 1")

    @classmethod
    def from_delivery_config(cls, config: DeliveryConfig) -> RetryPolicy:
        return cls(
            base_seconds=config.backoff_base_seconds,
            cap_seconds=max(config.backoff_cap_seconds, config.backoff_base_seconds),
            error_window_seconds=config.retry_window_hours * 3600.0,
            throttle_window_seconds=config.throttle_window_hours * 3600.0,
        )

    def window_for(self, kind: ErrorKind) -> float:
        return self.throttle_window_seconds if kind == "throttled" else self.error_window_seconds


@dataclass(frozen=True)
class RetryDecision:
    """What to do with a job after a failure.

    ``at`` is when to try again (``retry``) or when the job died (``dead``, equal to ``now``).
    ``attempts_after`` and ``first_failure_at`` are the values to store in the job row.
    """

    action: Action
    at: float
    delay: float
    attempts_after: int
    first_failure_at: float
    error_kind: ErrorKind
    reason: str

    @property
    def dead(self) -> bool:
        return self.action == "dead"


def _seconds(value: float | datetime, what: str) -> float:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.timestamp()
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{what} must be finite")
    return number


def _draw(rand: float | random.Random) -> float:
    value = rand.random() if isinstance(rand, random.Random) else float(rand)
    if not 0.0 <= value <= 1.0:
        raise ValueError("rand must be in [0, 1)")
    return value


def backoff_ceiling(policy: RetryPolicy, failures: int) -> float:
    """The largest delay after ``failures`` failed attempts (non-decreasing, at most the cap)."""
    if failures <= 0:
        return 0.0
    exponent = failures - 1
    if exponent >= 1000:  # 2.0**1024 overflows; the cap was reached long before
        return policy.cap_seconds
    return min(policy.cap_seconds, policy.base_seconds * 2.0**exponent)


def backoff_delay(policy: RetryPolicy, failures: int, rand: float) -> float:
    """A jittered delay in ``[ceiling * (1 - jitter), ceiling]`` for ``rand`` in [0, 1]."""
    ceiling = backoff_ceiling(policy, failures)
    delay = ceiling * (1.0 - policy.jitter * rand)
    return min(max(delay, 0.0), ceiling)


def _fmt_hours(seconds: float) -> str:
    return f"{seconds / 3600.0:g} h"


def decide(
    policy: RetryPolicy,
    *,
    attempts: int,
    first_failure_at: float | datetime | None,
    now: float | datetime,
    error_kind: ErrorKind,
    retry_after: float | None = None,
    rand: float | random.Random = 0.5,
    last_error: str | None = None,
) -> RetryDecision:
    """Decide the fate of a job that just failed.

    ``attempts`` is the number of failed attempts counted so far (throttles excluded);
    ``first_failure_at`` is ``None`` when this is the job's first failure. ``last_error`` is
    copied into the reason of a dead decision.
    """
    if error_kind not in _ERROR_KINDS:
        raise ValueError(f"unknown error kind {error_kind!r}")
    if attempts < 0:
        raise ValueError("attempts must be >= 0")
    now_s = _seconds(now, "now")
    first = now_s if first_failure_at is None else _seconds(first_failure_at, "first_failure_at")
    first = min(first, now_s)
    r = _draw(rand)
    hint = None if retry_after is None else max(0.0, _seconds(retry_after, "retry_after"))
    suffix = f": {last_error}" if last_error else ""

    def dead(attempts_after: int, reason: str) -> RetryDecision:
        return RetryDecision(
            action="dead",
            at=now_s,
            delay=0.0,
            attempts_after=attempts_after,
            first_failure_at=first,
            error_kind=error_kind,
            reason=reason + suffix,
        )

    if error_kind == "permanent":
        return dead(attempts + 1, "permanent error")

    if error_kind == "retryable":
        attempts_after = attempts + 1
        if policy.max_attempts is not None and attempts_after >= policy.max_attempts:
            return dead(attempts_after, f"gave up after {attempts_after} failed attempts")
        delay = backoff_delay(policy, attempts_after, r)
        if hint is not None:
            delay = max(delay, min(hint, policy.cap_seconds))
        reason = f"retryable error, attempt {attempts_after}"
    else:
        attempts_after = attempts
        if hint is not None:
            delay = hint + r * policy.throttle_spread_seconds
            reason = "throttled; waiting for the server's reset"
        else:
            spent = now_s - first
            ceiling = min(max(policy.throttle_base_seconds, spent), policy.throttle_cap_seconds)
            delay = ceiling * (1.0 - policy.jitter * r)
            reason = "throttled without a reset hint; backing off"

    at = now_s + delay
    window = policy.window_for(error_kind)
    if at > first + window:
        what = "throttled" if error_kind == "throttled" else "failing"
        return dead(attempts_after, f"{what} for longer than {_fmt_hours(window)}")
    return RetryDecision(
        action="retry",
        at=at,
        delay=delay,
        attempts_after=attempts_after,
        first_failure_at=first,
        error_kind=error_kind,
        reason=reason,
    )
