"""Destination health as data (pure: no I/O, no clock; time is passed in).

A destination is ``healthy`` or has a fault that is the destination's rather than a message's:

- ``auth_failed``: Freshsales refused the API key (401) or its user (403);
- ``unreachable``: no answer at all (connection refused, DNS, timeouts), or a schema fetch
  that Freshsales answered with a 5xx;
- ``misconfigured``: the URL is one the HTTP library refuses to send to, the base URL leads
  to something that is not the Freshsales API (404 or a non-JSON page for the field
  settings), or the account's schema is unusable;
- ``rate_limited``: Freshsales answered 429. The shared budget (``core/budget.py``) already
  holds every call until the reset, so this state pauses nothing by itself; it is recorded so
  that ``status`` and the log say why delivery waits.

While a destination has a pausing fault, delivery makes no call for it except a *probe*: one
worker is let through at ``next_probe_at`` and its first call is the probe. Each failed probe
doubles the wait, from ``base`` to ``cap`` (with a wrong key: 15 s, 30 s, 60 s, ... 300 s, so
three calls in the first minute and one every five minutes after about ten). Any successful
call makes the destination healthy again.

``observe`` returns the new state and whether the change deserves its one log line: a log
line is due when the state (or, for the same state, the kind of fault) changes, never for a
probe that fails the same way again.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from typing import Any, Literal

__all__ = [
    "PAUSING",
    "STATES",
    "Health",
    "HealthPolicy",
    "Outcome",
    "State",
    "Transition",
    "claim_probe",
    "observe",
    "probe_delay",
]

State = Literal["healthy", "auth_failed", "unreachable", "misconfigured", "rate_limited"]
Outcome = Literal["ok", "auth_failed", "unreachable", "misconfigured", "rate_limited"]

STATES: tuple[State, ...] = (
    "healthy", "auth_failed", "unreachable", "misconfigured", "rate_limited"
)
# States in which delivery makes no call but the probe.
PAUSING: frozenset[str] = frozenset({"auth_failed", "unreachable", "misconfigured"})

_FORMAT_VERSION = 1


@dataclass(frozen=True)
class HealthPolicy:
    """Probe backoff per state: the wait after ``n`` failures is ``min(cap, base * 2**(n-1))``."""

    auth_base_seconds: float = 15.0
    unreachable_base_seconds: float = 10.0
    misconfigured_base_seconds: float = 15.0
    rate_limited_base_seconds: float = 60.0
    cap_seconds: float = 300.0
    rate_limited_cap_seconds: float = 900.0

    def __post_init__(self) -> None:
        for name in (
            "auth_base_seconds", "unreachable_base_seconds", "misconfigured_base_seconds",
            "rate_limited_base_seconds", "cap_seconds", "rate_limited_cap_seconds",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"HealthPolicy.{name} must be a positive number")

    def base_for(self, state: str) -> float:
        return {
            "auth_failed": self.auth_base_seconds,
            "unreachable": self.unreachable_base_seconds,
            "misconfigured": self.misconfigured_base_seconds,
            "rate_limited": self.rate_limited_base_seconds,
        }.get(state, self.auth_base_seconds)

    def cap_for(self, state: str) -> float:
        return self.rate_limited_cap_seconds if state == "rate_limited" else self.cap_seconds


@dataclass(frozen=True)
class Health:
    """What is known about one destination; persisted as JSON (``to_json`` / ``from_json``)."""

    state: State = "healthy"
    detail: str = ""
    """What happened, in words (never a secret): the answer's status and Freshsales' text."""
    since: float | None = None
    """When the current state began (None: healthy since we know of it)."""
    failures: int = 0
    """Failed calls (probes) in a row in the current unhealthy state."""
    next_probe_at: float | None = None
    """While unhealthy: the earliest time of the next call."""
    last_success_at: float | None = None
    last_failure_at: float | None = None

    @property
    def paused(self) -> bool:
        return self.state in PAUSING

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": _FORMAT_VERSION,
            "state": self.state,
            "detail": self.detail,
            "since": self.since,
            "failures": self.failures,
            "next_probe_at": self.next_probe_at,
            "last_success_at": self.last_success_at,
            "last_failure_at": self.last_failure_at,
        }

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False).encode()

    @classmethod
    def from_json(cls, raw: bytes | str | None) -> Health:
        """The stored health; a fresh ``Health()`` when absent or unreadable."""
        if raw is None:
            return cls()
        try:
            data = json.loads(raw)
        except ValueError:
            return cls()
        if not isinstance(data, dict) or data.get("state") not in STATES:
            return cls()

        def number(key: str) -> float | None:
            value = data.get(key)
            if isinstance(value, bool) or not isinstance(value, int | float):
                return None
            return float(value) if math.isfinite(value) else None

        failures = data.get("failures")
        return cls(
            state=data["state"],
            detail=str(data.get("detail") or ""),
            since=number("since"),
            failures=failures if isinstance(failures, int) and failures >= 0 else 0,
            next_probe_at=number("next_probe_at"),
            last_success_at=number("last_success_at"),
            last_failure_at=number("last_failure_at"),
        )


@dataclass(frozen=True)
class Transition:
    health: Health
    announce: bool
    """True when this change deserves its one log line."""
    recovered: bool = False
    """True when an unhealthy destination just became healthy."""


def probe_delay(policy: HealthPolicy, state: str, failures: int) -> float:
    """The wait before the next probe after ``failures`` failures in ``state``."""
    if failures <= 0:
        return 0.0
    exponent = min(failures - 1, 64)
    return min(policy.cap_for(state), policy.base_for(state) * 2.0**exponent)


def observe(
    health: Health,
    outcome: Outcome,
    now: float,
    policy: HealthPolicy,
    *,
    detail: str = "",
    retry_after: float | None = None,
) -> Transition:
    """The destination's health after one call's outcome at ``now``.

    ``ok``: any answer that shows the account works (a success). Every other outcome is a
    fault of the destination; ``retry_after`` (a 429's hint) sets the next probe directly.
    """
    if outcome == "ok":
        if health.state == "healthy":
            if health.last_success_at is not None and now - health.last_success_at < 1.0:
                return Transition(health, announce=False)  # spare the store a write per call
            return Transition(replace(health, last_success_at=now), announce=False)
        return Transition(
            Health(state="healthy", since=now, last_success_at=now,
                   last_failure_at=health.last_failure_at),
            announce=True,
            recovered=True,
        )
    same = health.state == outcome
    failures = health.failures + 1 if same else 1
    delay = probe_delay(policy, outcome, failures)
    if retry_after is not None and math.isfinite(retry_after) and retry_after >= 0:
        delay = max(retry_after, 1.0)
    new = Health(
        state=outcome,
        detail=detail or (health.detail if same else ""),
        since=health.since if same and health.since is not None else now,
        failures=failures,
        next_probe_at=now + delay,
        last_success_at=health.last_success_at,
        last_failure_at=now,
    )
    # One line per fault: a new state, or the same state for another reason (401 -> 403).
    announce = not same or _reason(detail) != _reason(health.detail)
    return Transition(new, announce=announce)


def _reason(detail: str) -> str:
    """The part of a detail that names the fault (its first word: the status or error type)."""
    return detail.split(" ", 1)[0] if detail else ""


def claim_probe(
    health: Health, now: float, policy: HealthPolicy, *, force: bool = False
) -> tuple[bool, Health]:
    """Take the probe if it is due: (True, state with the probe's slot reserved) or (False, state).

    ``force`` takes it even before ``next_probe_at``: a process that just started (perhaps
    with a fixed configuration) probes at once instead of waiting out the old backoff.

    The reservation moves ``next_probe_at`` on by the wait the probe would earn by failing,
    so other workers and processes do not probe at the same time, and a probe whose worker
    dies without an answer is still followed by another one in due time.
    """
    if not health.paused:
        return True, health
    if not force and health.next_probe_at is not None and now < health.next_probe_at:
        return False, health
    hold = probe_delay(policy, health.state, health.failures + 1)
    return True, replace(health, next_probe_at=now + hold)
