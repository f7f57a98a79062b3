"""What a salesperson entered in the CRM survives later identifies, under every reading of
reference §13.2: a partial ``custom_field`` write merged or replacing whole, and
``sales_accounts`` replacing a contact's links. End to end: ingest over HTTP, the SQLite store,
delivery, and the sandbox over HTTP playing each reading (``custom_fields`` switch)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from freshsales_destination.delivery.learned import CUSTOM_FIELDS, Fact, LearnedFacts
from tests.delivery.conftest import Pipeline, make_pipeline

SEED = """
[[contacts]]
name = "cf_plan"
type = "text"

[[contacts]]
name = "cf_seats"
type = "number"

[[contacts]]
name = "cf_sales_note"
type = "text"

[[leads]]
name = "cf_plan"
type = "text"

[[leads]]
name = "cf_sales_note"
type = "text"

[[sales_accounts]]
name = "cf_region"
type = "text"

[[sales_accounts]]
name = "cf_sales_note"
type = "text"

[[deals]]
name = "cf_source"
type = "text"

[[deals]]
name = "cf_sales_note"
type = "text"
"""

READINGS = ["merge", "replace"]


def _pipeline(
    tmp_path: Path, reading: str, product: str = "suite", sandbox_links: str = "replace",
    **kwargs: Any,
) -> Iterator[Pipeline]:
    """``reading``: the sandbox's ``custom_fields``; ``sandbox_links``: its ``account_links``."""
    seed = tmp_path / "seed.toml"
    seed.write_text(SEED)
    yield from make_pipeline(
        tmp_path, product,
        sandbox_options={"seed_path": seed, "custom_fields": reading, "account_links": sandbox_links},
        **kwargs,
    )


@pytest.fixture(params=READINGS)
def reading(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def suite_cf(tmp_path: Path, reading: str) -> Iterator[Pipeline]:
    yield from _pipeline(tmp_path, reading)


def identify(
    pipeline: Pipeline, mid: str, traits: dict[str, Any], user: str = "u-1"
) -> None:
    traits = {"email": "ada@example.com", **traits}
    pipeline.send("/v1/identify", {"userId": user, "messageId": mid, "traits": traits})
    pipeline.deliver()
    stored = pipeline.store.get_message("web", mid)
    assert stored is not None and stored.status == "delivered", stored


def the_contact(pipeline: Pipeline) -> dict[str, Any]:
    (contact,) = pipeline.records("contacts")
    return contact


def links(contact: dict[str, Any], pipeline: Pipeline) -> list[tuple[str, bool]]:
    names = {a["id"]: a["name"] for a in pipeline.records("sales_accounts")}
    return [(names[link["id"]], link["is_primary"]) for link in contact["_sales_accounts"]]


def learned(pipeline: Pipeline) -> str | None:
    fact = LearnedFacts(pipeline.store, "crm").get(CUSTOM_FIELDS)
    return None if fact is None else fact.value


def api_calls(pipeline: Pipeline, since: int = 0) -> list[tuple[str, str]]:
    """(method, path with ids as {id}) of the REST calls after log entry ``since``."""
    return [
        (e["method"], re.sub(r"/\d+", "/{id}", e["path"])) for e in pipeline.sandbox.request_log()
        if e["kind"] == "api" and e["seq"] > since and "/settings/" not in e["path"]
        and "/selector/" not in e["path"]
    ]


def last_seq(pipeline: Pipeline) -> int:
    log = pipeline.sandbox.request_log(include_admin=True)
    return int(log[-1]["seq"]) if log else 0


def create_account(pipeline: Pipeline, name: str) -> int:
    """An account a salesperson made in the CRM."""
    answer = httpx2.post(
        f"{pipeline.sandbox.base_url}/api/sales_accounts",
        json={"sales_account": {"name": name}}, headers=pipeline.sandbox.auth_headers,
    )
    assert answer.status_code == 200, answer.text
    return int(answer.json()["sales_account"]["id"])


# -- custom fields ----------------------------------------------------------------------------


def test_a_salespersons_custom_field_survives_later_identifies(
    suite_cf: Pipeline, reading: str
) -> None:
    """One custom trait per identify: nothing can be learned, every write is made complete."""
    identify(suite_cf, "m1", {"cfPlan": "Pro"})
    contact = the_contact(suite_cf)
    suite_cf.sandbox.salesperson_edit("contacts", contact["id"], custom_field={"cf_sales_note": "VIP"})
    identify(suite_cf, "m2", {"cfPlan": "Enterprise"})
    identify(suite_cf, "m3", {"cfSeats": 12})
    assert the_contact(suite_cf)["custom_field"] == {
        "cf_plan": "Enterprise", "cf_seats": 12, "cf_sales_note": "VIP",
    }
    assert learned(suite_cf) is None, "one field per write shows nothing about the account"


def test_the_account_behaviour_is_learned_and_nothing_is_lost_meanwhile(
    suite_cf: Pipeline, reading: str
) -> None:
    identify(suite_cf, "m1", {"cfPlan": "Pro", "cfSeats": 5})
    assert learned(suite_cf) == reading
    fact = LearnedFacts(suite_cf.store, "crm").get(CUSTOM_FIELDS)
    assert fact is not None and "cf_seats" in fact.evidence and "Pro" not in fact.evidence
    contact = the_contact(suite_cf)
    assert contact["custom_field"] == {"cf_plan": "Pro", "cf_seats": 5}
    suite_cf.sandbox.salesperson_edit("contacts", contact["id"], custom_field={"cf_sales_note": "VIP"})
    identify(suite_cf, "m2", {"cfPlan": "Enterprise", "cfSeats": 5})
    identify(suite_cf, "m3", {"cfSeats": 40})
    assert the_contact(suite_cf)["custom_field"] == {
        "cf_plan": "Enterprise", "cf_seats": 40, "cf_sales_note": "VIP",
    }


def test_the_call_cost_of_a_custom_field_write_under_each_reading(
    suite_cf: Pipeline, reading: str
) -> None:
    identify(suite_cf, "m1", {"cfPlan": "Pro", "cfSeats": 5})
    assert learned(suite_cf) == reading
    contact_path = "/crm/sales/api/contacts/{id}"
    for index, plan in enumerate(["Team", "Business", "Enterprise"]):
        since = last_seq(suite_cf)
        identify(suite_cf, f"later-{index}", {"cfPlan": plan})
        calls = api_calls(suite_cf, since)
        if reading == "merge":
            assert calls == [("PUT", contact_path)], "an account that merges pays no read"
        else:
            assert calls == [("GET", contact_path), ("PUT", contact_path)]
    # Nothing custom changed: no call at all, under both readings.
    since = last_seq(suite_cf)
    identify(suite_cf, "same", {"cfPlan": "Enterprise", "firstName": "Ada"})
    calls = api_calls(suite_cf, since)
    assert calls == [("PUT", contact_path)], calls
    assert the_contact(suite_cf)["custom_field"] == {"cf_plan": "Enterprise", "cf_seats": 5}


def test_a_contact_made_by_a_salesperson_keeps_its_custom_fields_and_links(
    suite_cf: Pipeline, reading: str
) -> None:
    """Never seen by this service: the upsert matches it by email."""
    globex = create_account(suite_cf, "Globex")
    made = httpx2.post(
        f"{suite_cf.sandbox.base_url}/api/contacts",
        json={"contact": {"email": "ada@example.com", "custom_field": {"cf_sales_note": "VIP"},
                          "sales_accounts": [{"id": globex, "is_primary": True}]}},
        headers=suite_cf.sandbox.auth_headers,
    )
    assert made.status_code == 200, made.text
    identify(suite_cf, "m1", {"cfPlan": "Pro", "company": {"name": "Acme"}})
    contact = the_contact(suite_cf)
    assert contact["custom_field"] == {"cf_plan": "Pro", "cf_sales_note": "VIP"}
    assert links(contact, suite_cf) == [("Globex", True), ("Acme", False)]


def test_an_accounts_custom_field_set_by_a_salesperson_survives(
    suite_cf: Pipeline, reading: str
) -> None:
    identify(suite_cf, "m1", {"company": {"name": "Acme", "cfRegion": "EU"}})
    (account,) = suite_cf.records("sales_accounts")
    suite_cf.sandbox.salesperson_edit(
        "sales_accounts", account["id"], custom_field={"cf_sales_note": "key account"}
    )
    identify(suite_cf, "m2", {"company": {"name": "Acme", "cfRegion": "US"}})
    (account,) = suite_cf.records("sales_accounts")
    assert account["custom_field"] == {"cf_region": "US", "cf_sales_note": "key account"}


def test_a_deals_custom_field_set_by_a_salesperson_survives(
    suite_cf: Pipeline, reading: str
) -> None:
    identify(suite_cf, "m1", {"deal": {"name": "Big deal", "amount": 100, "cfSource": "web"}})
    (deal,) = suite_cf.records("deals")
    suite_cf.sandbox.salesperson_edit("deals", deal["id"], custom_field={"cf_sales_note": "call Monday"})
    identify(suite_cf, "m2", {"deal": {"name": "Big deal", "amount": 100, "cfSource": "partner"}})
    (deal,) = suite_cf.records("deals")
    assert deal["custom_field"] == {"cf_source": "partner", "cf_sales_note": "call Monday"}


@pytest.mark.parametrize("reading", READINGS)
def test_a_classic_leads_custom_field_set_by_a_salesperson_survives(
    tmp_path: Path, reading: str
) -> None:
    for pipeline in _pipeline(tmp_path, reading, product="classic"):
        identify(pipeline, "m1", {"lastName": "Lovelace", "cfPlan": "Pro"})
        (lead,) = pipeline.records("leads")
        pipeline.sandbox.salesperson_edit("leads", lead["id"], custom_field={"cf_sales_note": "VIP"})
        identify(pipeline, "m2", {"lastName": "Lovelace", "cfPlan": "Enterprise"})
        (lead,) = pipeline.records("leads")
        assert lead["custom_field"] == {"cf_plan": "Enterprise", "cf_sales_note": "VIP"}


# -- account links ----------------------------------------------------------------------------


@pytest.mark.parametrize("link_reading", ["replace", "merge"])
def test_a_salespersons_link_and_primary_survive_a_new_company(
    tmp_path: Path, reading: str, link_reading: str
) -> None:
    for pipeline in _pipeline(tmp_path, reading, sandbox_links=link_reading):
        _salespersons_link_survives(pipeline)


def _salespersons_link_survives(suite_cf: Pipeline) -> None:
    identify(suite_cf, "m1", {"company": {"name": "Acme"}})
    contact = the_contact(suite_cf)
    assert links(contact, suite_cf) == [("Acme", True)]
    globex = create_account(suite_cf, "Globex")
    acme = contact["_sales_accounts"][0]["id"]
    suite_cf.sandbox.salesperson_edit("contacts", contact["id"], sales_accounts=[
        {"id": globex, "is_primary": True}, {"id": acme, "is_primary": False},
    ])
    identify(suite_cf, "m2", {"company": {"name": "Initech"}})
    assert links(the_contact(suite_cf), suite_cf) == [
        ("Globex", True), ("Acme", False), ("Initech", False),
    ]
    # A company the contact is already linked to (by the salesperson or by us) costs nothing.
    since = last_seq(suite_cf)
    identify(suite_cf, "m3", {"company": {"name": "Initech"}})
    assert api_calls(suite_cf, since) == []


def test_a_group_call_adds_its_account_to_the_salespersons_links(
    suite_cf: Pipeline, reading: str
) -> None:
    identify(suite_cf, "m1", {"firstName": "Ada"})
    contact = the_contact(suite_cf)
    globex = create_account(suite_cf, "Globex")
    suite_cf.sandbox.salesperson_edit(
        "contacts", contact["id"], sales_accounts=[{"id": globex, "is_primary": True}]
    )
    suite_cf.send("/v1/group", {"userId": "u-1", "messageId": "g1", "groupId": "g-1",
                                "traits": {"name": "Initech"}})
    suite_cf.deliver()
    assert links(the_contact(suite_cf), suite_cf) == [("Globex", True), ("Initech", False)]


def test_company_becomes_primary_moves_the_primary_and_keeps_the_links(tmp_path: Path) -> None:
    for pipeline in _pipeline(tmp_path, "replace", mapping={"company_becomes_primary": True}):
        identify(pipeline, "m1", {"firstName": "Ada"})
        contact = the_contact(pipeline)
        globex = create_account(pipeline, "Globex")
        pipeline.sandbox.salesperson_edit(
            "contacts", contact["id"], sales_accounts=[{"id": globex, "is_primary": True}]
        )
        identify(pipeline, "m2", {"company": {"name": "Initech"}})
        assert links(the_contact(pipeline), pipeline) == [("Globex", False), ("Initech", True)]


def test_a_wrongly_learned_merge_is_corrected_when_a_read_shows_wiped_fields(
    tmp_path: Path,
) -> None:
    """The store says "merge" but the account replaces: the next read (a new link) gives the
    answer something to be checked against; the wiped fields are written back and the
    destination goes back to sending complete custom objects."""
    for pipeline in _pipeline(tmp_path, "replace"):
        identify(pipeline, "m1", {"cfPlan": "Pro"})
        contact = the_contact(pipeline)
        pipeline.sandbox.salesperson_edit("contacts", contact["id"], custom_field={"cf_sales_note": "VIP"})
        LearnedFacts(pipeline.store, "crm").learn(
            CUSTOM_FIELDS, Fact("merge", "planted by the test", 1.0)
        )
        identify(pipeline, "m2", {"cfPlan": "Enterprise", "company": {"name": "Acme"}})
        assert the_contact(pipeline)["custom_field"] == {
            "cf_plan": "Enterprise", "cf_sales_note": "VIP",
        }
        assert learned(pipeline) == "replace"
        identify(pipeline, "m3", {"cfPlan": "Team"})
        assert the_contact(pipeline)["custom_field"] == {"cf_plan": "Team", "cf_sales_note": "VIP"}


def test_a_value_a_salesperson_changed_stays_while_ours_for_it_does_not_change(
    suite_cf: Pipeline, reading: str
) -> None:
    """Custom fields are compared one by one with what was last written: an identify that
    changes another field does not send ours again over the salesperson's."""
    identify(suite_cf, "m1", {"cfPlan": "Pro", "cfSeats": 5})
    contact = the_contact(suite_cf)
    suite_cf.sandbox.salesperson_edit("contacts", contact["id"], custom_field={"cf_plan": "Pro (custom deal)"})
    identify(suite_cf, "m2", {"cfPlan": "Pro", "cfSeats": 8})
    assert the_contact(suite_cf)["custom_field"] == {"cf_plan": "Pro (custom deal)", "cf_seats": 8}
    identify(suite_cf, "m3", {"cfPlan": "Enterprise", "cfSeats": 8})
    assert the_contact(suite_cf)["custom_field"] == {"cf_plan": "Enterprise", "cf_seats": 8}
