"""The per-destination tracking-API decision (delivery/events_route.py) on a real store, with
time passed in: one probe at a time, the learned fact, the daily re-check."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from freshsales_destination.core.events_via import RECHECK_SECONDS
from freshsales_destination.delivery.events_route import (
    PROBE_LEASE_SECONDS,
    EventsRoute,
    absent_evidence,
)
from freshsales_destination.delivery.learned import TRACKING_API, LearnedFacts
from freshsales_destination.freshsales.errors import (
    NotFound,
    RequestRejected,
    ServerError,
    UnexpectedResponse,
)
from freshsales_destination.store.sqlite import SQLiteStore

T0 = 2_000_000_000.0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    backend = SQLiteStore(tmp_path / "q.db")
    backend.open()
    yield backend
    backend.close()


def _route(store: SQLiteStore, via: str = "auto", token: bool = True, name: str = "crm") -> EventsRoute:
    return EventsRoute(store, name, events_via=via, has_app_token=token)  # type: ignore[arg-type]


def test_first_events_probe_one_at_a_time_then_follow_the_fact(store: SQLiteStore) -> None:
    route, other = _route(store), _route(store)  # two workers (or processes) on one store
    assert route.state(T0) == "unknown"
    assert route.claim_probe(T0) == "probe"  # this event asks the tracking API
    assert other.claim_probe(T0 + 1) == "wait"  # the others wait for its answer
    assert other.claim_probe(T0 + PROBE_LEASE_SECONDS + 1) == "probe"  # a lost probe expires
    route.learn_absent("HTTP 404 on /track/events", T0 + 2)
    assert other.state(T0 + 3) == "absent" and other.claim_probe(T0 + 3) == "absent"
    fact = LearnedFacts(store, "crm").get(TRACKING_API)
    assert fact is not None and (fact.value, fact.recheck_at) == ("absent", T0 + 2 + RECHECK_SECONDS)
    assert route.way(T0 + 3).way == "note" and route.way(T0 + 3).basis == "learned"
    assert "learned absent: HTTP 404 on /track/events" in route.describe(T0 + 3)
    # A day later one event re-checks; the others keep going the other way meanwhile.
    due = T0 + 2 + RECHECK_SECONDS
    assert route.state(due - 1) == "absent"
    assert route.state(due) == "unknown" and route.way(due).basis == "probe"
    assert route.claim_probe(due) == "probe"
    assert other.claim_probe(due + 1) == "absent"
    route.learn_absent("HTTP 404 on /track/events", due + 2)
    assert other.state(due + 3) == "absent"
    later = due + 2 + RECHECK_SECONDS
    assert other.claim_probe(later) == "probe"
    route.learn_present("a 2xx answer", later)
    assert other.state(later + 10 * RECHECK_SECONDS) == "present"
    assert other.claim_probe(later + 1) == "present"
    assert route.way(later + 10 * RECHECK_SECONDS).way == "tracking"


def test_facts_are_per_destination(store: SQLiteStore) -> None:
    _route(store, name="a").learn_absent("HTTP 405 on /track/events", T0)
    assert _route(store, name="b").state(T0) == "unknown"
    assert _route(store, name="a").state(T0) == "absent"
    for via, token in (("note", True), ("sales_activity", True), ("auto", False)):
        route = _route(store, via, token, name="a")
        assert not route.uses_tracking and "learned" not in route.describe(T0)
    assert _route(store, "tracking", name="a").way(T0).way == "tracking"


def test_what_counts_as_an_absent_tracking_api() -> None:
    assert absent_evidence(NotFound("x", status=404, path="/track/events")) == "HTTP 404 on /track/events"
    assert absent_evidence(RequestRejected("x", status=405, path="/track/page_views")) == "HTTP 405 on /track/page_views"
    html = absent_evidence(UnexpectedResponse("x", status=200, path="/track/events"))
    assert html is not None and "HTML" in html
    assert absent_evidence(ServerError("x", status=503, path="/track/events")) is None
    assert absent_evidence(RequestRejected("x", status=401, path="/track/events")) is None
