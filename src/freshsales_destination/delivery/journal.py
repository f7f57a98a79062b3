"""A unit of work's journal: the Freshsales calls it made, turned into journey steps.

Delivery records every Freshsales call of a unit in memory (``collect`` sets a context
variable for the worker's task; ``Executor._call`` appends to it), and the worker writes the
steps once, with the store write that ends the unit (``finish`` / ``reschedule`` take
``steps``), through ``store_call``: never one write per call, never from the event loop.

What a step holds is bounded and never a credential: a call is its operation, method, route
(the path without query string, with secrets redacted by the client), HTTP status or the
transport error's class, duration in milliseconds and Freshsales' error text (cut to
``ERROR_TEXT_LIMIT``). Headers, bodies, keys and tokens are never seen here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import orjson

from freshsales_destination.store.base import JourneyRow

ERROR_TEXT_LIMIT = 500
ROUTE_LIMIT = 200
TEXT_LIMIT = 1_000  # any other text of a step (a retry's reason, a dead letter's why)


@dataclass(slots=True)
class Call:
    """One Freshsales call of a unit (treat as read-only; not frozen: one is built per call)."""

    at: float
    operation: str
    method: str
    route: str
    status: int | None  # None: no answer (the transport failed)
    duration_ms: int
    error: str | None = None

    def detail(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "operation": self.operation, "method": self.method, "route": self.route,
            "status": self.status, "duration_ms": self.duration_ms,
        }
        if self.error is not None:
            out["error"] = self.error
        return out


_CALLS: ContextVar[list[Call] | None] = ContextVar("freshsales_destination_calls", default=None)


@contextmanager
def collect() -> Iterator[list[Call]]:
    """Collect the calls made inside the block (in this task) into the list it yields."""
    calls: list[Call] = []
    token = _CALLS.set(calls)
    try:
        yield calls
    finally:
        _CALLS.reset(token)


def route(path: str | None) -> str:
    """A request path as journeys keep it: no query string, bounded."""
    return (path or "").split("?", 1)[0][:ROUTE_LIMIT]


def bounded(text: str | None, limit: int = TEXT_LIMIT) -> str | None:
    if text is None:
        return None
    return text if len(text) <= limit else text[: limit - 1] + "…"


def record(
    *,
    at: float,
    operation: str,
    method: str | None,
    path: str | None,
    status: int | None,
    duration_ms: float,
    error: str | None = None,
) -> None:
    """Note one call in the current unit's journal (nothing when no unit is collecting)."""
    calls = _CALLS.get()
    if calls is None:
        return
    calls.append(Call(
        at=at, operation=operation, method=method or "", route=route(path), status=status,
        duration_ms=round(duration_ms), error=bounded(error, ERROR_TEXT_LIMIT),
    ))


def step(seq: int, at: float, kind: str, **detail: Any) -> JourneyRow:
    """One journey step; text values of `detail` are bounded."""
    clean = {k: bounded(v) if isinstance(v, str) else v for k, v in detail.items()}
    return JourneyRow(seq=seq, at=at, kind=kind, detail=orjson.dumps(clean))


def call_steps(seqs: Iterable[int], calls: Sequence[Call]) -> list[JourneyRow]:
    """Each call as a ``call`` step on every message it served."""
    if not calls:
        return []
    details = [(call.at, orjson.dumps(call.detail())) for call in calls]
    return [JourneyRow(seq, at, "call", detail) for seq in seqs for at, detail in details]
