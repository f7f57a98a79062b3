"""Rate-budget arithmetic for one Freshsales account (pure: no I/O, no clock).

Freshsales limits an account per hour (1,000 to 5,000 calls) and per minute (400), shared by
everyone using the account (reference §8.3). The budget is kept as plain data that a store
persists between calls (``BudgetState.to_json`` / ``from_json``):

- ``grants``: the times of the calls we were granted within the last hour (at most
  ``per_hour`` of them are ever counted, so memory is O(limit));
- ``external``: expiry times of calls the server says were made by someone else (learned from
  ``X-RateLimit-Remaining``); each one counts against the hourly limit until it expires;
- ``blocked_until``: set by a 429, nothing is granted before it;
- ``last_grant_at``: grants only happen at non-decreasing times. A caller whose clock reads
  earlier than the last grant is told to wait until then; this keeps the limits exact even
  when several workers with slightly different clocks share one state.

Windows are sliding and half-open: a call at ``g`` counts against a request at ``t`` while
``g + window > t``. So in ANY interval ``[a, a + 60)`` at most ``per_minute`` calls are
granted, and in any ``[a, a + 3600)`` at most ``per_hour`` (which also bounds every fixed
clock-hour or clock-minute bucket the server may use).

Priorities: when the hour is nearly used up, record changes (identify, group) go before events
and page views. Events may only use the hour's budget down to a reserve of
``floor(per_hour * reserve_fraction_for_records)`` calls; records may use all of it.
"""

from __future__ import annotations

import json
import math
from bisect import insort
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

if TYPE_CHECKING:
    from freshsales_destination.config import DestinationConfig

__all__ = [
    "HOUR",
    "MINUTE",
    "Acquisition",
    "BudgetLimits",
    "BudgetState",
    "Priority",
    "available",
    "observe_server_headers",
    "observe_throttle",
    "records_reserve",
    "try_acquire",
]

HOUR = 3600.0
MINUTE = 60.0
DEFAULT_RESERVE_FRACTION = 0.2
DEFAULT_THROTTLE_BLOCK_SECONDS = 60.0
_FORMAT_VERSION = 1

Priority = Literal["record", "event"]


@dataclass(frozen=True)
class BudgetLimits:
    per_hour: int = 1000
    per_minute: int = 400

    def __post_init__(self) -> None:
        if self.per_hour < 1 or self.per_minute < 1:
            raise ValueError("rate limits must be at least 1")

    @classmethod
    def from_destination_config(cls, config: DestinationConfig) -> BudgetLimits:
        return cls(per_hour=config.rate_limit_per_hour, per_minute=config.rate_limit_per_minute)


def _finite(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} must be a number")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{what} must be finite")
    return number


def _sorted_floats(values: Iterable[Any], what: str) -> tuple[float, ...]:
    return tuple(sorted(_finite(v, what) for v in values))


@dataclass(frozen=True)
class BudgetState:
    grants: tuple[float, ...] = ()
    external: tuple[float, ...] = ()
    blocked_until: float | None = None
    last_grant_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": _FORMAT_VERSION,
            "grants": list(self.grants),
            "external": list(self.external),
            "blocked_until": self.blocked_until,
            "last_grant_at": self.last_grant_at,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_dict(cls, data: Any) -> BudgetState:
        if not isinstance(data, dict):
            raise ValueError("budget state must be a JSON object")
        if data.get("v", _FORMAT_VERSION) != _FORMAT_VERSION:
            raise ValueError(f"unknown budget state version {data.get('v')!r}")
        grants = data.get("grants", [])
        external = data.get("external", [])
        if not isinstance(grants, list) or not isinstance(external, list):
            raise ValueError("budget state grants and external must be lists")
        blocked = data.get("blocked_until")
        last = data.get("last_grant_at")
        return cls(
            grants=_sorted_floats(grants, "grant time"),
            external=_sorted_floats(external, "external expiry"),
            blocked_until=None if blocked is None else _finite(blocked, "blocked_until"),
            last_grant_at=None if last is None else _finite(last, "last_grant_at"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> BudgetState:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"budget state is not JSON: {exc}") from None
        return cls.from_dict(data)


class Acquisition(NamedTuple):
    """The answer to ``try_acquire``; unpacks as ``granted, state, wait_seconds``.

    When not granted, ``wait_seconds`` (> 0) is how long until this request would be granted
    if nothing else used the budget meanwhile.
    """

    granted: bool
    state: BudgetState
    wait_seconds: float


def records_reserve(limits: BudgetLimits, reserve_fraction_for_records: float) -> int:
    """Hourly calls kept for record changes: ``floor(per_hour * fraction)``, below per_hour."""
    if not 0.0 <= reserve_fraction_for_records < 1.0:
        raise ValueError("reserve_fraction_for_records must be in [0, 1)")
    return math.floor(limits.per_hour * reserve_fraction_for_records)


def _hour_expiries(state: BudgetState, now: float) -> list[float]:
    expiries = [g + HOUR for g in state.grants if g + HOUR > now]
    expiries.extend(u for u in state.external if u > now)
    expiries.sort()
    return expiries


def _minute_expiries(state: BudgetState, now: float) -> list[float]:
    return [g + MINUTE for g in state.grants if g + MINUTE > now]  # grants are sorted


def _wait_until(when: float, now: float) -> float:
    """Smallest float ``w`` with ``now + w >= when``."""
    wait = max(when - now, 0.0)
    while now + wait < when:
        wait = math.nextafter(wait, math.inf)
    return wait


def _pruned(state: BudgetState, horizon: float | None) -> BudgetState:
    """Drop entries that no request at or after ``horizon`` can count."""
    if horizon is None:
        return state
    grants = tuple(g for g in state.grants if g + HOUR > horizon)
    external = tuple(u for u in state.external if u > horizon)
    blocked = state.blocked_until
    if blocked is not None and blocked <= horizon:
        blocked = None
    if (grants, external, blocked) == (state.grants, state.external, state.blocked_until):
        return state
    return BudgetState(grants, external, blocked, state.last_grant_at)


def _hour_cap(limits: BudgetLimits, priority: Priority, fraction: float) -> int:
    reserve = records_reserve(limits, fraction)
    if priority == "record":
        return limits.per_hour
    if priority == "event":
        return limits.per_hour - reserve
    raise ValueError(f"unknown priority {priority!r}")


def try_acquire(
    state: BudgetState,
    now: float,
    limits: BudgetLimits,
    priority: Priority = "record",
    reserve_fraction_for_records: float = DEFAULT_RESERVE_FRACTION,
) -> Acquisition:
    """Ask for one call at ``now`` (epoch seconds)."""
    now = _finite(now, "now")
    hour_cap = _hour_cap(limits, priority, reserve_fraction_for_records)
    if state.last_grant_at is not None and now < state.last_grant_at:
        return Acquisition(False, state, _wait_until(state.last_grant_at, now))
    if state.blocked_until is not None and now < state.blocked_until:
        return Acquisition(False, state, _wait_until(state.blocked_until, now))

    waits: list[float] = []
    hour = _hour_expiries(state, now)
    if len(hour) >= hour_cap:
        waits.append(_wait_until(hour[len(hour) - hour_cap], now))
    minute = _minute_expiries(state, now)
    if len(minute) >= limits.per_minute:
        waits.append(_wait_until(minute[len(minute) - limits.per_minute], now))
    if waits:
        return Acquisition(False, state, max(waits))

    granted = BudgetState(
        grants=(*state.grants, now),  # now >= every earlier grant, so still sorted
        external=state.external,
        blocked_until=state.blocked_until,
        last_grant_at=now,
    )
    return Acquisition(True, _pruned(granted, now), 0.0)


def available(
    state: BudgetState,
    now: float,
    limits: BudgetLimits,
    priority: Priority = "record",
    reserve_fraction_for_records: float = DEFAULT_RESERVE_FRACTION,
) -> int:
    """How many calls of this priority could be granted back to back at ``now``."""
    now = _finite(now, "now")
    hour_cap = _hour_cap(limits, priority, reserve_fraction_for_records)
    if state.last_grant_at is not None and now < state.last_grant_at:
        return 0
    if state.blocked_until is not None and now < state.blocked_until:
        return 0
    by_hour = hour_cap - len(_hour_expiries(state, now))
    by_minute = limits.per_minute - len(_minute_expiries(state, now))
    return max(0, min(by_hour, by_minute))


def observe_server_headers(
    state: BudgetState,
    now: float,
    limits: BudgetLimits,
    remaining: int | None,
    reset_seconds: float | None = None,
) -> BudgetState:
    """Correct the budget from ``X-RateLimit-Remaining`` (and ``X-RateLimit-Reset``).

    The server's count can only lower our estimate, never raise it: when it reports fewer
    calls remaining than we think we have, the difference was spent by someone else on the
    account and is recorded as external calls that expire at the reset (or in an hour when the
    reset is unknown).
    """
    now = _finite(now, "now")
    if remaining is None:
        return state
    remaining = max(0, int(remaining))
    used = len(_hour_expiries(state, now))
    ours_left = limits.per_hour - used
    extra = ours_left - remaining
    if extra <= 0:
        return state
    if reset_seconds is None:
        expiry = now + HOUR
    else:
        expiry = now + min(max(_finite(reset_seconds, "reset_seconds"), 0.0), HOUR)
    if expiry <= now:
        return state  # the server's window is resetting now
    external = list(state.external)
    for _ in range(extra):
        insort(external, expiry)
    updated = BudgetState(state.grants, tuple(external), state.blocked_until, state.last_grant_at)
    return _pruned(updated, state.last_grant_at)


def observe_throttle(
    state: BudgetState,
    now: float,
    retry_after: float | None,
    default_seconds: float = DEFAULT_THROTTLE_BLOCK_SECONDS,
) -> BudgetState:
    """Freshsales answered 429: grant nothing until ``now + retry_after`` (or the default)."""
    now = _finite(now, "now")
    delay = default_seconds if retry_after is None else _finite(retry_after, "retry_after")
    until = now + max(delay, 0.0)
    if state.blocked_until is not None and state.blocked_until >= until:
        return state
    return BudgetState(state.grants, state.external, until, state.last_grant_at)
