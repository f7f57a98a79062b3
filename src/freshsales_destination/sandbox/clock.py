"""Time as an injected dependency, so limits and timestamps are testable."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

Clock = Callable[[], float]
"""A function returning the current time in epoch seconds."""


def system_clock() -> float:
    return time.time()


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def iso_timestamp(epoch: float, offset_minutes: int = 0) -> str:
    """ISO-8601 with the account's UTC offset, seconds precision, as Freshsales prints it."""
    tz = timezone(timedelta(minutes=offset_minutes))
    return datetime.fromtimestamp(int(epoch), tz).isoformat()
