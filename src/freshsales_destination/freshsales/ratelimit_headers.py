"""Parse Freshsales rate-limit headers into plain data.

Freshsales sends ``X-RateLimit-Limit``, ``X-RateLimit-Remaining`` and ``X-RateLimit-Reset`` on
responses, and some sources say it sends ``Retry-After`` on a 429 while others say it never does
(reference §8.3). The format of ``X-RateLimit-Reset`` is not known: an epoch (seconds or
milliseconds), a delta in seconds, an HTTP date, or the 12-digit ``DDMMYYHHMMSS`` form that one PHP
client assumes. We accept all of them and turn them into "seconds from now".

Everything here is pure: the caller passes ``now`` (epoch seconds).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

__all__ = [
    "MAX_RESET_SECONDS",
    "MAX_RETRY_AFTER_SECONDS",
    "RateLimitInfo",
    "parse_rate_limit_headers",
    "parse_reset",
    "parse_retry_after",
]

# Freshsales windows are at most an hour long, so a reset further away is a misparse.
MAX_RESET_SECONDS = 3600.0
# A Retry-After beyond a day is treated as a day (the throttle window gives up after that anyway).
MAX_RETRY_AFTER_SECONDS = 86400.0

_EPOCH_SECONDS_FLOOR = 1e9  # 2001-09-09; smaller numbers are deltas
_EPOCH_MILLIS_FLOOR = 1e12


@dataclass(frozen=True)
class RateLimitInfo:
    """What one response said about the account's rate budget.

    ``reset_after`` and ``retry_after`` are seconds counted from ``observed_at`` (the moment
    the response was received, epoch seconds). Every field is ``None`` when the header was
    absent or unreadable.
    """

    observed_at: float
    limit: int | None = None
    remaining: int | None = None
    reset_after: float | None = None
    retry_after: float | None = None

    @property
    def present(self) -> bool:
        """True when at least one rate-limit header was readable."""
        return any(
            v is not None for v in (self.limit, self.remaining, self.reset_after, self.retry_after)
        )

    @property
    def reset_at(self) -> float | None:
        """Epoch seconds at which the server's window resets, if known."""
        return None if self.reset_after is None else self.observed_at + self.reset_after

    @property
    def throttle_delay(self) -> float | None:
        """How long a throttled caller should wait: Retry-After, else the reset, else None."""
        if self.retry_after is not None:
            return self.retry_after
        return self.reset_after


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        for key, candidate in headers.items():
            if key.lower() == lowered:
                value = candidate
                break
    if value is None:
        return None
    value = value.strip()
    return value or None


def _parse_count(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    if not math.isfinite(number) or number < 0:
        return None
    return int(number)


def _clamp(seconds: float, upper: float) -> float:
    return min(max(seconds, 0.0), upper)


def _parse_http_date(value: str, now: float) -> float | None:
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp() - now


def _parse_dmyhis(value: str, now: float) -> float | None:
    try:
        when = datetime.strptime(value, "%d%m%y%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return None
    return when.timestamp() - now


def parse_retry_after(value: str | None, now: float) -> float | None:
    """``Retry-After`` as seconds from ``now``: a number of seconds or an HTTP date."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        delta = _parse_http_date(value, now)
        return None if delta is None else _clamp(delta, MAX_RETRY_AFTER_SECONDS)
    if not math.isfinite(seconds):
        return None
    return _clamp(seconds, MAX_RETRY_AFTER_SECONDS)


def parse_reset(value: str | None, now: float) -> float | None:
    """``X-RateLimit-Reset`` as seconds from ``now``, whatever format it came in."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if len(value) == 12 and value.isdigit():
        delta = _parse_dmyhis(value, now)
        if delta is not None:
            return _clamp(delta, MAX_RESET_SECONDS)
    try:
        number = float(value)
    except ValueError:
        delta = _parse_http_date(value, now)
        return None if delta is None else _clamp(delta, MAX_RESET_SECONDS)
    if not math.isfinite(number):
        return None
    if number >= _EPOCH_MILLIS_FLOOR:
        delta = number / 1000.0 - now
    elif number >= _EPOCH_SECONDS_FLOOR:
        delta = number - now
    else:
        delta = number
    return _clamp(delta, MAX_RESET_SECONDS)


def parse_rate_limit_headers(headers: Mapping[str, str], now: float) -> RateLimitInfo:
    """Read the rate-limit headers of one response (header names are case-insensitive)."""
    return RateLimitInfo(
        observed_at=now,
        limit=_parse_count(_header(headers, "X-RateLimit-Limit")),
        remaining=_parse_count(_header(headers, "X-RateLimit-Remaining")),
        reset_after=parse_reset(_header(headers, "X-RateLimit-Reset"), now),
        retry_after=parse_retry_after(_header(headers, "Retry-After"), now),
    )
