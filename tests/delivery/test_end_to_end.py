"""From the ingest API through delivery into the sandbox: the destination page's payloads."""

from __future__ import annotations

from typing import Any

from tests.delivery.conftest import Pipeline

IDENTIFY_LEAD = {
    "userId": "97980cfea0067",
    "messageId": "doc-identify-1",
    "traits": {
        "firstName": "John",
        "lastName": "Doe",
        "email": "john.doe@example.com",
        "cfAlternateNumber": "98765432",
        "company": {"name": "Example.com"},
    },
}

IDENTIFY_CONTACT_DEAL = {
    "userId": "97980cfea0067",
    "messageId": "doc-identify-3",
    "traits": {
        "firstName": "John",
        "lastName": "Doe",
        "email": "john.doe@example.com",
        "fsContact": "true",
        "company": {"name": "Example.com"},
        "deal": {"name": "Sample Deal", "amount": 1234},
    },
}

TRACK = {
    "userId": "john.doe@example.com",
    "messageId": "doc-track-1",
    "event": "Email Bounced",
    "properties": {
        "emailId": "110688",
        "emailSubject": "Welcome to Example.com",
        "campaignId": "123",
        "campaignName": "New Customer Discount",
    },
}

PAGE = {
    "userId": "john.doe@example.com",
    "messageId": "doc-page-1",
    "name": "Page view",
    "properties": {
        "title": "Welcome to pricing page | Example.com",
        "url": "http://example.com/pricing",
    },
}


def _emails(record: dict[str, Any]) -> set[str]:
    found: set[str] = set()
    if isinstance(record.get("email"), str):
        found.add(record["email"])
    for item in record.get("emails") or []:
        found.add(item["value"] if isinstance(item, dict) else item)
    return found


def _status(pipeline: Pipeline, message_id: str) -> str:
    stored = pipeline.store.get_message("web", message_id)
    assert stored is not None
    return stored.status


def test_suite_identify_creates_contact_with_account(suite: Pipeline) -> None:
    suite.send("/v1/identify", IDENTIFY_LEAD)
    suite.deliver()
    assert _status(suite, "doc-identify-1") == "delivered"
    contacts = suite.records("contacts")
    assert len(contacts) == 1
    contact = contacts[0]
    assert contact["first_name"] == "John" and contact["last_name"] == "Doe"
    assert "john.doe@example.com" in _emails(contact)
    assert contact.get("external_id") == "97980cfea0067"
    assert (contact.get("custom_field") or {}).get("cf_alternate_number") == "98765432"
    accounts = suite.records("sales_accounts")
    assert [a["name"] for a in accounts] == ["Example.com"]


def test_suite_identify_with_deal_links_everything(suite: Pipeline) -> None:
    suite.send("/v1/identify", IDENTIFY_CONTACT_DEAL)
    suite.deliver()
    assert _status(suite, "doc-identify-3") == "delivered"
    (contact,) = suite.records("contacts")
    (account,) = suite.records("sales_accounts")
    (deal,) = suite.records("deals")
    assert deal["name"] == "Sample Deal"
    assert float(deal["amount"]) == 1234.0
    assert deal.get("sales_account_id") == account["id"]
    assert deal.get("_contact_ids") == [contact["id"]]
    assert deal["amount"] == "1234.0"  # Freshsales answers amounts as decimal strings
    assert [link["id"] for link in contact["_sales_accounts"]] == [account["id"]]


def test_classic_identify_creates_lead_and_fs_contact_creates_contact(classic: Pipeline) -> None:
    classic.send("/v1/identify", IDENTIFY_LEAD)
    classic.deliver()
    assert _status(classic, "doc-identify-1") == "delivered"
    (lead,) = classic.records("leads")
    assert lead["first_name"] == "John"
    assert "john.doe@example.com" in _emails(lead)
    # On a Classic lead the company rides on the lead itself.
    assert (lead.get("company") or {}).get("name") == "Example.com"
    assert (lead.get("custom_field") or {}).get("cf_alternate_number") == "98765432"
    other = dict(IDENTIFY_CONTACT_DEAL, userId="u-contact-2", messageId="doc-identify-4")
    other["traits"] = dict(other["traits"], email="jane@example.com", firstName="Jane")
    classic.send("/v1/identify", other)
    classic.deliver()
    assert _status(classic, "doc-identify-4") == "delivered"
    contacts = classic.records("contacts")
    (jane,) = [c for c in contacts if "jane@example.com" in _emails(c)]
    deals = classic.records("deals")
    assert [d["name"] for d in deals] == ["Sample Deal"]
    assert float(deals[0]["amount"]) == 1234.0
    assert deals[0].get("_contact_ids") == [jane["id"]]


def test_track_and_page_reach_the_tracking_api(suite: Pipeline) -> None:
    suite.send("/v1/identify", dict(IDENTIFY_LEAD, userId="john.doe@example.com"))
    suite.send("/v1/track", TRACK)
    suite.send("/v1/page", PAGE)
    suite.deliver()
    for mid in ("doc-identify-1", "doc-track-1", "doc-page-1"):
        assert _status(suite, mid) == "delivered"
    tracking = suite.sandbox.state.snapshot()["tracking"]
    kinds = sorted(str(entry.get("kind") or entry.get("type")) for entry in tracking)
    assert len(tracking) == 2, tracking
    assert any("event" in k for k in kinds) and any("page" in k for k in kinds)


def test_unchanged_identify_makes_no_call_and_replay_adds_nothing(suite: Pipeline) -> None:
    suite.send("/v1/identify", IDENTIFY_LEAD)
    suite.deliver()
    calls = suite.sandbox.api_call_count()
    again = dict(IDENTIFY_LEAD, messageId="doc-identify-1-again")
    suite.send("/v1/identify", again)
    suite.deliver()
    assert _status(suite, "doc-identify-1-again") == "delivered"
    assert suite.sandbox.api_call_count() == calls
    assert len(suite.records("contacts")) == 1


def test_pending_identifies_of_one_person_merge_into_one_write(suite: Pipeline) -> None:
    batch = []
    for index, title in enumerate(["Engineer", "Lead Engineer", "CTO"]):
        batch.append(
            {
                "type": "identify",
                "userId": "merge-user",
                "messageId": f"merge-{index}",
                "timestamp": f"2026-01-01T00:00:0{index}.000Z",
                "traits": {"email": "merge@example.com", "title": title},
            }
        )
    suite.send("/v1/batch", {"batch": batch})
    suite.deliver()
    (contact,) = suite.records("contacts")
    assert contact["job_title"] == "CTO"
    person_writes = [
        entry for entry in suite.sandbox.request_log()
        if "/contacts" in entry["path"] and entry["method"] != "GET"
    ]
    assert len(person_writes) == 1, person_writes


def test_a_new_person_with_a_company_costs_three_calls_link_included(suite: Pipeline) -> None:
    """The contact may exist with custom values and links a salesperson made: the upsert
    carries neither, its answer (``include=sales_accounts``) shows them, and one write by id
    adds the link and the custom field to what is there (docs/mapping.md)."""
    suite.send("/v1/identify", IDENTIFY_LEAD)
    suite.deliver()
    writes = [
        (entry["method"], entry["path"]) for entry in suite.sandbox.request_log()
        if entry["method"] != "GET"
    ]
    (contact,) = suite.records("contacts")
    assert sorted(writes) == [
        ("POST", "/crm/sales/api/contacts/upsert"),
        ("POST", "/crm/sales/api/sales_accounts/upsert"),
        ("PUT", f"/crm/sales/api/contacts/{contact['id']}"),
    ]
    (account,) = suite.records("sales_accounts")
    assert [link["id"] for link in contact["_sales_accounts"]] == [account["id"]]
