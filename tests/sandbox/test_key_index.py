"""The sandbox finds contacts and leads by email, accounts and deals by name, through indexes
(``KeyIndex`` in sandbox/state.py) that must follow every change to a table: an address or a
name changed, a record deleted, a lead converted, a failed conversion, a reset, a restart from
the data file. Each case checks what the API answers and that every index still equals one
built afresh from its table; a random sequence of writes is compared with a scan of the tables."""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from freshsales_destination.sandbox import (
    FakeClock,
    SandboxOptions,
    SandboxState,
    companies,
    people,
)
from freshsales_destination.sandbox.errors import ApiError
from freshsales_destination.sandbox.state import KeyIndex
from tests.sandbox.conftest import Api, MakeApi


def _fresh(state: SandboxState, kind: str, by: str) -> dict[Hashable, frozenset[int]]:
    """What ``kind``'s index ``by`` would hold if built now from its table."""
    rebuilt = KeyIndex(state.indexes[kind][by].keys_of)
    for record in state.table(kind).values():
        rebuilt.put(record)
    return rebuilt.as_dict()


def _indexes_match_tables(state: SandboxState) -> None:
    assert {kind: set(indexes) for kind, indexes in state.indexes.items()} == {
        "contacts": {"email"}, "leads": {"email"}, "sales_accounts": {"name"}, "deals": {"name", "contact"}}
    for kind, indexes in state.indexes.items():
        for by, index in indexes.items():
            assert index.as_dict() == _fresh(state, kind, by), (kind, by)


def _emails_found(api: Api, email: str, entity: str = "contact") -> list[int]:
    plural = entity + "s"
    looked = api.get("/lookup", params={"q": email, "f": "email", "entities": entity}).json()
    searched = api.post(f"/filtered_search/{entity}", {"filter_rule": [
        {"attribute": f"{entity}_email.email", "operator": "is_in", "value": [email]}]}).json()
    by_lookup = [r["id"] for r in looked[plural][plural]]
    assert sorted(by_lookup) == sorted(r["id"] for r in searched[plural])
    return by_lookup


def _upsert(api: Api, email: str, **attrs: Any) -> tuple[int, dict[str, Any]]:
    answer = api.post("/contacts/upsert", {"unique_identifier": {"emails": email}, "contact": attrs})
    return answer.status_code, answer.json()


def test_a_changed_email_is_found_under_the_new_address_only(api: Api) -> None:
    first = api.post("/contacts", {"contact": {"emails": ["old@x.io", "keep@x.io"]}}).json()["contact"]
    changed = api.put(f"/contacts/{first['id']}", {"contact": {"emails": ["New@x.io", "keep@x.io"]}})
    assert changed.status_code == 200
    _indexes_match_tables(api.state)
    assert _emails_found(api, "old@x.io") == []
    assert _emails_found(api, "new@X.IO") == [first["id"]]
    assert _emails_found(api, "keep@x.io") == [first["id"]]
    # The freed address is free: a new contact may take it, an upsert on it creates one.
    status, body = _upsert(api, "OLD@x.io", first_name="Second")
    assert status == 200 and body["contact"]["id"] != first["id"]
    # The new address is taken.
    taken = api.post("/contacts", {"contact": {"emails": ["new@x.io"]}})
    assert taken.status_code == 400 and "Email has already been taken" in taken.text
    status, body = _upsert(api, "new@x.io", job_title="CTO")
    assert status == 200 and body["contact"]["id"] == first["id"] and body["contact"]["job_title"] == "CTO"
    _indexes_match_tables(api.state)


def test_an_upsert_that_adds_an_address_makes_it_taken(api: Api) -> None:
    status, body = _upsert(api, "a@x.io", emails=["a@x.io", "b@x.io"])
    assert status == 200
    assert _emails_found(api, "b@x.io") == [body["contact"]["id"]]
    assert api.post("/contacts", {"contact": {"email": "B@x.io"}}).status_code == 400
    _indexes_match_tables(api.state)


def test_a_deleted_contact_frees_its_addresses(api: Api) -> None:
    gone = api.post("/contacts", {"contact": {"emails": ["gone@x.io"]}}).json()["contact"]
    assert api.delete(f"/contacts/{gone['id']}").status_code == 200
    _indexes_match_tables(api.state)
    assert _emails_found(api, "gone@x.io") == []
    again = api.post("/contacts", {"contact": {"emails": ["gone@x.io"]}})
    assert again.status_code == 200, again.text
    assert _emails_found(api, "gone@x.io") == [again.json()["contact"]["id"]]
    forgotten = api.post("/contacts", {"contact": {"emails": ["forget@x.io"]}}).json()["contact"]
    assert api.delete(f"/contacts/{forgotten['id']}/forget").status_code == 200
    assert _emails_found(api, "forget@x.io") == []
    _indexes_match_tables(api.state)


def test_a_clone_takes_no_address_of_its_source(api: Api) -> None:
    source = api.post("/contacts", {"contact": {"emails": ["src@x.io"], "first_name": "S"}}).json()["contact"]
    clone = api.post(f"/contacts/{source['id']}/clone", {"contact": {"emails": ["copy@x.io"]}}).json()
    assert _emails_found(api, "src@x.io") == [source["id"]]
    assert _emails_found(api, "copy@x.io") == [clone["contact"]["id"]]
    _indexes_match_tables(api.state)


def test_a_converted_lead_is_found_as_a_contact_and_no_longer_as_a_lead(classic: Api) -> None:
    lead = classic.post("/leads", {"lead": {"last_name": "L", "emails": ["conv@x.io", "two@x.io"],
                                            "company": {"name": "LeadCo"}}}).json()["lead"]
    assert _emails_found(classic, "conv@x.io", "lead") == [lead["id"]]
    converted = classic.post(f"/leads/{lead['id']}/convert", {})
    assert converted.status_code == 200, converted.text
    contact = converted.json()["contact"]
    _indexes_match_tables(classic.state)
    assert _emails_found(classic, "conv@x.io", "lead") == []
    assert _emails_found(classic, "two@x.io") == [contact["id"]]
    # The lead's address is free among leads again, taken among contacts.
    assert classic.post("/leads", {"lead": {"last_name": "M", "email": "conv@x.io"}}).status_code == 200
    assert classic.post("/contacts", {"contact": {"email": "two@x.io"}}).status_code == 400
    account = classic.post("/filtered_search/sales_account", {"filter_rule": [
        {"attribute": "name", "operator": "is_in", "value": ["leadco"]}]}).json()["sales_accounts"]
    assert [a["id"] for a in account] == [converted.json()["sales_account"]["id"]]
    _indexes_match_tables(classic.state)


def test_a_lead_converted_into_an_existing_contact_adds_its_addresses(make_api: MakeApi) -> None:
    api = make_api(product="classic", convert_keeps_lead=True)
    contact = api.post("/contacts", {"contact": {"emails": ["same@x.io"]}}).json()["contact"]
    lead = api.post("/leads", {"lead": {"last_name": "L", "emails": ["same@x.io", "extra@x.io"]}}).json()["lead"]
    converted = api.post(f"/leads/{lead['id']}/convert", {}).json()["contact"]
    assert converted["id"] == contact["id"]
    assert _emails_found(api, "extra@x.io") == [contact["id"]]
    assert _emails_found(api, "extra@x.io", "lead") == [lead["id"]]  # the lead is kept
    _indexes_match_tables(api.state)


def test_a_failed_conversion_leaves_the_lead_found_as_it_now_reads(classic: Api) -> None:
    """A conversion changes the lead before it writes the account; when the account is refused
    the lead keeps the change (never saved). Lookups see the lead as it is in memory."""
    lead = classic.post("/leads", {"lead": {"last_name": "L", "email": "before@x.io",
                                            "company": {"name": "Bad", "number_of_employees": "many"}}})
    lead_id = lead.json()["lead"]["id"]
    failed = classic.post(f"/leads/{lead_id}/convert", {"lead": {"emails": ["after@x.io"]}})
    assert failed.status_code == 400, failed.text
    _indexes_match_tables(classic.state)
    assert classic.state.get("leads", lead_id)["email"] == "after@x.io"
    assert _emails_found(classic, "after@x.io", "lead") == [lead_id]
    assert _emails_found(classic, "before@x.io", "lead") == []


def test_a_reset_forgets_every_key(api: Api) -> None:
    """Ids start again after a reset: a stale index would find the new record under an old key."""
    old = api.post("/contacts", {"contact": {"emails": ["before@x.io"]}}).json()["contact"]
    api.post("/sales_accounts", {"sales_account": {"name": "Before"}})
    assert api.post("/_sandbox/reset", {}).status_code == 200
    _indexes_match_tables(api.state)
    new = api.post("/contacts", {"contact": {"emails": ["after@x.io"]}}).json()["contact"]
    assert new["id"] == old["id"]  # the same id, another record
    assert _emails_found(api, "before@x.io") == []
    status, body = _upsert(api, "before@x.io")
    assert status == 200 and body["contact"]["id"] != new["id"]
    assert api.post("/sales_accounts", {"sales_account": {"name": "before"}}).status_code == 200
    _indexes_match_tables(api.state)


def test_a_renamed_account_is_found_under_its_new_name(api: Api) -> None:
    acme = api.post("/sales_accounts", {"sales_account": {"name": "Acme"}}).json()["sales_account"]
    assert api.put(f"/sales_accounts/{acme['id']}", {"sales_account": {"name": " Beta "}}).status_code == 200
    _indexes_match_tables(api.state)
    taken = api.post("/sales_accounts", {"sales_account": {"name": "BETA"}})
    assert taken.status_code == 400 and "Name has already been taken" in taken.text
    upserted = api.post("/sales_accounts/upsert", {"unique_identifier": {"name": "acme"},
                                                  "sales_account": {}}).json()["sales_account"]
    assert upserted["id"] != acme["id"]
    found = api.post("/filtered_search/sales_account", {"filter_rule": [
        {"attribute": "name", "operator": "is_in", "value": ["ACME", "beta"]}]}).json()["sales_accounts"]
    assert sorted(a["id"] for a in found) == sorted([acme["id"], upserted["id"]])
    assert api.delete(f"/sales_accounts/{acme['id']}").status_code == 200
    assert api.post("/sales_accounts", {"sales_account": {"name": "Beta"}}).status_code == 200
    _indexes_match_tables(api.state)


def test_deals_by_name_oldest_first(api: Api) -> None:
    first = api.post("/deals", {"deal": {"name": "Deal", "amount": 1}}).json()["deal"]
    second = api.post("/deals", {"deal": {"name": "deal", "amount": 2}}).json()["deal"]  # names may repeat
    upserted = api.post("/deals/upsert", {"unique_identifier": {"name": "DEAL"}, "deal": {"amount": 3}}).json()
    assert upserted["deal"]["id"] == first["id"] and first["id"] < second["id"]
    assert api.put(f"/deals/{first['id']}", {"deal": {"name": "Other"}}).status_code == 200
    upserted = api.post("/deals/upsert", {"unique_identifier": {"name": "deal"}, "deal": {"amount": 4}}).json()
    assert upserted["deal"]["id"] == second["id"]
    _indexes_match_tables(api.state)


def test_a_contact_shows_the_deals_linked_to_it_now(api: Api) -> None:
    one = api.post("/contacts", {"contact": {"email": "one@x.io"}}).json()["contact"]
    two = api.post("/contacts", {"contact": {"email": "two@x.io"}}).json()["contact"]

    def open_deals(contact: dict[str, Any]) -> tuple[int, str]:
        shown = api.get(f"/contacts/{contact['id']}").json()["contact"]
        return shown["open_deals_count"], shown["open_deals_amount"]

    both = api.post("/deals", {"deal": {"name": "Both", "amount": "10.5",
                                        "contacts_added_list": [one["id"], two["id"]]}}).json()["deal"]
    api.post("/deals", {"deal": {"name": "Only one", "amount": 2, "contact_ids": [one["id"]]}})
    assert open_deals(one) == (2, "12.5") and open_deals(two) == (1, "10.5")
    moved = api.put(f"/deals/{both['id']}", {"deal": {"contacts_removed_list": [one["id"]]}})
    assert moved.status_code == 200
    assert open_deals(one) == (1, "2.0") and open_deals(two) == (1, "10.5")
    _indexes_match_tables(api.state)
    assert api.delete(f"/contacts/{two['id']}").status_code == 200
    assert api.get(f"/deals/{both['id']}").json()["deal"]["contact_ids"] == []
    assert api.delete(f"/deals/{both['id']}").status_code == 200
    assert open_deals(one) == (1, "2.0")
    _indexes_match_tables(api.state)


def test_a_bulk_job_sees_the_records_its_earlier_items_wrote(make_api: MakeApi) -> None:
    api = make_api(bulk_job_seconds=0)
    items = [{"emails": "twice@x.io", "data": {"first_name": "One"}},
             {"emails": "TWICE@x.io", "data": {"job_title": "Two"}},
             {"emails": "other@x.io", "data": {"emails": ["other@x.io", "twice@x.io"]}}]
    answer = api.post("/contacts/bulk_upsert", {"contacts": items})
    job = answer.json()["job_status_url"].rsplit("/", 1)[1]
    status = api.get(f"/job_statuses/{job}").json()
    assert status["status"] == "SUCCESS" and '"succeeded":2' in status["data"] and '"failed":1' in status["data"]
    (found,) = _emails_found(api, "twice@x.io")
    record = api.state.get("contacts", found)
    assert record["first_name"] == "One" and record["job_title"] == "Two"
    assert _emails_found(api, "other@x.io") == []
    _indexes_match_tables(api.state)


def test_a_restart_from_the_data_file_indexes_what_it_loads(tmp_path: Path) -> None:
    options = SandboxOptions(data_path=tmp_path / "sandbox.db")
    state = SandboxState.create(options, FakeClock())
    contact = people.create_contact(state, {"contact": {"emails": ["kept@x.io"]}})
    companies.create_account(state, {"sales_account": {"name": "Kept"}})
    assert state.store is not None
    state.store.close()
    again = SandboxState.create(options, FakeClock())
    _indexes_match_tables(again)
    assert [r["id"] for r in people.find_by_email(again, "contacts", "KEPT@x.io")] == [contact["id"]]
    record, created = people.upsert_contact(again, {"unique_identifier": {"emails": "kept@x.io"},
                                                    "contact": {"job_title": "Back"}})
    assert not created and record["id"] == contact["id"]
    assert companies.accounts_named(again, "kept")[0]["name"] == "Kept"


def test_case_sensitive_addresses_are_distinct_keys(make_api: MakeApi) -> None:
    api = make_api(email_case_sensitive=True)
    lower = api.post("/contacts", {"contact": {"email": "case@x.io"}}).json()["contact"]
    upper = api.post("/contacts", {"contact": {"email": "CASE@x.io"}}).json()["contact"]
    assert _emails_found(api, "case@x.io") == [lower["id"]]
    assert _emails_found(api, "CASE@x.io") == [upper["id"]]
    _indexes_match_tables(api.state)


# Random writes, compared with a scan of the tables --------------------------------------------

POOL = ["a@x.io", "A@x.io", "b@x.io", " c@x.io", "d@x.io"]
NAMES = ["Acme", "acme ", "Beta", "Gamma"]

email_lists = st.lists(st.sampled_from(POOL), min_size=1, max_size=3)
step = st.one_of(
    st.tuples(st.just("create_contact"), email_lists),
    st.tuples(st.just("update_contact"), st.integers(0, 9), email_lists),
    st.tuples(st.just("upsert_contact"), st.sampled_from(POOL), email_lists),
    st.tuples(st.just("delete_contact"), st.integers(0, 9)),
    st.tuples(st.just("clone_contact"), st.integers(0, 9), email_lists),
    st.tuples(st.just("create_lead"), email_lists),
    st.tuples(st.just("update_lead"), st.integers(0, 9), email_lists),
    st.tuples(st.just("convert_lead"), st.integers(0, 9), email_lists),
    st.tuples(st.just("upsert_account"), st.sampled_from(NAMES)),
    st.tuples(st.just("rename_account"), st.integers(0, 9), st.sampled_from(NAMES)),
    st.tuples(st.just("delete_account"), st.integers(0, 9)),
    st.tuples(st.just("upsert_deal"), st.sampled_from(NAMES)),
    st.tuples(st.just("create_deal"), st.sampled_from(NAMES)),
    st.tuples(st.just("link_deal"), st.integers(0, 9), st.integers(0, 9), st.booleans()),
    st.tuples(st.just("delete_deal"), st.integers(0, 9)),
    st.tuples(st.just("reset")),
)


def _pick(state: SandboxState, kind: str, index: int) -> int | None:
    ids = sorted(state.table(kind))
    return ids[index % len(ids)] if ids else None


def _apply(state: SandboxState, action: tuple[Any, ...]) -> None:
    name = action[0]
    nth = action[1] if len(action) > 1 and isinstance(action[1], int) else 0
    contact, lead = _pick(state, "contacts", nth), _pick(state, "leads", nth)
    account = _pick(state, "sales_accounts", nth)
    if name == "create_contact":
        people.create_contact(state, {"contact": {"emails": action[1]}})
    elif name == "update_contact" and contact is not None:
        people.update_contact(state, contact, {"contact": {"emails": action[2]}})
    elif name == "upsert_contact":
        people.upsert_contact(state, {"unique_identifier": {"emails": action[1]}, "contact": {"emails": action[2]}})
    elif name == "delete_contact" and contact is not None:
        people.delete_contact(state, contact)
    elif name == "clone_contact" and contact is not None:
        people.clone_contact(state, contact, {"contact": {"emails": action[2]}})
    elif name == "create_lead":
        people.create_lead(state, {"lead": {"last_name": "L", "emails": action[1]}})
    elif name == "update_lead" and lead is not None:
        people.update_lead(state, lead, {"lead": {"emails": action[2]}})
    elif name == "convert_lead" and lead is not None:
        people.convert_lead(state, lead, {"lead": {"emails": action[2]}})
    elif name == "upsert_account":
        companies.upsert_account(state, {"unique_identifier": {"name": action[1]}, "sales_account": {}})
    elif name == "rename_account" and account is not None:
        companies.update_account(state, account, {"sales_account": {"name": action[2]}})
    elif name == "delete_account" and account is not None:
        companies.delete_account(state, account)
    elif name == "upsert_deal":
        companies.upsert_deal(state, {"unique_identifier": {"name": action[1]}, "deal": {"amount": 1}})
    elif name == "create_deal":
        companies.create_deal(state, {"deal": {"name": action[1], "amount": 1}})
    elif name == "link_deal" and contact is not None and (deal := _pick(state, "deals", action[2])) is not None:
        change = "contacts_added_list" if action[3] else "contacts_removed_list"
        companies.update_deal(state, deal, {"deal": {change: [contact]}})
    elif name == "delete_deal" and (deal := _pick(state, "deals", nth)) is not None:
        state.delete("deals", deal)
    elif name == "reset":
        state.reset()


def _scan_emails(state: SandboxState, kind: str, email: str) -> list[dict[str, Any]]:
    key = people.email_key(state, email)
    return [r for r in state.table(kind).values()
            if key in {people.email_key(state, v) for v in people.record_emails(r)}]


def _scan_names(state: SandboxState, kind: str, name: str) -> list[dict[str, Any]]:
    key = name.strip().lower()
    return sorted((r for r in state.table(kind).values() if str(r.get("name") or "").strip().lower() == key),
                  key=lambda r: r["id"])


@settings(max_examples=60, deadline=None)
@given(st.lists(step, max_size=30), st.booleans())
def test_lookups_agree_with_a_scan_after_any_writes(steps: list[tuple[Any, ...]], case_sensitive: bool) -> None:
    state = SandboxState.create(SandboxOptions(product="classic", email_case_sensitive=case_sensitive),
                                FakeClock())
    for action in steps:
        try:
            _apply(state, action)
        except ApiError:
            pass  # refused writes (a taken address or name) must leave the indexes right too
        for kind in ("contacts", "leads"):
            for email in POOL:
                assert people.find_by_email(state, kind, email) == _scan_emails(state, kind, email)
        for name in NAMES:
            assert companies.accounts_named(state, name) == _scan_names(state, "sales_accounts", name)
            assert companies._named(state, "deals", name) == _scan_names(state, "deals", name)
        for contact in list(state.table("contacts"))[:5]:
            assert state.deals_of(contact) == [d for d in state.table("deals").values()
                                               if contact in d["_contact_ids"]]
    _indexes_match_tables(state)
