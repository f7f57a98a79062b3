"""Which way one destination's track and page events go, learned from the account's answers.

``events_via = "auto"`` (the default) uses the tracking API where it works and a note on the
person where it does not (reference §13.3: the tracking API is attested on Classic hosts only).
Whether it works is a learned fact (``delivery/learned.py``, ``tracking_api``):

* nothing learned yet: one event at a time calls the tracking API (a *probe*, claimed through a
  short lease in the store so that workers in several processes do not all probe at once; the
  others wait a few seconds, without spending their retry window);
* a 2xx answer: ``present``; a 404, a 405 or an HTML page on the tracking path: ``absent``, to be
  re-checked a day later (``core/events_via.py`` ``RECHECK_SECONDS``) by one event, while the
  others keep going the other way. No call is made to the tracking path in between.

The message whose call found the API absent is planned again at once (now as a note) in the same
lane, so it is neither lost nor dead-lettered. With ``events_via = "tracking"`` an absent API is a
misconfigured destination: the messages stay pending, with that reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import orjson

from freshsales_destination.core.events_via import (
    RECHECK_SECONDS,
    EventsVia,
    EventsWay,
    TrackingApi,
    events_way,
    tracking_state,
)
from freshsales_destination.core.operations import Operation, OperationKind
from freshsales_destination.delivery.learned import TRACKING_API, Fact, LearnedFacts
from freshsales_destination.errors import FreshsalesDestinationError
from freshsales_destination.freshsales.errors import FreshsalesError, UnexpectedResponse
from freshsales_destination.store.base import Store

PROBE_NAMESPACE = "tracking_probe"
PROBE_LEASE_SECONDS = 60.0
"""How long one worker's probe of the tracking API keeps the others from probing too."""

TRACKING_KINDS: frozenset[OperationKind] = frozenset(
    {OperationKind.TRACK_EVENT, OperationKind.TRACK_PAGE_VIEW}
)
EVENT_TYPES = frozenset({"track", "page", "screen"})

Probe = Literal["probe", "wait", "absent", "present"]


class TrackingApiAbsent(FreshsalesDestinationError):
    """The tracking path answered as if it did not exist (404, 405 or an HTML page)."""

    def __init__(self, evidence: str) -> None:
        super().__init__(f"the tracking API is absent on this account: {evidence}")
        self.evidence = evidence


def absent_evidence(exc: FreshsalesError) -> str | None:
    """Why a failed tracking call shows the API is absent, or None when it does not."""
    path = exc.path or "/track"
    if exc.status in (404, 405):
        return f"HTTP {exc.status} on {path}"
    if isinstance(exc, UnexpectedResponse):
        return f"an HTML (non-JSON) page, HTTP {exc.status}, on {path}"
    return None


def has_tracking(operations: Sequence[Operation]) -> bool:
    return any(op.kind in TRACKING_KINDS for op in operations)


class EventsRoute:
    """The tracking API's state for one destination, shared through the store."""

    def __init__(
        self, store: Store, destination: str, *, events_via: EventsVia, has_app_token: bool
    ) -> None:
        self.store = store
        self.destination = destination
        self.events_via = events_via
        self.has_app_token = has_app_token
        self.facts = LearnedFacts(store, destination)

    @property
    def uses_tracking(self) -> bool:
        """Whether this destination's `auto` events may go to the tracking API at all."""
        return self.has_app_token and self.events_via in ("auto", "tracking")

    def _fact(self) -> Fact | None:
        return self.facts.get(TRACKING_API)

    def state(self, now: float) -> TrackingApi:
        """What is known now (a due re-check counts as unknown); reads, never claims."""
        fact = self._fact()
        state = tracking_state(fact.value if fact else None, fact.recheck_at if fact else None, now)
        return "unknown" if state == "recheck" else state

    def way(self, now: float) -> EventsWay:
        """Which way events go now (for ``status`` and ``explain``)."""
        return events_way(self.events_via, self.has_app_token, self.state(now))

    def evidence(self) -> str:
        """What the learned tracking fact rests on, in a few words."""
        fact = self._fact()
        return "nothing learned yet" if fact is None else f"learned {fact.value}: {fact.evidence}"

    def describe(self, now: float) -> str:
        text = self.way(now).describe()
        fact = self._fact()
        if fact is not None and self.uses_tracking:
            text += f" [learned {fact.value}: {fact.evidence}"
            if fact.recheck_at is not None:
                text += f"; re-checked after epoch {fact.recheck_at:.0f}"
            text += "]"
        return text

    def claim_probe(self, now: float) -> Probe:
        """For an event about to call the tracking API while its state is unknown or due for
        a re-check: ``probe`` (this event asks; the lease is taken), ``wait`` (another worker
        is asking and nothing is known yet) or ``absent`` (another worker re-checks; go the
        other way meanwhile)."""
        fact = self._fact()
        state = tracking_state(fact.value if fact else None, fact.recheck_at if fact else None, now)
        if state == "present":
            return "present"
        if state == "absent":
            return "absent"
        if self._claim_probe(now):
            return "probe"
        return "absent" if state == "recheck" else "wait"

    def _claim_probe(self, now: float) -> bool:
        def update(raw: bytes | None) -> tuple[bool, bytes]:
            until = 0.0
            if raw is not None:
                try:
                    data = orjson.loads(raw)
                    if isinstance(data, dict) and isinstance(data.get("until"), int | float):
                        until = float(data["until"])
                except orjson.JSONDecodeError:
                    until = 0.0
            if until > now:
                return False, raw or b"{}"
            return True, orjson.dumps({"until": now + PROBE_LEASE_SECONDS})

        claimed: bool = self.store.kv_update(PROBE_NAMESPACE, self.destination, update, now=now)
        return claimed

    def _release_probe(self, now: float) -> None:
        self.store.kv_update(
            PROBE_NAMESPACE, self.destination, lambda raw: (None, b'{"until": 0}'), now=now
        )

    def give_up_probe(self, now: float) -> None:
        """The probing event made no call (the budget stopped it): the probe is free again."""
        self._release_probe(now)

    def learn_absent(self, evidence: str, now: float) -> None:
        self.facts.learn(
            TRACKING_API, Fact("absent", evidence, now, recheck_at=now + RECHECK_SECONDS)
        )
        self._release_probe(now)

    def learn_present(self, evidence: str, now: float) -> None:
        fact = self._fact()
        if fact is None or fact.value != "present":
            self.facts.learn(TRACKING_API, Fact("present", evidence, now))
        self._release_probe(now)


__all__ = [
    "EVENT_TYPES",
    "EventsRoute",
    "TrackingApiAbsent",
    "absent_evidence",
    "has_tracking",
]
