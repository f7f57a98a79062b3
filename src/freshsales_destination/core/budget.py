"""Rate-budget arithmetic for one Freshsales account (pure: no I/O, no clock).

Freshsales limits an account per hour (1,000 to 5,000 calls by plan) and per minute (400),
shared by everyone using the account (reference §8.3, §13.4). The operator configures limits;
the account's answers say what it really allows. The budget is kept as plain data that a store
persists between calls (``BudgetState.to_json`` / ``from_json``):

- ``grants``: the times of the calls we were granted within the last hour (at most the hourly
  limit of them is ever counted, so memory is O(limit)); ``issued`` numbers them (a ticket);
- ``account``: the limit the account's ``X-RateLimit-Limit`` header states, which window it
  describes (learned from ``X-RateLimit-Reset``, see `observe_server_headers`) and when it
  was last seen; forgotten after ``ACCOUNT_LIMIT_TTL`` without a header (then the
  configuration stands alone);
- ``server``: the latest ``X-RateLimit-Remaining``, with the ticket of the call it answered:
  the server's count after that call, less our calls granted since, is what the account has
  left. It covers calls made by anyone else on the account. It is trusted for a minute (every
  call refreshes it) and forgotten at the server's reset;
- ``blocked_until``: set by a 429, nothing is granted before it; a 429 that says nothing of
  when to come back blocks for a minute, doubling with each 429 in a row (``throttle_streak``)
  up to 15 minutes;
- ``last_grant_at``: grants only happen at non-decreasing times. A caller whose clock reads
  earlier than the last grant is told to wait until then; this keeps the limits exact even
  when several workers with slightly different clocks share one state.

The effective limits (`effective_limits`) are the lower of the configured ones (a ceiling the
operator chooses) and the account's. Windows are sliding and half-open: a call at ``g`` counts
against a request at ``t`` while ``g + window > t``. So in ANY interval ``[a, a + 60)`` at
most ``per_minute`` calls are granted, and in any ``[a, a + 3600)`` at most ``per_hour``.

Priorities: when the hour is nearly used up, record changes (identify, group) go before events
and page views. Events may only use the hour's budget down to a reserve of
``floor(per_hour * reserve_fraction_for_records)`` calls of the *effective* hourly limit, and
the same reserve is kept of what the server says is left; records may use all of it. Since
every share comes from the effective limit, events can always spend once a window frees.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

if TYPE_CHECKING:
    from freshsales_destination.config import DestinationConfig

__all__ = [
    "ACCOUNT_LIMIT_TTL",
    "HOUR",
    "MINUTE",
    "AccountLimit",
    "Acquisition",
    "BudgetLimits",
    "BudgetState",
    "EffectiveLimits",
    "Priority",
    "ServerView",
    "available",
    "effective_limits",
    "observe_server_headers",
    "observe_throttle",
    "records_reserve",
    "try_acquire",
]

HOUR = 3600.0
MINUTE = 60.0
DEFAULT_RESERVE_FRACTION = 0.2
DEFAULT_THROTTLE_BLOCK_SECONDS = 60.0
MAX_THROTTLE_BLOCK_SECONDS = 900.0
ACCOUNT_LIMIT_TTL = 24 * HOUR
# Resets this far away can only belong to an hourly window (proven once, it stays proven). A
# window of a minute shows itself by resets at most a minute away for two minutes on end from
# the first answers on, or by refills: the remaining count back near the limit within a minute
# of being low, twice.
_HOURLY_RESET_AFTER = MINUTE + 1.0
_SHORT_WINDOW_PROOF = 2 * MINUTE
_LOW_FRACTION = 0.5
_REFILLED_FRACTION = 0.9
_REFILLS_FOR_A_MINUTE = 2
_FORMAT_VERSION = 2

Priority = Literal["record", "event"]
Window = Literal["hour", "minute", "unknown"]
Source = Literal["configured", "account"]


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


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what} must be a whole number, at least 0")
    return value


def _optional(value: Any, what: str) -> float | None:
    return None if value is None else _finite(value, what)


def _sorted_floats(values: Iterable[Any], what: str) -> tuple[float, ...]:
    return tuple(sorted(_finite(v, what) for v in values))


@dataclass(frozen=True)
class AccountLimit:
    """What the account's ``X-RateLimit-Limit`` says, and which window it describes."""

    limit: int
    window: Window
    seen_at: float
    short_resets_since: float | None = None
    """Start of the run of answers whose reset was at most a minute away (window unknown)."""
    low_at: float | None = None
    """When the remaining count was last seen below half the limit (window not yet known)."""
    refills: int = 0
    """Times the remaining count came back near the limit within a minute of being low."""

    def to_dict(self) -> dict[str, Any]:
        return {"limit": self.limit, "window": self.window, "seen_at": self.seen_at,
                "short_resets_since": self.short_resets_since, "low_at": self.low_at,
                "refills": self.refills}

    @classmethod
    def from_dict(cls, data: Any) -> AccountLimit:
        if not isinstance(data, dict):
            raise ValueError("budget state account must be an object")
        window = data.get("window")
        if window not in ("hour", "minute", "unknown"):
            raise ValueError(f"unknown rate-limit window {window!r}")
        limit = _count(data.get("limit"), "account limit")
        if limit < 1:
            raise ValueError("account limit must be at least 1")
        return cls(
            limit=limit, window=window, seen_at=_finite(data.get("seen_at"), "seen_at"),
            short_resets_since=_optional(data.get("short_resets_since"), "short_resets_since"),
            low_at=_optional(data.get("low_at"), "low_at"),
            refills=_count(data.get("refills", 0), "refills"),
        )


@dataclass(frozen=True)
class ServerView:
    """``X-RateLimit-Remaining`` as of the call with ``ticket``: later calls are ours to subtract."""

    remaining: int
    ticket: int
    observed_at: float
    reset_at: float | None = None

    @property
    def trusted_until(self) -> float:
        """A minute after it was seen (every call refreshes it), or the server's reset."""
        until = self.observed_at + MINUTE
        return until if self.reset_at is None else min(until, self.reset_at)

    def to_dict(self) -> dict[str, Any]:
        return {"remaining": self.remaining, "ticket": self.ticket,
                "observed_at": self.observed_at, "reset_at": self.reset_at}

    @classmethod
    def from_dict(cls, data: Any) -> ServerView:
        if not isinstance(data, dict):
            raise ValueError("budget state server must be an object")
        return cls(
            remaining=_count(data.get("remaining"), "remaining"),
            ticket=_count(data.get("ticket"), "ticket"),
            observed_at=_finite(data.get("observed_at"), "observed_at"),
            reset_at=_optional(data.get("reset_at"), "reset_at"),
        )


@dataclass(frozen=True)
class BudgetState:
    grants: tuple[float, ...] = ()
    blocked_until: float | None = None
    last_grant_at: float | None = None
    issued: int = 0
    server: ServerView | None = None
    account: AccountLimit | None = None
    throttle_streak: int = 0
    throttled_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": _FORMAT_VERSION,
            "grants": list(self.grants),
            "blocked_until": self.blocked_until,
            "last_grant_at": self.last_grant_at,
            "issued": self.issued,
            "server": None if self.server is None else self.server.to_dict(),
            "account": None if self.account is None else self.account.to_dict(),
            "throttle_streak": self.throttle_streak,
            "throttled_at": self.throttled_at,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_dict(cls, data: Any) -> BudgetState:
        if not isinstance(data, dict):
            raise ValueError("budget state must be a JSON object")
        version = data.get("v", _FORMAT_VERSION)
        if version not in (1, _FORMAT_VERSION):
            raise ValueError(f"unknown budget state version {version!r}")
        grants = data.get("grants", [])
        if not isinstance(grants, list):
            raise ValueError("budget state grants must be a list")
        server = data.get("server")
        account = data.get("account")
        # Version 1 kept calls of others as "external" expiries: the server view replaces them.
        return cls(
            grants=_sorted_floats(grants, "grant time"),
            blocked_until=_optional(data.get("blocked_until"), "blocked_until"),
            last_grant_at=_optional(data.get("last_grant_at"), "last_grant_at"),
            issued=_count(data.get("issued", 0), "issued"),
            server=None if server is None else ServerView.from_dict(server),
            account=None if account is None else AccountLimit.from_dict(account),
            throttle_streak=_count(data.get("throttle_streak", 0), "throttle_streak"),
            throttled_at=_optional(data.get("throttled_at"), "throttled_at"),
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
    if nothing else used the budget meanwhile. When granted, ``state.issued`` is the call's
    ticket, to pass to `observe_server_headers` with the call's answer.
    """

    granted: bool
    state: BudgetState
    wait_seconds: float


@dataclass(frozen=True)
class EffectiveLimits:
    """The limits the budget spends by, and where each came from."""

    per_hour: int
    per_minute: int
    hour_source: Source
    minute_source: Source
    configured: BudgetLimits
    account_limit: int | None = None
    account_window: Window | None = None

    @property
    def account_per_hour(self) -> int | None:
        return self.account_limit if self.account_window in ("hour", "unknown") else None

    @property
    def account_per_minute(self) -> int | None:
        return self.account_limit if self.account_window in ("minute", "unknown") else None

    @property
    def limits(self) -> BudgetLimits:
        return BudgetLimits(self.per_hour, self.per_minute)

    def mismatch(self) -> str | None:
        """What to change when the configuration promises more than the account allows."""
        if self.hour_source == "account":
            return (f"rate_limit_per_hour = {self.configured.per_hour} but the account's answers "
                    f"allow {self.per_hour} calls an hour; budgeting with {self.per_hour} "
                    f"(set rate_limit_per_hour = {self.per_hour} to match)")
        if self.minute_source == "account" and self.account_window == "minute":
            return (f"rate_limit_per_minute = {self.configured.per_minute} but the account's "
                    f"answers allow {self.per_minute} calls a minute; budgeting with "
                    f"{self.per_minute} (set rate_limit_per_minute = {self.per_minute} to match)")
        return None


def _account(state: BudgetState, now: float) -> AccountLimit | None:
    account = state.account
    if account is None or now >= account.seen_at + ACCOUNT_LIMIT_TTL:
        return None
    return account


def effective_limits(state: BudgetState, now: float, configured: BudgetLimits) -> EffectiveLimits:
    """The lower of the configured limits and what the account's headers state.

    A limit whose window is not known yet caps both windows: under either reading no call is
    refused by the account.
    """
    account = _account(state, now)
    per_hour, hour_source = configured.per_hour, "configured"
    per_minute, minute_source = configured.per_minute, "configured"
    if account is not None:
        if account.window in ("hour", "unknown") and account.limit < per_hour:
            per_hour, hour_source = account.limit, "account"
        if account.window in ("minute", "unknown") and account.limit < per_minute:
            per_minute, minute_source = account.limit, "account"
    return EffectiveLimits(
        per_hour=per_hour, per_minute=min(per_minute, per_hour),
        hour_source=hour_source,  # type: ignore[arg-type]
        minute_source=minute_source,  # type: ignore[arg-type]
        configured=configured,
        account_limit=None if account is None else account.limit,
        account_window=None if account is None else account.window,
    )


def records_reserve(limits: BudgetLimits, reserve_fraction_for_records: float) -> int:
    """Hourly calls kept for record changes: ``floor(per_hour * fraction)``, below per_hour."""
    if not 0.0 <= reserve_fraction_for_records < 1.0:
        raise ValueError("reserve_fraction_for_records must be in [0, 1)")
    return math.floor(limits.per_hour * reserve_fraction_for_records)


def _hour_expiries(state: BudgetState, now: float) -> list[float]:
    return [g + HOUR for g in state.grants if g + HOUR > now]  # grants are sorted


def _minute_expiries(state: BudgetState, now: float) -> list[float]:
    return [g + MINUTE for g in state.grants if g + MINUTE > now]


def _server_left(state: BudgetState, now: float) -> int | None:
    """What the account has left by its own latest word (``None``: no word to trust now)."""
    view = state.server
    if view is None or now >= view.trusted_until:
        return None
    return view.remaining - max(state.issued - view.ticket, 0)


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
    blocked = state.blocked_until
    if blocked is not None and blocked <= horizon:
        blocked = None
    server = state.server
    if server is not None and server.trusted_until <= horizon:
        server = None
    if (grants, blocked, server) == (state.grants, state.blocked_until, state.server):
        return state
    return replace(state, grants=grants, blocked_until=blocked, server=server)


def _reserve(limits: BudgetLimits, priority: Priority, fraction: float) -> int:
    reserve = records_reserve(limits, fraction)
    if priority == "record":
        return 0
    if priority == "event":
        return reserve
    raise ValueError(f"unknown priority {priority!r}")


def _view_reserve(limits: BudgetLimits, priority: Priority, fraction: float) -> int:
    """The reserve kept of what the server says is left. Its count may describe the minute
    (headers do not say which window): kept as a share of the minute's limit, events can
    spend whenever the account has more than that share left, whichever window it counts."""
    return _reserve(BudgetLimits(limits.per_minute, limits.per_minute), priority, fraction)


def _blocked(state: BudgetState, now: float) -> float | None:
    """How long a caller must wait whatever the counts say, if at all."""
    if state.last_grant_at is not None and now < state.last_grant_at:
        return _wait_until(state.last_grant_at, now)
    if state.blocked_until is not None and now < state.blocked_until:
        return _wait_until(state.blocked_until, now)
    return None


def try_acquire(
    state: BudgetState,
    now: float,
    limits: BudgetLimits,
    priority: Priority = "record",
    reserve_fraction_for_records: float = DEFAULT_RESERVE_FRACTION,
) -> Acquisition:
    """Ask for one call at ``now`` (epoch seconds); ``limits`` are the configured ones."""
    now = _finite(now, "now")
    effective = effective_limits(state, now, limits).limits
    reserve = _reserve(effective, priority, reserve_fraction_for_records)
    blocked = _blocked(state, now)
    if blocked is not None:
        return Acquisition(False, state, blocked)

    waits: list[float] = []
    hour = _hour_expiries(state, now)
    hour_cap = effective.per_hour - reserve
    if len(hour) >= hour_cap:
        waits.append(_wait_until(hour[len(hour) - hour_cap], now))
    minute = _minute_expiries(state, now)
    if len(minute) >= effective.per_minute:
        waits.append(_wait_until(minute[len(minute) - effective.per_minute], now))
    server_left = _server_left(state, now)
    view_reserve = _view_reserve(effective, priority, reserve_fraction_for_records)
    if server_left is not None and server_left <= view_reserve and state.server is not None:
        waits.append(_wait_until(state.server.trusted_until, now))
    if waits:
        return Acquisition(False, state, max(waits))

    granted = replace(
        state,
        grants=(*state.grants, now),  # now >= every earlier grant, so still sorted
        last_grant_at=now,
        issued=state.issued + 1,
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
    effective = effective_limits(state, now, limits).limits
    reserve = _reserve(effective, priority, reserve_fraction_for_records)
    if _blocked(state, now) is not None:
        return 0
    by_hour = effective.per_hour - reserve - len(_hour_expiries(state, now))
    by_minute = effective.per_minute - len(_minute_expiries(state, now))
    left = min(by_hour, by_minute)
    server_left = _server_left(state, now)
    if server_left is not None:
        left = min(left, server_left - _view_reserve(effective, priority, reserve_fraction_for_records))
    return max(0, left)


def _learn_limit(
    previous: AccountLimit | None,
    limit: int,
    reset_seconds: float | None,
    remaining: int | None,
    now: float,
) -> AccountLimit:
    """Which window a stated limit describes, from its resets and refills.

    A reset more than a minute away proves an hourly window (and it stays proven: a sliding
    hour under steady traffic also shows resets seconds away). Otherwise the window is a minute
    once resets have stayed within a minute for two minutes on end, or once the remaining
    count has twice come back near the limit within a minute of being low; until then it is
    unknown (which caps both windows).
    """
    if previous is None or previous.limit != limit:
        previous = AccountLimit(limit=limit, window="unknown", seen_at=now)  # a new plan
    if previous.window == "hour":
        return replace(previous, seen_at=now)
    if reset_seconds is not None and reset_seconds > _HOURLY_RESET_AFTER:
        return AccountLimit(limit=limit, window="hour", seen_at=now)
    short_since = previous.short_resets_since
    if reset_seconds is not None:
        short_since = now if short_since is None else short_since
    low_at, refills = previous.low_at, previous.refills
    if remaining is not None:
        if remaining < limit * _LOW_FRACTION:
            low_at = now
        elif remaining >= limit * _REFILLED_FRACTION and low_at is not None:
            if now - low_at <= MINUTE + 1.0:
                refills += 1
            low_at = None
    proven = refills >= _REFILLS_FOR_A_MINUTE or (
        short_since is not None and now - short_since >= _SHORT_WINDOW_PROOF
    )
    window: Window = "minute" if proven else previous.window
    return AccountLimit(limit=limit, window=window, seen_at=now, short_resets_since=short_since,
                        low_at=low_at, refills=refills)


def observe_server_headers(
    state: BudgetState,
    now: float,
    *,
    ticket: int | None = None,
    limit: int | None = None,
    remaining: int | None = None,
    reset_seconds: float | None = None,
) -> BudgetState:
    """Learn from one answer's ``X-RateLimit-Limit``, ``-Remaining`` and ``-Reset``.

    ``ticket`` is the call's (``state.issued`` right after it was granted; ``None`` when
    unknown: then every call granted so far is taken as counted). The latest answer wins: an
    answer to an older call than the one the current view came from is ignored for
    ``remaining``. The server's count may well exceed ours (a new window); it is its word.
    """
    now = _finite(now, "now")
    reset = None if reset_seconds is None else max(_finite(reset_seconds, "reset_seconds"), 0.0)
    updated = state
    if limit is not None and limit >= 1:
        account = _learn_limit(updated.account, int(limit), reset, remaining, now)
        updated = replace(updated, account=account)
    if remaining is not None:
        ticket = updated.issued if ticket is None else min(ticket, updated.issued)
        current = updated.server
        if current is None or ticket >= current.ticket or now >= current.trusted_until:
            reset_at = None if reset is None else now + min(reset, HOUR)
            view = ServerView(max(0, int(remaining)), ticket, now, reset_at)
            updated = replace(updated, server=view if view.trusted_until > now else None)
    if updated.throttle_streak and remaining is not None and remaining > 0:
        updated = replace(updated, throttle_streak=0)
    return updated


def observe_throttle(
    state: BudgetState,
    now: float,
    retry_after: float | None,
    default_seconds: float = DEFAULT_THROTTLE_BLOCK_SECONDS,
    *,
    ticket: int | None = None,
) -> BudgetState:
    """Freshsales answered 429: grant nothing until ``now + retry_after``.

    Without a delay in the answer: a minute, doubling with each 429 in a row, at most 15
    minutes. The account has nothing left as of this call (``ticket``).
    """
    now = _finite(now, "now")
    streak = state.throttle_streak + 1
    if retry_after is None:
        delay = min(default_seconds * 2 ** min(streak - 1, 10), MAX_THROTTLE_BLOCK_SECONDS)
    else:
        delay = _finite(retry_after, "retry_after")
    until = now + max(delay, 0.0)
    blocked = state.blocked_until
    if blocked is None or blocked < until:
        blocked = until
    issued_ticket = state.issued if ticket is None else min(ticket, state.issued)
    view = ServerView(0, issued_ticket, now, reset_at=until)  # nothing left until then
    return replace(
        state, blocked_until=blocked, throttle_streak=streak, throttled_at=now, server=view
    )
