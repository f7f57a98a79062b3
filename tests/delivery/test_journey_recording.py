"""Delivery records each message's Freshsales calls economically (issue 10 item 6): a unit's
calls ride on the store write that ends the unit (``finish`` / ``reschedule`` take the steps),
never one write per call; only a unit cut short with no write of its own (the budget ran out
half-way) writes its calls on their own, once. Real ingest, engine, sandbox and SQLite file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from freshsales_destination.store.base import JourneyRow
from tests.delivery.conftest import FakeClock, Pipeline, make_pipeline


class Writes:
    """The store's writes that carry journey steps, as delivery made them."""

    def __init__(self, pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
        self.finishes: list[list[JourneyRow]] = []
        self.reschedules: list[list[JourneyRow]] = []
        self.alone: list[list[JourneyRow]] = []
        store = pipeline.store
        finish, reschedule, add_steps = store.finish, store.reschedule, store.add_steps

        def counted_finish(*args: Any, steps: Any = (), **kwargs: Any) -> None:
            self.finishes.append(list(steps))
            finish(*args, steps=steps, **kwargs)

        def counted_reschedule(*args: Any, steps: Any = (), **kwargs: Any) -> None:
            self.reschedules.append(list(steps))
            reschedule(*args, steps=steps, **kwargs)

        def counted_add(steps: Any) -> None:
            self.alone.append(list(steps))
            add_steps(steps)

        monkeypatch.setattr(store, "finish", counted_finish)
        monkeypatch.setattr(store, "reschedule", counted_reschedule)
        monkeypatch.setattr(store, "add_steps", counted_add)


def api_calls(pipeline: Pipeline) -> list[dict[str, Any]]:
    return [e for e in pipeline.sandbox.request_log() if e["kind"] in ("api", "track")
            and e["method"] != "GET"]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def pipeline(tmp_path: Path, clock: FakeClock) -> Iterator[Pipeline]:
    yield from make_pipeline(tmp_path, "suite", clock=clock)


def identify(user: str) -> dict[str, Any]:
    return {"userId": user, "messageId": f"{user}-1",
            "traits": {"email": f"{user}@example.com", "title": "Engineer",
                       "company": {"name": f"{user.title()} Inc"}}}


def test_a_units_calls_ride_on_the_write_that_finishes_it(
    pipeline: Pipeline, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes = Writes(pipeline, monkeypatch)
    for user in ("ann", "bob"):
        pipeline.send("/v1/identify", identify(user))
    pipeline.send("/v1/track", {"userId": "ann", "messageId": "ann-2", "event": "Clicked"})
    pipeline.deliver(now=clock)
    assert writes.alone == [] and writes.reschedules == []
    sent = api_calls(pipeline)
    assert len(sent) >= 5, sent  # two accounts, two contacts, an event
    stored_calls = [s for steps in writes.finishes for s in steps if s.kind == "call"]
    assert len(stored_calls) == len(sent), "every call recorded once, on its message"
    for steps in writes.finishes:
        assert steps and steps[-1].kind == "delivered"
    ann = pipeline.store.get_message("web", "ann-1")
    assert ann is not None
    routes = [orjson.loads(s.detail)["route"] for s in pipeline.store.steps_of(ann.seq)
              if s.kind == "call"]
    assert any(r.endswith("/api/sales_accounts/upsert") for r in routes), routes
    assert any(r.endswith("/api/contacts/upsert") for r in routes), routes
    # As many store writes as before the journey: one finish per unit, no more.
    assert len(writes.finishes) == 3


def test_calls_of_a_unit_the_budget_cut_short_are_written_once_on_their_own(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    gen = make_pipeline(tmp_path, "suite", clock=clock,
                        destination={"rate_limit_per_hour": 11, "rate_limit_per_minute": 11})
    pipeline = next(gen)
    try:
        writes = Writes(pipeline, monkeypatch)
        pipeline.send("/v1/identify", identify("cat"))
        pipeline.deliver(now=clock)
        sent = api_calls(pipeline)
        cat = pipeline.store.get_message("web", "cat-1")
        assert cat is not None
        if cat.status == "delivered":
            pytest.fail(f"the budget did not cut the unit short ({len(sent)} calls)")
        assert len(writes.alone) == 1, "one write for the unit's calls"
        assert [s.kind for s in writes.alone[0]] == ["call"] * len(sent)
        assert writes.finishes == []
        steps = pipeline.store.steps_of(cat.seq)
        assert [s.kind for s in steps] == ["call"] * len(sent)
    finally:
        next(gen, None)
