"""The operations read model (admin/views.py) over the real thing: ingest over HTTP into a
SQLite file, the delivery engine against the sandbox with scripted failures, one fake clock
(started at the wall clock, so ingest's received_at and delivery's times line up).

It proves a message's journey holds every Freshsales call made for it (method, route, status,
error text) and its retries, outcomes and operator actions; that search pages and filters;
that the stats buckets and failure groups count what happened; that retry and drop change
only dead letters and say how many; and that no answer holds a configured secret."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from freshsales_destination.admin import views
from freshsales_destination.admin.views import MessageFilter
from freshsales_destination.housekeeping import prune_once
from tests.delivery.conftest import (
    API_KEY,
    APP_TOKEN,
    WRITE_KEY,
    FakeClock,
    Pipeline,
    make_pipeline,
)

MAPPING: dict[str, Any] = {"track_events": {"Note Me": {"action": "note"}}}
UPSERT = "/api/contacts/upsert"
NOTES = "/api/notes"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=time.time())


@pytest.fixture
def pipeline(tmp_path: Path, clock: FakeClock) -> Iterator[Pipeline]:
    yield from make_pipeline(tmp_path, "suite", clock=clock, mapping=MAPPING)


def script(pipeline: Pipeline, method: str, path: str, *answers: dict[str, Any]) -> None:
    response = httpx2.post(
        f"{pipeline.sandbox.root_url}/_sandbox/script",
        json={"method": method, "path": path, "responses": list(answers)},
        headers=pipeline.sandbox.auth_headers,
    )
    assert response.status_code == 200, response.text


def identify(user: str, mid: str) -> dict[str, Any]:
    return {"userId": user, "messageId": mid, "anonymousId": f"dev-{user}",
            "traits": {"email": f"{user}@example.com", "firstName": user.title()}}


def seq_of(pipeline: Pipeline, mid: str) -> int:
    stored = pipeline.store.get_message("web", mid)
    assert stored is not None, mid
    return stored.seq


def status_of(pipeline: Pipeline, mid: str) -> str:
    stored = pipeline.store.get_message("web", mid)
    assert stored is not None, mid
    return stored.status


def deliver_until(pipeline: Pipeline, clock: FakeClock, mid: str, wanted: str) -> None:
    for _ in range(50):
        pipeline.deliver(now=clock)
        if status_of(pipeline, mid) == wanted:
            return
        clock.advance(30)
    raise AssertionError(f"{mid} never became {wanted}: {status_of(pipeline, mid)}")


def as_json(value: Any) -> str:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    elif isinstance(value, list):
        value = [dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for v in value]
    return json.dumps(value, default=str)


def scenario(pipeline: Pipeline, clock: FakeClock) -> dict[str, int]:
    """ann: identify fails once (HTTP 500) then is delivered; ann's note is refused (400)
    and goes dead; cat's page has no url (discarded while planning); a track naming nobody
    is discarded at ingest; dan and eve are delivered at once."""
    script(pipeline, "POST", UPSERT,
           {"status": 500, "body": {"errors": {"message": ["Something went wrong"]}}})
    pipeline.send("/v1/identify", identify("ann", "ann-1"))
    pipeline.deliver(now=clock)
    # Waiting for its retry: searchable as "retrying", and a failure group of its own.
    waiting = views.search(pipeline.store, MessageFilter(status="retrying")).items
    assert [m.message_id for m in waiting] == ["ann-1"] and waiting[0].attempts == 1
    (group,) = views.failures(pipeline.store)
    assert group.status == "retrying" and "500" in group.reason
    assert group.samples == [waiting[0].id]
    deliver_until(pipeline, clock, "ann-1", "delivered")
    script(pipeline, "POST", NOTES,
           {"status": 400, "body": {"errors": {"message": ["Note text is too odd"]}}})
    pipeline.send("/v1/track", {"userId": "ann", "messageId": "ann-2", "event": "Note Me",
                                "properties": {"text": "hello"}})
    deliver_until(pipeline, clock, "ann-2", "dead")
    pipeline.send("/v1/page", {"userId": "cat", "messageId": "cat-1", "properties": {}})
    pipeline.send("/v1/track", {"messageId": "nobody-1", "event": "Signed Up"})
    for user in ("dan", "eve"):
        pipeline.send("/v1/identify", identify(user, f"{user}-1"))
    pipeline.deliver(now=clock)
    for mid, wanted in (("cat-1", "discarded"), ("nobody-1", "discarded"),
                        ("dan-1", "delivered"), ("eve-1", "delivered")):
        assert status_of(pipeline, mid) == wanted, mid
    return {mid: seq_of(pipeline, mid)
            for mid in ("ann-1", "ann-2", "cat-1", "nobody-1", "dan-1", "eve-1")}


def test_journey_search_stats_failures_and_dead_letter_actions(
    pipeline: Pipeline, clock: FakeClock
) -> None:
    store, settings = pipeline.store, pipeline.settings
    seqs = scenario(pipeline, clock)

    # -- the journey: every call, the retry, the outcome --------------------------------------
    journey = views.journey(store, settings, seqs["ann-1"])
    assert journey is not None
    kinds = [s.kind for s in journey.steps]
    assert kinds[:3] == ["received", "sorted", "planned"]
    assert kinds[-1] == "delivered"
    calls = [s.detail for s in journey.steps if s.kind == "call"]
    upserts = [c for c in calls if c["route"] == UPSERT]
    assert [c["status"] for c in upserts] == [500, 200], calls
    assert upserts[0]["method"] == "POST" and "Something went wrong" in upserts[0]["error"]
    assert all(isinstance(c["duration_ms"], int) and c["duration_ms"] >= 0 for c in calls)
    assert "error" not in upserts[1]
    (retry,) = [s for s in journey.steps if s.kind == "retry"]
    assert retry.detail["attempt"] == 1 and "500" in retry.detail["reason"]
    assert retry.detail["next_at"] > retry.at
    assert kinds.index("retry") < len(kinds) - 2, "the retry comes before the second call"
    planned = journey.steps[2].detail
    assert planned["explanation"]["status"] == "planned" and planned["operations"], planned
    assert journey.raw["messageId"] == "ann-1" and journey.normalized["userId"] == "ann"
    assert journey.message.user_id == "ann" and journey.message.anonymous_id == "dev-ann"
    # The log of the sandbox agrees: as many upserts as the journey shows for ann-1's unit.
    logged = [e for e in pipeline.sandbox.request_log() if e["route"] == UPSERT]
    assert len(logged) >= 2

    dead = views.journey(store, settings, seqs["ann-2"])
    assert dead is not None
    note_calls = [s.detail for s in dead.steps if s.kind == "call" and s.detail["route"] == NOTES]
    assert [c["status"] for c in note_calls] == [400]
    assert "Note text is too odd" in note_calls[0]["error"]
    assert dead.steps[-1].kind == "dead" and "400" in dead.steps[-1].detail["reason"]

    discarded = views.journey(store, settings, seqs["cat-1"])
    assert discarded is not None
    assert [s.kind for s in discarded.steps] == ["received", "sorted", "planned", "discarded"]
    assert discarded.steps[1].detail["outcome"] == "queued"
    assert "url" in discarded.steps[-1].detail["reason"]
    assert discarded.steps[-1].detail["code"] == "missing_url"
    at_ingest = views.journey(store, settings, seqs["nobody-1"])
    assert at_ingest is not None
    assert [s.kind for s in at_ingest.steps] == ["received", "sorted", "discarded"]
    assert views.journey(store, settings, 10_000_000) is None

    # -- search: filters and pagination -------------------------------------------------------
    def ids(flt: MessageFilter, limit: int = 50) -> list[str]:
        return [m.message_id for m in views.search(store, flt, limit=limit).items]

    assert ids(MessageFilter(user_id="ann")) == ["ann-2", "ann-1"]
    assert ids(MessageFilter(anonymous_id="dev-eve")) == ["eve-1"]
    assert ids(MessageFilter(email="DAN@example.com")) == ["dan-1"]
    assert ids(MessageFilter(message_id="cat-1")) == ["cat-1"]
    assert ids(MessageFilter(status="dead")) == ["ann-2"]
    assert ids(MessageFilter(type="page")) == ["cat-1"]
    assert ids(MessageFilter(reason="properties.url")) == ["cat-1"]
    assert ids(MessageFilter(user_id="ann", email="someone@else.com")) == []
    assert ids(MessageFilter(status="retrying")) == [], "nothing waits for a retry now"
    walked: list[str] = []
    cursor: str | None = None
    while True:
        page = views.search(store, MessageFilter(), limit=2, cursor=cursor)
        walked.extend(m.message_id for m in page.items)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert walked == ["eve-1", "dan-1", "nobody-1", "cat-1", "ann-2", "ann-1"]
    with pytest.raises(ValueError):
        views.search(store, MessageFilter(), cursor="not-a-cursor!")

    # -- stats ----------------------------------------------------------------------------------
    (crm,) = views.stats(store, settings, "1h", clock())
    assert crm.destination == "crm" and crm.bucket_seconds == 300 and len(crm.buckets) == 12
    totals = crm.totals
    assert (totals.received, totals.delivered, totals.dead, totals.discarded, totals.retried) == (
        6, 3, 1, 2, 1)
    for name in ("received", "delivered", "dead", "discarded", "retried", "filtered"):
        assert sum(getattr(b, name) for b in crm.buckets) == getattr(totals, name), name
    assert crm.buckets[0].start == totals.start
    assert crm.buckets[-1].start <= clock() < crm.buckets[-1].start + 300
    assert crm.latency_p50_seconds is not None and crm.latency_p95_seconds is not None
    assert 0 <= crm.latency_p50_seconds <= crm.latency_p95_seconds
    (day,) = views.stats(store, settings, "24h", clock())
    assert day.totals.delivered == 3 and len(day.buckets) == 24
    with pytest.raises(ValueError):
        views.stats(store, settings, "2h", clock())  # type: ignore[arg-type]

    # -- failures -------------------------------------------------------------------------------
    groups = views.failures(store)
    by = {(g.status, g.reason): g for g in groups}
    dead_group = next(g for (status, _), g in by.items() if status == "dead")
    assert dead_group.count == 1 and dead_group.samples == [seqs["ann-2"]]
    discards = [g for g in groups if g.status == "discarded"]
    assert sum(g.count for g in discards) == 2
    assert any("url" in g.reason for g in discards)
    assert views.failures(store, destination="elsewhere") == []

    # -- dead letters: retry and drop change only dead letters ---------------------------------
    assert views.retry_dead(store, MessageFilter(reason="no such reason"), clock()) == 0
    assert views.retry_dead(store, MessageFilter(status="delivered", user_id="ann"), clock()) == 1
    assert views.retry_dead(store, MessageFilter(user_id="ann"), clock()) == 0, "no longer dead"
    requeued = views.journey(store, settings, seqs["ann-2"])
    assert requeued is not None and requeued.steps[-1].kind == "requeued"
    pipeline.deliver(now=clock)  # the sandbox's script is spent: delivered now
    assert status_of(pipeline, "ann-2") == "delivered"
    again = views.journey(store, settings, seqs["ann-2"])
    assert again is not None
    assert [s.kind for s in again.steps][-3:] == ["requeued", "call", "delivered"]
    script(pipeline, "POST", NOTES, {"status": 400, "body": {"errors": {"message": ["no"]}}})
    pipeline.send("/v1/track", {"userId": "eve", "messageId": "eve-2", "event": "Note Me",
                                "properties": {"text": "x"}})
    deliver_until(pipeline, clock, "eve-2", "dead")
    assert views.drop_dead(store, MessageFilter(destination="other"), clock()) == 0
    assert views.drop_dead(store, MessageFilter(seqs=(seqs["eve-1"],)), clock()) == 0
    assert views.drop_dead(store, MessageFilter(email="eve@example.com"), clock()) == 0, (
        "the email is in eve-1 (delivered), not in the dead track")
    assert views.drop_dead(store, MessageFilter(user_id="eve", type="track"), clock()) == 1
    assert status_of(pipeline, "eve-2") == "dropped"
    dropped = views.journey(store, settings, seq_of(pipeline, "eve-2"))
    assert dropped is not None and dropped.steps[-1].kind == "dropped"

    # -- destinations and explain ----------------------------------------------------------------
    (overview,) = views.destinations(store, settings, clock())
    assert overview.name == "crm" and overview.health["state"] == "healthy"
    assert overview.backlog == {"pending": 0, "retrying": 0, "dead": 0}
    assert overview.oldest_pending_age_seconds is None
    assert overview.budget["per_hour"] > 0 and overview.drain_estimate_seconds == 0
    assert overview.events_via["setting"] == "auto"
    stored = views.explain_stored(store, settings, seqs["cat-1"])
    assert stored is not None and stored["message"] == seqs["cat-1"]
    assert stored["explanation"]["status"] == "discarded"
    posted = views.explain_event(store, settings, None, {**identify("zoe", "zoe-1"), "type": "identify"})
    assert posted["explanation"]["status"] == "planned"
    assert posted["schema_source"] == "store cache"
    assert views.explain_stored(store, settings, 10_000_000) is None

    # -- nothing holds a configured secret -------------------------------------------------------
    answers = [
        as_json(views.journey(store, settings, seq)) for seq in seqs.values()
    ] + [
        as_json(views.search(store, MessageFilter(), limit=100)),
        as_json(views.stats(store, settings, "7d", clock())),
        as_json(views.failures(store)),
        as_json(views.destinations(store, settings, clock())),
        json.dumps(posted), json.dumps(stored),
    ]
    for text in answers:
        for secret in (API_KEY, APP_TOKEN, WRITE_KEY):
            assert secret not in text

    # -- housekeeping prunes the journeys with the messages --------------------------------------
    assert store.steps_of(seqs["ann-1"])
    prune_once(store, dedup_days=settings.store.dedup_days,
               now=clock() + settings.store.dedup_days * 86400 + 3600)
    assert store.get_by_seq(seqs["ann-1"]) is None
    assert store.steps_of(seqs["ann-1"]) == []


def test_a_long_journey_shows_where_steps_were_cut() -> None:
    """More steps than the store keeps: the first and the latest, and how many between."""
    import orjson

    from freshsales_destination.config import settings_from_dict
    from freshsales_destination.store import rules
    from freshsales_destination.store.base import JourneyRow, NewMessage
    from freshsales_destination.store.sqlite import SQLiteStore

    settings = settings_from_dict({"destinations": {"crm": {
        "product": "suite", "domain": "acme", "api_key": "a-key-for-this-test"}}})
    store = SQLiteStore(None)
    store.open()
    try:
        body = orjson.dumps({"type": "track", "userId": "ann", "event": "Clicked",
                             "messageId": "m1"})
        store.append([NewMessage("web", "crm", "m1", "track", "pending", None, "u:ann",
                                 1.0, 1.0, body, body)])
        (seq,) = [m.seq for m in store.list_messages()]
        store.add_steps([JourneyRow(seq, 10.0 + i, "retry", orjson.dumps({"attempt": i}))
                         for i in range(1, 66)])
        journey = views.journey(store, settings, seq)
        assert journey is not None
        kinds = [s.kind for s in journey.steps]
        assert kinds[:3] == ["received", "sorted", "planned"]
        (cut,) = [s for s in journey.steps if s.kind == "elided"]
        assert cut.detail == {"steps": 65 - rules.JOURNEY_CAP}
        attempts = [s.detail["attempt"] for s in journey.steps if s.kind == "retry"]
        assert attempts == [*range(1, rules.JOURNEY_FIRST + 1), *range(26, 66)]
        assert kinds.index("elided") == 3 + rules.JOURNEY_FIRST
        assert journey.steps[2].detail["schema_source"] == "built-in default"
    finally:
        store.close()
