"""Creates that cannot race (issue 9, item 7).

Freshsales' lookups lag behind writes (reference 13.2: up to ~20 s), so two lanes that each
"look up, then create" the same new email make two records, or one of them is refused. The
sandbox plays that reading (`lookup_delay`, and `lookup_delay_upserts` for an upsert whose match
lags too) on a clock that never moves here: a record once created is never found by a lookup.
Two identifies naming one new email, in two lanes, delivered by two concurrent workers, must make
exactly one record, and the second write must land on it by id.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from freshsales_destination.delivery.engine import DeliveryEngine
from freshsales_destination.delivery.memory import DeliveryMemory
from freshsales_destination.sandbox import FakeClock
from freshsales_destination.store.sqlite import SQLiteStore
from tests.delivery.conftest import FakeClock as ConftestClock
from tests.delivery.conftest import Pipeline, make_pipeline

EMAIL = "Same.Person@Example.com"
LAGGING = {"lookup_delay": 20.0, "lookup_delay_upserts": True}


@pytest.fixture(params=[("suite", "lagging"), ("classic", "lagging"), ("suite", "default"),
                        ("classic", "default")], ids=lambda p: "-".join(p))
def racing(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Pipeline]:
    """Two workers. Lagging: the sandbox's clock stands still, so a new record never shows in
    lookups (nor in the match of an upsert); default: lookups are immediate."""
    product, reading = request.param
    yield from make_pipeline(
        tmp_path, product, clock=FakeClock(), sandbox_options=LAGGING if reading == "lagging" else {},
        app_token=False, workers=2, poll_interval=0.02,
    )


def _identify(mid: str, user: str, email: str, **traits: Any) -> dict[str, Any]:
    return {"type": "identify", "messageId": mid, "userId": user, "traits": {"email": email, **traits}}


def _slow_first_create(pipeline: Pipeline, product: str) -> None:
    """The first create answers after a moment, so the other lane runs while it is in flight."""
    path = "/api/contacts/upsert" if product == "suite" else "/api/leads"
    response = httpx2.post(
        f"{pipeline.sandbox.root_url}/_sandbox/script", headers=pipeline.sandbox.auth_headers,
        json={"method": "POST", "path": path, "responses": [{"action": "slow", "seconds": 1.0}]},
    )
    assert response.status_code == 200, response.text


def _run_until_drained(pipeline: Pipeline, *, seconds: float = 30.0) -> DeliveryEngine:
    """Run the destination's workers as `serve` does until nothing is pending, then stop.

    `seconds` only bounds a broken run; the test never relies on how fast anything is.
    """
    engine = DeliveryEngine.from_settings(pipeline.settings, pipeline.store)

    async def run() -> None:
        engine.start()
        try:
            deadline = time.monotonic() + seconds
            while pipeline.store.pending_count("crm") and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
        finally:
            await engine.stop()

    asyncio.run(run())
    return engine


def _people(pipeline: Pipeline, product: str) -> list[dict[str, Any]]:
    kind = "contacts" if product == "suite" else "leads"
    wanted = EMAIL.lower()
    return [
        r for r in pipeline.records(kind)
        if wanted in {str(r.get("email") or "").lower()}
        | {str(e.get("value") if isinstance(e, dict) else e).lower() for e in r.get("emails") or []}
    ]


def test_two_lanes_with_one_new_email_make_one_record(racing: Pipeline) -> None:
    product = racing.settings.destinations["crm"].product
    _slow_first_create(racing, product)
    racing.send("/v1/batch", {"batch": [
        _identify("race-1", "user-one", EMAIL, title="Founder", lastName="Day"),
        _identify("race-2", "user-two", EMAIL.lower(), firstName="Robin", lastName="Day"),
    ]})
    _run_until_drained(racing)

    assert racing.store.count_by_status() == {"delivered": 2}
    (person,) = _people(racing, product)
    # Both writes reached the one record: the second by id, with no lookup of its own.
    assert person["job_title"] == "Founder" and person["first_name"] == "Robin"
    for mid in ("race-1", "race-2"):
        stored = racing.store.get_message("web", mid)
        assert stored is not None
        # No retry spent: the one delivering attempt only.
        assert stored.attempts == 1 and stored.first_failure_at is None, stored
    memory = DeliveryMemory(racing.store, "crm")
    ids = {memory.identity(user).record_id for user in ("user-one", "user-two")}  # type: ignore[union-attr]
    assert ids == {person["id"]}

    log = racing.sandbox.request_log()
    creates = [e for e in log if e["method"] == "POST" and e["path"].endswith(
        "/contacts/upsert" if product == "suite" else "/api/leads")]
    updates = [e for e in log if e["method"] == "PUT"]
    lookups = [e for e in log if e["path"].endswith("/lookup")]
    assert len(creates) == 1 and len(updates) == 1, log
    # Suite creates by upsert (no lookup); Classic looks the email up once, before its create.
    assert len(lookups) == (0 if product == "suite" else 1), lookups
    assert all("external_id" not in str(e.get("query")) for e in lookups)


@pytest.mark.parametrize("product", ["suite", "classic"])
def test_a_record_made_elsewhere_that_lookups_cannot_show_yet_is_updated_not_duplicated(
    tmp_path: Path, product: str
) -> None:
    """A salesperson (or the tracking API) made the record a moment ago: the create is refused
    as a duplicate, which is retried, and lands on that record once it is visible."""
    clock = ConftestClock()
    pipelines = make_pipeline(tmp_path, product, clock=clock, sandbox_options=LAGGING, app_token=False)
    pipeline = next(pipelines)
    try:
        kind = "contact" if product == "suite" else "lead"
        made = httpx2.post(
            f"{pipeline.sandbox.base_url}/api/{kind}s", headers=pipeline.sandbox.auth_headers,
            json={kind: {"emails": [EMAIL], "last_name": "Day"}},
        )
        assert made.status_code in (200, 201), made.text
        pipeline.send("/v1/identify", _identify("late-1", "user-late", EMAIL, title="CTO"))
        for _ in range(30):
            pipeline.deliver(now=clock)
            stored = pipeline.store.get_message("web", "late-1")
            assert stored is not None
            if stored.status != "pending":
                break
            clock.advance(5.0)
        assert stored.status == "delivered", stored
        assert stored.attempts >= 1  # refused as taken while invisible, then retried
        (person,) = _people(pipeline, product)
        assert person["id"] == made.json()[kind]["id"] and person["job_title"] == "CTO"
    finally:
        pipelines.close()


@pytest.mark.parametrize("product", ["suite", "classic"])
def test_an_anonymous_event_waits_for_the_create_of_its_email_then_lands_on_it(
    tmp_path: Path, product: str
) -> None:
    """An anonymousId's track names the email a userId's identify is creating (another lane).
    While that create's outcome is unknown (a 503), the note neither gives the person up nor
    spends an attempt; it lands on the one record once the identify made it."""
    clock = ConftestClock()
    pipelines = make_pipeline(tmp_path, product, clock=clock, sandbox_options=LAGGING, app_token=False)
    pipeline = next(pipelines)
    try:
        path = "/api/contacts/upsert" if product == "suite" else "/api/leads"
        scripted = httpx2.post(
            f"{pipeline.sandbox.root_url}/_sandbox/script", headers=pipeline.sandbox.auth_headers,
            json={"method": "POST", "path": path,
                  "responses": [{"status": 503, "body": {"error_code": 503}}]},
        )
        assert scripted.status_code == 200, scripted.text
        pipeline.send("/v1/identify", _identify("id-1", "user-known", EMAIL, lastName="Day"))
        pipeline.send("/v1/track", {"anonymousId": "anon-7", "messageId": "anon-1",
                                    "event": "Viewed Pricing", "context": {"traits": {"email": EMAIL}}})
        pipeline.deliver(now=clock)
        waiting = pipeline.store.get_message("web", "anon-1")
        assert waiting is not None and waiting.status == "pending" and waiting.attempts == 0, waiting
        for _ in range(30):
            clock.advance(5.0)
            pipeline.deliver(now=clock)
            if not pipeline.store.pending_count("crm"):
                break
        assert pipeline.store.count_by_status() == {"delivered": 2}
        (person,) = _people(pipeline, product)
        assert [n["targetable_id"] for n in pipeline.records("notes")] == [person["id"]]
        assert not [e for e in pipeline.sandbox.request_log() if e["path"].endswith("/lookup")
                    and product == "suite"]
    finally:
        pipelines.close()


def test_an_event_for_a_person_never_created_is_skipped_with_the_reason(tmp_path: Path) -> None:
    """No claim is held and no record exists: one lookup by email, then the note is skipped."""
    pipelines = make_pipeline(tmp_path, "suite", app_token=False)
    pipeline = next(pipelines)
    try:
        pipeline.send("/v1/track", {"userId": "nobody@example.com", "messageId": "t-1",
                                    "event": "Viewed Pricing"})
        pipeline.deliver()
        stored = pipeline.store.get_message("web", "t-1")
        assert stored is not None and stored.status == "skipped"
        assert "no such person" in (stored.reason or "")
        lookups = [e for e in pipeline.sandbox.request_log() if e["path"].endswith("/lookup")]
        assert len(lookups) == 1 and "f=email" in str(lookups[0]["query"])
    finally:
        pipelines.close()


def test_create_claims_are_exclusive_expire_and_settle(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "claims.db")
    store.open()
    try:
        one, other = DeliveryMemory(store, "crm"), DeliveryMemory(store, "other-destination")
        first = one.claim_create(" A@Example.com ", "lane-a", now=100.0, hold=120.0)
        assert first.granted
        refused = one.claim_create("a@example.com", "lane-b", now=101.0, hold=120.0)
        assert not refused.granted and refused.until == 220.0 and not refused.settling
        assert other.claim_create("a@example.com", "lane-b", now=101.0, hold=120.0).granted
        assert not one.claim_holder("a@example.com", now=101.0).granted
        # Only the owner gives it back; a create with an unknown outcome keeps it to settle.
        one.end_claim("a@example.com", "lane-b", now=102.0)
        assert not one.claim_holder("a@example.com", now=102.0).granted
        one.end_claim("a@example.com", "lane-a", now=102.0, settle=30.0)
        settling = one.claim_create("a@example.com", "lane-a", now=103.0, hold=120.0)
        assert not settling.granted and settling.settling and settling.until == 132.0
        assert one.claim_create("a@example.com", "lane-b", now=132.0, hold=120.0).granted
        one.end_claim("a@example.com", "lane-b", now=133.0)
        assert one.claim_holder("a@example.com", now=133.0).granted
        # A holder that vanished loses the claim when it expires.
        assert one.claim_create("b@example.com", "crashed", now=0.0, hold=120.0).granted
        assert not one.claim_create("b@example.com", "lane-c", now=119.0, hold=120.0).granted
        assert one.claim_create("b@example.com", "lane-c", now=120.0, hold=120.0).granted
        # Ids are remembered by email, whatever its case or surrounding spaces.
        one.remember_email("contact", "C@Example.com ", 7, now=1.0)
        assert one.person_by_email("contact", "c@example.com") == 7
        assert one.person_by_email("lead", "c@example.com") is None
        one.forget_email("contact", "c@example.com", now=2.0)
        assert one.person_by_email("contact", "C@example.com") is None
    finally:
        store.close()


def test_a_failed_write_after_the_create_never_creates_the_person_again(tmp_path: Path) -> None:
    """The upsert made the record; the write that follows it (the complete custom fields) is
    answered 429. The record's id is remembered at once, so the retry writes to it by id
    instead of creating the person again (which, with lookups lagging, would make a second
    record or be refused as a duplicate until the message died)."""
    from tests.delivery.test_preserve import SEED

    seed = tmp_path / "seed.toml"
    seed.write_text(SEED)
    clock = ConftestClock()
    pipelines = make_pipeline(
        tmp_path, "suite", clock=clock, app_token=False,
        sandbox_options={"seed_path": seed, "lookup_delay": 100_000.0,
                         "lookup_delay_upserts": True, "custom_fields": "replace"},
    )
    pipeline = next(pipelines)
    try:
        scripted = httpx2.post(
            f"{pipeline.sandbox.root_url}/_sandbox/script", headers=pipeline.sandbox.auth_headers,
            json={"method": "PUT", "path": "/crm/sales/api/contacts/*", "responses": [
                {"status": 429, "body": {"error_code": 429}, "headers": {"Retry-After": "1"}}]},
        )
        assert scripted.status_code == 200, scripted.text
        pipeline.send("/v1/identify", {"userId": "u-1", "messageId": "m1",
                                       "traits": {"email": "ada@example.com", "cfPlan": "Pro"}})
        for _ in range(5):
            pipeline.deliver(now=clock)
            clock.advance(120)
        stored = pipeline.store.get_message("web", "m1")
        assert stored is not None and stored.status == "delivered", stored
        (contact,) = pipeline.records("contacts")
        assert (contact.get("custom_field") or {}).get("cf_plan") == "Pro"
        memory = DeliveryMemory(pipeline.store, "crm")
        assert memory.person_by_email("contact", "ada@example.com") == contact["id"]
        upserts = [e for e in pipeline.sandbox.request_log()
                   if e["path"].endswith("/contacts/upsert")]
        assert len(upserts) == 1, upserts
    finally:
        pipelines.close()
