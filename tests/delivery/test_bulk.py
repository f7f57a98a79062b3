"""Bulk delivery of record writes (issue 12, items 2 to 4) end to end: ingest over real HTTP, the
SQLite store, the delivery engine on a fake clock, the sandbox as Freshsales (its jobs finish on
the same clock).

Each test checks what reached the sandbox (records, the request log) and the messages' states.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import orjson
import pytest

from freshsales_destination.core.statuses import MessageStatus
from freshsales_destination.delivery.bulk import NAMESPACE
from freshsales_destination.delivery.engine import DeliveryEngine
from freshsales_destination.delivery.learned import BULK_API, CUSTOM_FIELDS, Fact, LearnedFacts
from tests.delivery.conftest import FakeClock, Pipeline, make_pipeline

PEOPLE = 30


def _identify(i: int, **traits: Any) -> dict[str, Any]:
    return {"type": "identify", "messageId": f"id-{i}", "userId": f"user-{i}",
            "traits": {"email": f"person{i}@example.com", "first_name": f"P{i}", **traits}}


def _track(i: int) -> dict[str, Any]:
    return {"type": "track", "messageId": f"tr-{i}", "userId": f"user-{i}", "event": "Signed Up"}


def _calls(pipeline: Pipeline) -> list[tuple[str, str]]:
    return [(e["method"], e["route"]) for e in pipeline.sandbox.request_log()]


def _record_calls(pipeline: Pipeline) -> list[tuple[str, str]]:
    return [c for c in _calls(pipeline) if c[1].startswith(("/api/contacts", "/api/job_statuses"))]


def _statuses(pipeline: Pipeline) -> dict[str, str]:
    return {m.message_id: m.status for m in pipeline.store.list_messages(limit=10_000)}


def _make(tmp_path: Path, clock: FakeClock, *, sandbox: dict[str, Any] | None = None,
          destination: dict[str, Any] | None = None) -> Iterator[Pipeline]:
    yield from make_pipeline(tmp_path, "suite", clock=clock, sandbox_options=sandbox or {},
                             app_token=False, destination={"bulk": "auto", **(destination or {})})


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def pipeline(tmp_path: Path, clock: FakeClock) -> Iterator[Pipeline]:
    yield from _make(tmp_path, clock)


def test_a_backlog_goes_as_one_job_and_later_messages_wait_for_it(pipeline: Pipeline, clock: FakeClock) -> None:
    pipeline.send("/v1/batch", {"batch": [_identify(i) for i in range(PEOPLE)] + [_track(0)]})
    pipeline.deliver(now=clock)
    # One job is pending; nothing is written yet, and user-0's track waits behind its identify.
    assert _record_calls(pipeline) == [("POST", "/api/contacts/bulk_upsert")]
    assert pipeline.records("contacts") == []
    statuses = _statuses(pipeline)
    assert statuses["tr-0"] == MessageStatus.PENDING and statuses["id-0"] == MessageStatus.PENDING
    assert len(orjson.loads(pipeline.store.kv_get(NAMESPACE, "crm") or b"{}")["jobs"]) == 1
    clock.advance(2)
    pipeline.deliver(now=clock)
    contacts = {c["email"]: c for c in pipeline.records("contacts")}
    assert len(contacts) == PEOPLE
    assert contacts["person7@example.com"]["first_name"] == "P7"
    assert contacts["person7@example.com"]["external_id"] == "user-7"
    statuses = _statuses(pipeline)
    assert {statuses[f"id-{i}"] for i in range(PEOPLE)} == {MessageStatus.DELIVERED}
    # Each message's journey says which job wrote it, and the attempt counts.
    stored = pipeline.store.get_message("web", "id-7")
    assert stored is not None and stored.attempts == 1
    steps = pipeline.store.steps_of(stored.seq)
    assert [row.kind for row in steps] == ["delivered"]
    job_id = next(iter(pipeline.sandbox.state.bulk.jobs))
    assert orjson.loads(steps[0].detail) == {"reason": f"written by bulk job {job_id}", "bulk_job": str(job_id)}
    # The track needs the person's id, which a bulk answer never holds: it is looked up by
    # email once lookups can show a record just made (the create claim settles first).
    assert statuses["tr-0"] == MessageStatus.PENDING
    clock.advance(31)
    pipeline.deliver(now=clock)
    assert set(_statuses(pipeline).values()) == {MessageStatus.DELIVERED}
    calls = [c for c in _calls(pipeline) if c[1].startswith(("/api/contacts", "/api/job_statuses", "/api/lookup"))]
    assert calls[:2] == [("POST", "/api/contacts/bulk_upsert"), ("GET", calls[1][1])]
    assert calls[1][1].startswith("/api/job_statuses/")
    assert calls[2:] == [("GET", "/api/lookup")]
    notes = pipeline.records("notes")
    assert len(notes) == 1 and notes[0]["targetable_id"] == contacts["person0@example.com"]["id"]
    fact = LearnedFacts(pipeline.store, "crm").get(BULK_API)
    assert fact is not None and fact.value == "present"
    assert orjson.loads(pipeline.store.kv_get(NAMESPACE, "crm") or b"{}")["jobs"] == []


def test_a_lone_identify_goes_at_once_as_a_single_call(pipeline: Pipeline, clock: FakeClock) -> None:
    pipeline.send("/v1/identify", _identify(1))
    pipeline.deliver(now=clock)
    assert _record_calls(pipeline) == [("POST", "/api/contacts/upsert")]
    assert _statuses(pipeline) == {"id-1": MessageStatus.DELIVERED}


def _script(pipeline: Pipeline, method: str, path: str, status: int, body: Any) -> None:
    answer = httpx2.post(f"{pipeline.sandbox.root_url}/_sandbox/script", headers=pipeline.sandbox.auth_headers,
                         json={"method": method, "path": path, "response": {"status": status, "body": body}})
    assert answer.status_code == 200, answer.text


def test_failed_records_are_retried_singly_then_dead_with_freshsales_message(
    pipeline: Pipeline, clock: FakeClock
) -> None:
    # Freshsales refuses one record of the job, and again as a single call. (The planner already
    # drops what the schema shows to be invalid, so the refusals are Freshsales' own: scripted.)
    pipeline.send("/v1/batch", {"batch": [_identify(i) for i in range(13)]})
    report = {"record_status": {"succeeded": 12, "failed": 1},
              "detailed_failure_report": [{"emails": "PERSON12@example.com ",
                                           "error_message": ["Email is on the do-not-contact list"]}]}
    _script(pipeline, "GET", "/api/job_statuses/*", 200, {"status": "SUCCESS", "data": orjson.dumps(report).decode()})
    _script(pipeline, "POST", "/api/contacts/upsert", 400,
            {"errors": {"code": 400, "message": ["Email is on the do-not-contact list"]}})
    pipeline.deliver(now=clock)
    clock.advance(2)
    pipeline.deliver(now=clock)
    statuses = _statuses(pipeline)
    assert statuses["id-12"] == MessageStatus.DEAD
    assert all(statuses[f"id-{i}"] == MessageStatus.DELIVERED for i in range(12))
    dead = pipeline.store.get_message("web", "id-12")
    assert dead is not None and dead.reason is not None
    assert "do-not-contact" in dead.reason and "400" in dead.reason
    calls = _record_calls(pipeline)
    assert calls.count(("POST", "/api/contacts/bulk_upsert")) == 1
    assert calls.count(("POST", "/api/contacts/upsert")) == 1  # the refused record, singly


def test_a_finished_job_that_does_not_account_for_a_record_hands_it_back(
    pipeline: Pipeline, clock: FakeClock
) -> None:
    pipeline.send("/v1/batch", {"batch": [_identify(i) for i in range(12)]})
    report = {"record_status": {"succeeded": 11, "failed": 0}, "detailed_failure_report": []}
    _script(pipeline, "GET", "/api/job_statuses/*", 200, {"status": "SUCCESS", "data": orjson.dumps(report).decode()})
    pipeline.deliver(now=clock)
    clock.advance(2)
    pipeline.deliver(now=clock)
    assert set(_statuses(pipeline).values()) == {MessageStatus.PENDING}
    clock.advance(31)  # the records may exist: their creates wait until lookups would show them
    pipeline.deliver(now=clock)
    # Which record is missing is unknown: all twelve are written again as single calls (upserts
    # by email, so the records written by the job are updated, not duplicated).
    assert set(_statuses(pipeline).values()) == {MessageStatus.DELIVERED}
    assert _record_calls(pipeline).count(("POST", "/api/contacts/upsert")) == 12
    assert len(pipeline.records("contacts")) == 12


def test_a_job_that_never_finishes_is_given_up_and_written_singly(tmp_path: Path, clock: FakeClock) -> None:
    for pipeline in _make(tmp_path, clock, sandbox={"bulk_job_seconds": 1e9},
                          destination={"bulk_job_timeout_seconds": 300}):
        pipeline.send("/v1/batch", {"batch": [_identify(i) for i in range(12)]})
        pipeline.deliver(now=clock)
        for _ in range(40):
            clock.advance(15)
            pipeline.deliver(now=clock)
        statuses = _statuses(pipeline)
        assert set(statuses.values()) == {MessageStatus.DELIVERED}
        calls = _record_calls(pipeline)
        polls = [c for c in calls if "job_statuses" in c[1]]
        # Backoff 2, 4, 8, ... 120 s within 300 s: a handful of polls, not one per pass.
        assert 3 <= len(polls) <= 7, polls
        assert calls.count(("POST", "/api/contacts/bulk_upsert")) == 1  # handed back: never in a job again
        assert calls.count(("POST", "/api/contacts/upsert")) == 12
        assert len(pipeline.records("contacts")) == 12


def test_no_bulk_api_falls_back_to_single_calls_and_rechecks_daily(tmp_path: Path, clock: FakeClock) -> None:
    for pipeline in _make(tmp_path, clock, sandbox={"bulk_api": "absent"}):
        pipeline.send("/v1/batch", {"batch": [_identify(i) for i in range(12)]})
        pipeline.deliver(now=clock)
        assert set(_statuses(pipeline).values()) == {MessageStatus.DELIVERED}
        fact = LearnedFacts(pipeline.store, "crm").get(BULK_API)
        assert fact is not None and fact.value == "absent" and fact.recheck_at == clock.now + 86_400
        pipeline.send("/v1/batch", {"batch": [_identify(i) for i in range(100, 112)]})
        pipeline.deliver(now=clock)
        assert _record_calls(pipeline).count(("POST", "/api/contacts/bulk_upsert")) == 1
        assert _record_calls(pipeline).count(("POST", "/api/contacts/upsert")) == 24
        clock.advance(86_400)
        pipeline.send("/v1/batch", {"batch": [_identify(i) for i in range(200, 212)]})
        pipeline.deliver(now=clock)
        assert _record_calls(pipeline).count(("POST", "/api/contacts/bulk_upsert")) == 2


@pytest.mark.parametrize(("refusals", "bulk_used"), [(2, True), (5, False)])
def test_405_is_retried_after_a_pause_then_falls_back(
    tmp_path: Path, clock: FakeClock, refusals: int, bulk_used: bool
) -> None:
    for pipeline in _make(tmp_path, clock, sandbox={"bulk_405s": refusals}):
        pipeline.send("/v1/batch", {"batch": [_identify(i) for i in range(12)]})
        start = clock.now
        pipeline.deliver(now=clock)
        posts = [e for e in pipeline.sandbox.request_log() if e["route"] == "/api/contacts/bulk_upsert"]
        assert [e["status"] for e in posts] == ([405, 405, 200] if bulk_used else [405, 405, 405])
        assert posts[1]["epoch"] - posts[0]["epoch"] >= 5  # a pause between tries
        fact = LearnedFacts(pipeline.store, "crm").get(BULK_API)
        assert fact is not None
        if bulk_used:
            assert fact.value == "present"
            clock.advance(2)
            pipeline.deliver(now=clock)
            assert _record_calls(pipeline).count(("POST", "/api/contacts/upsert")) == 0
        else:
            assert fact.value == "refused" and fact.recheck_at is not None and fact.recheck_at > start
            assert _record_calls(pipeline).count(("POST", "/api/contacts/upsert")) == 12
        assert set(_statuses(pipeline).values()) == {MessageStatus.DELIVERED}
        assert len(pipeline.records("contacts")) == 12


def test_a_new_process_resumes_polling_the_job_rather_than_writing_again(
    pipeline: Pipeline, clock: FakeClock
) -> None:
    pipeline.send("/v1/batch", {"batch": [_identify(i) for i in range(12)]})
    pipeline.deliver(now=clock)  # this engine is gone now, as after a crash; the job is kept
    clock.advance(1)
    pipeline.deliver(now=clock)  # a new engine: the job is not due yet, and its lanes are held
    assert _record_calls(pipeline) == [("POST", "/api/contacts/bulk_upsert")]
    clock.advance(5)
    pipeline.deliver(now=clock)
    calls = _record_calls(pipeline)
    assert calls.count(("POST", "/api/contacts/bulk_upsert")) == 1
    assert ("POST", "/api/contacts/upsert") not in calls
    assert set(_statuses(pipeline).values()) == {MessageStatus.DELIVERED}


def _polls(pipeline: Pipeline) -> int:
    return len([c for c in _record_calls(pipeline) if c[1].startswith("/api/job_statuses/")])


def test_a_job_whose_poller_died_is_polled_again_once_the_configured_lease_ends(
    tmp_path: Path, clock: FakeClock
) -> None:
    """A worker that took a job's poll and died keeps others off it for ``delivery.lease_seconds``
    (as it would a lane), not longer: then another process polls it and settles it."""
    for pipeline in make_pipeline(tmp_path, "suite", clock=clock, app_token=False,
                                  destination={"bulk": "auto", "timeout": 5.0}, lease_seconds=15.0):
        pipeline.send("/v1/batch", {"batch": [_identify(i) for i in range(12)]})
        pipeline.deliver(now=clock)  # the job is sent and kept
        clock.advance(5)  # its first poll is due
        dying = DeliveryEngine.from_settings(pipeline.settings, pipeline.store, now=clock, sleep=clock.sleep)
        bulk = dying.runtimes[0].bulk
        assert bulk is not None and bulk._take_due() is not None  # taken, then its process died

        clock.advance(14)
        pipeline.deliver(now=clock)  # the poll's lease holds for 15 s
        assert _polls(pipeline) == 0
        assert set(_statuses(pipeline).values()) == {MessageStatus.PENDING}
        clock.advance(1)
        pipeline.deliver(now=clock)
        assert _polls(pipeline) == 1
        assert _record_calls(pipeline).count(("POST", "/api/contacts/bulk_upsert")) == 1
        assert set(_statuses(pipeline).values()) == {MessageStatus.DELIVERED}


def test_custom_fields_wait_for_merge_to_be_learned(tmp_path: Path, clock: FakeClock) -> None:
    seed = tmp_path / "seed.toml"
    seed.write_text('[[contacts]]\nname = "cf_plan"\ntype = "text"\n')
    for pipeline in _make(tmp_path, clock, sandbox={"seed_path": seed}):
        pipeline.send("/v1/batch", {"batch": [_identify(i, cf_plan="pro") for i in range(12)]})
        pipeline.deliver(now=clock)
        # Not learned yet: a partial custom_field in a bulk item could wipe a salesperson's
        # values, so these go as single calls (complete custom_field writes).
        assert ("POST", "/api/contacts/bulk_upsert") not in _record_calls(pipeline)
        assert set(_statuses(pipeline).values()) == {MessageStatus.DELIVERED}
        # Once the destination's answers showed that partial writes merge, they go in bulk.
        LearnedFacts(pipeline.store, "crm").learn(CUSTOM_FIELDS, Fact("merge", "test", clock.now))
        pipeline.send("/v1/batch", {"batch": [_identify(i, cf_plan="max") for i in range(100, 112)]})
        pipeline.deliver(now=clock)
        clock.advance(2)
        pipeline.deliver(now=clock)
        assert _record_calls(pipeline).count(("POST", "/api/contacts/bulk_upsert")) == 1
        assert set(_statuses(pipeline).values()) == {MessageStatus.DELIVERED}
        contacts = {c["email"]: c for c in pipeline.records("contacts")}
        assert contacts["person100@example.com"]["custom_field"] == {"cf_plan": "max"}
        assert contacts["person1@example.com"]["custom_field"] == {"cf_plan": "pro"}


def _linked(pipeline: Pipeline) -> dict[str, set[str]]:
    """Email -> names of the accounts the contact is linked to, read as a salesperson would see them."""
    state = pipeline.sandbox.state
    names = {a["id"]: a["name"] for a in pipeline.records("sales_accounts")}
    return {c["email"]: {names[link["id"]] for link in c.get("_sales_accounts", [])}
            for c in state.snapshot()["contacts"]}


def _with_company(i: int, company: str) -> dict[str, Any]:
    return _identify(i, company={"name": company})


def _run(pipeline: Pipeline, clock: FakeClock, passes: int = 8, step: float = 31.0) -> None:
    for _ in range(passes):
        pipeline.deliver(now=clock)
        clock.advance(step)


def test_companies_go_as_an_accounts_job_then_contacts_linked_in_bulk(
    pipeline: Pipeline, clock: FakeClock
) -> None:
    companies = [f"Company {n}" for n in range(5)]
    pipeline.send("/v1/batch", {"batch": [_with_company(i, companies[i % 5]) for i in range(20)]})
    _run(pipeline, clock)
    assert set(_statuses(pipeline).values()) == {MessageStatus.DELIVERED}
    linked = _linked(pipeline)
    assert len(linked) == 20
    assert all(linked[f"person{i}@example.com"] == {companies[i % 5]} for i in range(20))
    assert sorted(a["name"] for a in pipeline.records("sales_accounts")) == companies
    calls = [(m, r) for m, r in _calls(pipeline) if not r.startswith(("/api/settings", "/api/selector"))]
    # accounts job, its poll, their ids; contacts: the presearch, the job, its poll; one read-back
    assert calls.count(("POST", "/api/sales_accounts/bulk_upsert")) == 1
    assert calls.count(("POST", "/api/contacts/bulk_upsert")) == 1
    assert calls.count(("POST", "/api/filtered_search/sales_account")) == 1
    assert calls.count(("POST", "/api/filtered_search/contact")) == 2  # presearch, read-back's find
    assert len([c for c in calls if c[1].startswith("/api/contacts/") and c[0] == "GET"]) == 1
    assert not [c for c in calls if c[1] in ("/api/contacts/upsert", "/api/sales_accounts/upsert")]
    assert len(calls) == 8, calls
    fact = LearnedFacts(pipeline.store, "crm").get("bulk_links")
    assert fact is not None and fact.value == "kept"
    # The next backlog names known companies: only the contacts job (and its presearch).
    pipeline.send("/v1/batch", {"batch": [_with_company(i, companies[i % 5]) for i in range(100, 120)]})
    _run(pipeline, clock, passes=3)
    linked = _linked(pipeline)
    assert all(linked[f"person{i}@example.com"] == {companies[i % 5]} for i in range(100, 120))
    later = [(m, r) for m, r in _calls(pipeline) if not r.startswith(("/api/settings", "/api/selector"))][8:]
    assert sorted(r for _, r in later) == sorted(
        ["/api/filtered_search/contact", "/api/contacts/bulk_upsert", later[2][1]]), later


def test_an_existing_contact_keeps_a_salesperson_s_link(pipeline: Pipeline, clock: FakeClock) -> None:
    state = pipeline.sandbox.state
    from freshsales_destination.sandbox import companies as sandbox_companies
    from freshsales_destination.sandbox import people

    with state.lock:
        theirs = sandbox_companies.create_account(state, {"sales_account": {"name": "Salesperson Co"}})
        people.create_contact(state, {"contact": {"emails": ["person3@example.com"],
                                                  "sales_accounts": [{"id": theirs["id"], "is_primary": True}]}})
    pipeline.send("/v1/batch", {"batch": [_with_company(i, "Acme") for i in range(12)]})
    _run(pipeline, clock)
    assert set(_statuses(pipeline).values()) == {MessageStatus.DELIVERED}
    linked = _linked(pipeline)
    # The presearch found person3: its link was written as the union, by the single path.
    assert linked["person3@example.com"] == {"Salesperson Co", "Acme"}
    assert all(linked[f"person{i}@example.com"] == {"Acme"} for i in range(12) if i != 3)


def test_links_dropped_by_bulk_are_learned_and_written_singly(tmp_path: Path, clock: FakeClock) -> None:
    for pipeline in _make(tmp_path, clock, sandbox={"bulk_links": "dropped"}):
        pipeline.send("/v1/batch", {"batch": [_with_company(i, "Acme") for i in range(12)]})
        _run(pipeline, clock)
        assert set(_statuses(pipeline).values()) == {MessageStatus.DELIVERED}
        assert all(v == {"Acme"} for v in _linked(pipeline).values())
        fact = LearnedFacts(pipeline.store, "crm").get("bulk_links")
        assert fact is not None and fact.value == "dropped"
        before = _calls(pipeline).count(("POST", "/api/contacts/bulk_upsert"))
        pipeline.send("/v1/batch", {"batch": [_with_company(i, "Acme") for i in range(100, 112)]})
        _run(pipeline, clock, passes=3)
        assert _calls(pipeline).count(("POST", "/api/contacts/bulk_upsert")) == before
        assert all(v == {"Acme"} for v in _linked(pipeline).values())


def test_deals_go_as_a_deals_job_once_their_contacts_ids_are_found(pipeline: Pipeline, clock: FakeClock) -> None:
    batch = [_with_company(i, "Acme") for i in range(12)]
    for i in (2, 5):
        batch[i]["traits"]["deal"] = {"name": f"Deal {i}", "amount": 100 * i}
    pipeline.send("/v1/batch", {"batch": batch})
    _run(pipeline, clock)
    assert set(_statuses(pipeline).values()) == {MessageStatus.DELIVERED}
    contacts = {c["email"]: c for c in pipeline.records("contacts")}
    acme = pipeline.records("sales_accounts")[0]
    deals = {d["name"]: d for d in pipeline.records("deals")}
    assert set(deals) == {"Deal 2", "Deal 5"}
    assert deals["Deal 5"]["amount"] == "500.0" and deals["Deal 5"]["sales_account_id"] == acme["id"]
    assert deals["Deal 5"]["_contact_ids"] == [contacts["person5@example.com"]["id"]]
    calls = [(m, r) for m, r in _calls(pipeline) if not r.startswith(("/api/settings", "/api/selector"))]
    assert calls.count(("POST", "/api/deals/bulk_upsert")) == 1
    assert ("POST", "/api/deals/upsert") not in calls and ("POST", "/api/contacts/upsert") not in calls


def test_a_job_is_polled_once_when_the_previous_jobs_showed_how_long_jobs_take(
    tmp_path: Path, clock: FakeClock
) -> None:
    """The sandbox's jobs take 5 s. The first is polled at 2 s (running) and 6 s (done); the
    destination keeps "6 s", so the next job is polled once, 6 s after its POST."""
    for pipeline in _make(tmp_path, clock, sandbox={"bulk_job_seconds": 5}):
        def polls(pipeline: Pipeline = pipeline) -> int:
            return sum(1 for c in _record_calls(pipeline) if c[1].startswith("/api/job_statuses/"))

        for round_ in range(3):
            first = round_ * PEOPLE
            pipeline.send("/v1/batch", {"batch": [_identify(i) for i in range(first, first + PEOPLE)]})
            before = polls()
            pipeline.deliver(now=clock)
            for _ in range(10):
                clock.advance(2)
                pipeline.deliver(now=clock)
            assert polls() - before == (2 if round_ == 0 else 1), round_
            statuses = _statuses(pipeline)
            assert {statuses[f"id-{i}"] for i in range(first, first + PEOPLE)} == {MessageStatus.DELIVERED}
        kept = orjson.loads(pipeline.store.kv_get(NAMESPACE, "crm") or b"{}")
        assert kept["job_seconds"] == {"contact": 6.0}
        calls = _record_calls(pipeline)
        assert calls.count(("POST", "/api/contacts/bulk_upsert")) == 3


def test_deal_owners_of_several_contact_jobs_share_one_id_search_and_one_deals_job(
    pipeline: Pipeline, clock: FakeClock
) -> None:
    pipeline.send("/v1/batch", {"batch": [_with_company(i, "Acme") for i in range(12)]})
    _run(pipeline, clock)  # the account is known, and links are known to stick
    before = len(_calls(pipeline))
    for first in (100, 200):
        batch = [_with_company(i, "Acme") for i in range(first, first + 12)]
        for i in (2, 5):
            batch[i]["traits"]["deal"] = {"name": f"Deal {first + i}", "amount": first + i}
        pipeline.send("/v1/batch", {"batch": batch})
        pipeline.deliver(now=clock)
        clock.advance(3)
        pipeline.deliver(now=clock)  # the job is done: its deal owners wait for their ids
    _run(pipeline, clock)
    assert set(_statuses(pipeline).values()) == {MessageStatus.DELIVERED}
    contacts = {c["email"]: c for c in pipeline.records("contacts")}
    deals = {d["name"]: d for d in pipeline.records("deals")}
    assert set(deals) == {"Deal 102", "Deal 105", "Deal 202", "Deal 205"}
    for n in (102, 105, 202, 205):
        assert deals[f"Deal {n}"]["_contact_ids"] == [contacts[f"person{n}@example.com"]["id"]]
    calls = [(m, r) for m, r in _calls(pipeline)[before:] if not r.startswith(("/api/settings", "/api/selector"))]
    assert calls.count(("POST", "/api/contacts/bulk_upsert")) == 2
    # Two presearches (which contacts exist) and one id search for both jobs' deal owners.
    assert calls.count(("POST", "/api/filtered_search/contact")) == 3, calls
    assert calls.count(("POST", "/api/deals/bulk_upsert")) == 1
    assert ("POST", "/api/deals/upsert") not in calls and ("POST", "/api/contacts/upsert") not in calls


def _sent_accounts(pipeline: Pipeline) -> list[list[str]]:
    return [[item["name"] for item in job.items] for job in pipeline.sandbox.state.bulk.jobs.values()
            if job.entity == "sales_accounts"]


def test_accounts_already_in_a_pending_job_are_not_sent_again(pipeline: Pipeline, clock: FakeClock) -> None:
    """A second backlog naming the same companies while their accounts job is pending waits for
    it: one accounts job and one accounts search for them; the new lanes' company is still sent."""
    companies = [f"Company {n}" for n in range(5)]
    pipeline.send("/v1/batch", {"batch": [_with_company(i, companies[i % 5]) for i in range(20)]})
    pipeline.deliver(now=clock)
    assert _calls(pipeline).count(("POST", "/api/sales_accounts/bulk_upsert")) == 1
    pipeline.send("/v1/batch", {"batch": [_with_company(i, companies[i % 5]) for i in range(100, 120)]
                                + [_with_company(i, "Newco") for i in range(200, 212)]})
    pipeline.deliver(now=clock)
    assert sorted(_sent_accounts(pipeline), key=len) == [["Newco"], companies]  # Newco's job holds it alone
    _run(pipeline, clock, passes=12)
    assert set(_statuses(pipeline).values()) == {MessageStatus.DELIVERED}
    linked = _linked(pipeline)
    assert all(linked[f"person{i}@example.com"] == {companies[i % 5]} for i in [*range(20), *range(100, 120)])
    assert all(linked[f"person{i}@example.com"] == {"Newco"} for i in range(200, 212))
    assert sorted(a["name"] for a in pipeline.records("sales_accounts")) == [*companies, "Newco"]
    calls = _calls(pipeline)
    assert calls.count(("POST", "/api/sales_accounts/bulk_upsert")) == 2
    assert calls.count(("POST", "/api/filtered_search/sales_account")) == 2
    assert not [c for c in calls if c[1] in ("/api/contacts/upsert", "/api/sales_accounts/upsert")]


def test_the_accounts_of_a_large_backlog_go_in_full_jobs_each_written_once(
    pipeline: Pipeline, clock: FakeClock
) -> None:
    """250 people naming 150 companies (some shared): one look takes every lane, and the companies
    go as two accounts jobs of 100 and 50, then the contacts as three jobs of up to 100."""
    people = [_with_company(i, f"Company {i % 150:03d}") for i in range(250)]
    pipeline.send("/v1/batch", {"batch": people})
    pipeline.deliver(now=clock)
    assert sorted(len(names) for names in _sent_accounts(pipeline)) == [50, 100]
    assert len({name for names in _sent_accounts(pipeline) for name in names}) == 150
    _run(pipeline, clock, passes=12)
    assert set(_statuses(pipeline).values()) == {MessageStatus.DELIVERED}
    linked = _linked(pipeline)
    assert all(linked[f"person{i}@example.com"] == {f"Company {i % 150:03d}"} for i in range(250))
    calls = _calls(pipeline)
    assert calls.count(("POST", "/api/sales_accounts/bulk_upsert")) == 2
    assert calls.count(("POST", "/api/contacts/bulk_upsert")) == 3
    assert len(pipeline.records("sales_accounts")) == 150


def test_only_the_oldest_job_is_polled_until_jobs_show_how_long_they_take(
    tmp_path: Path, clock: FakeClock
) -> None:
    """Three contact jobs posted together before any job finished on the destination: the first
    is polled at 2 s (running) and 6 s (done); the other two are polled once each after that."""
    for pipeline in _make(tmp_path, clock, sandbox={"bulk_job_seconds": 5}):
        pipeline.send("/v1/batch", {"batch": [_identify(i) for i in range(250)]})
        pipeline.deliver(now=clock)
        assert _record_calls(pipeline).count(("POST", "/api/contacts/bulk_upsert")) == 3
        for _ in range(10):
            clock.advance(2)
            pipeline.deliver(now=clock)
        assert set(_statuses(pipeline).values()) == {MessageStatus.DELIVERED}
        polls = [c for c in _record_calls(pipeline) if c[1].startswith("/api/job_statuses/")]
        assert len(polls) == 4


def test_events_wait_while_the_record_backlog_needs_the_budget(tmp_path: Path, clock: FakeClock) -> None:
    """On a 40-calls-an-hour account: 30 people are known, then 600 new people arrive between the
    tracks of the 30 (whose lanes are free). Their jobs need about as many calls as the hour has
    left, so every record call is made before the first event call; then events follow."""
    for pipeline in _make(tmp_path, clock, destination={"rate_limit_per_hour": 40}):
        pipeline.send("/v1/batch", {"batch": [_identify(i) for i in range(1000, 1030)]})
        _run(pipeline, clock, passes=4)
        before = len(_calls(pipeline))
        tracks = [_track(i) for i in range(1000, 1030)]
        pipeline.send("/v1/batch", {"batch": tracks[:15] + [_identify(i) for i in range(600)] + tracks[15:]})
        _run(pipeline, clock, passes=70, step=61.0)
        statuses = _statuses(pipeline)
        assert {statuses[f"id-{i}"] for i in range(600)} == {MessageStatus.DELIVERED}
        calls = _calls(pipeline)[before:]
        record = [n for n, c in enumerate(calls) if c[1].startswith(("/api/contacts", "/api/job_statuses",
                                                                     "/api/filtered_search"))]
        events = [n for n, c in enumerate(calls) if c[1] == "/api/notes"]
        assert events and record, calls
        assert max(record) < min(events), calls
