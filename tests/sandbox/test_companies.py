from __future__ import annotations

import pytest

from tests.sandbox.conftest import Api


def test_account_create_view_update_delete(api: Api) -> None:
    created = api.post("/sales_accounts", {"sales_account": {"name": "Acme", "annual_revenue": 1000}})
    assert created.status_code == 200
    account = created.json()["sales_account"]
    assert account["annual_revenue"] == "1000.0"
    assert api.get(f"/sales_accounts/{account['id']}").json()["sales_account"]["name"] == "Acme"
    updated = api.put(f"/sales_accounts/{account['id']}", {"sales_account": {"website": "acme.io"}})
    assert updated.json()["sales_account"]["website"] == "acme.io"
    assert api.delete(f"/sales_accounts/{account['id']}").json() is True
    assert api.get(f"/sales_accounts/{account['id']}").status_code == 404


def test_account_names_are_unique(api: Api) -> None:
    api.post("/sales_accounts", {"sales_account": {"name": "Acme"}})
    other = api.post("/sales_accounts", {"sales_account": {"name": "Other"}}).json()["sales_account"]
    for response in (
        api.post("/sales_accounts", {"sales_account": {"name": "acme"}}),
        api.put(f"/sales_accounts/{other['id']}", {"sales_account": {"name": "ACME"}}),
    ):
        assert response.json() == {"errors": {"code": 400, "message": ["Name has already been taken"]}}
    assert api.post("/sales_accounts", {"sales_account": {}}).json()["errors"]["message"] == ["Name can't be blank"]


def test_account_upsert_by_name(api: Api) -> None:
    body = {"unique_identifier": {"name": "Up Co"}, "sales_account": {"city": "Lyon"}}
    first = api.post("/sales_accounts/upsert", body).json()["sales_account"]
    second = api.post("/sales_accounts/upsert", {**body, "sales_account": {"phone": "1"}}).json()["sales_account"]
    assert first["id"] == second["id"] and second["city"] == "Lyon" and second["name"] == "Up Co"


def test_deal_create_links_and_decimal_amounts(api: Api) -> None:
    contact = api.post("/contacts", {"contact": {"email": "d@x.io"}}).json()["contact"]
    account = api.post("/sales_accounts", {"sales_account": {"name": "DealCo"}}).json()["sales_account"]
    response = api.post("/deals?include=contacts,sales_account", {"deal": {
        "name": "Big", "amount": 5600, "contacts_added_list": [contact["id"]], "sales_account_id": account["id"],
        "expected_close": "2025-01-31"}})
    assert response.status_code == 200
    deal = response.json()["deal"]
    assert deal["amount"] == "5600.0" and deal["base_currency_amount"] == "5600.0"
    assert deal["contact_ids"] == [contact["id"]] and deal["contacts"][0]["id"] == contact["id"]
    assert deal["sales_account"]["name"] == "DealCo" and deal["expected_close"] == "2025-01-31"
    assert deal["deal_pipeline_id"] and deal["deal_stage_id"]
    viewed = api.get(f"/deals/{deal['id']}").json()["deal"]
    assert viewed["amount"] == "5600.0"
    again = api.put(f"/deals/{deal['id']}", {"deal": {"amount": "12.50", "contacts_removed_list": [contact["id"]]}})
    assert again.json()["deal"]["amount"] == "12.5" and again.json()["deal"]["contact_ids"] == []
    assert api.delete(f"/deals/{deal['id']}").json() is True


@pytest.mark.parametrize(
    "deal, message",
    [
        ({"amount": 1}, "Name can't be blank"),
        ({"name": "x"}, "Amount can't be blank"),
        ({"name": "x", "amount": "lots"}, "Amount is not a number"),
        ({"name": "x", "amount": 1, "contacts_added_list": [1]}, "Contact 1 does not exist"),
        ({"name": "x", "amount": 1, "sales_account_id": 1}, "Sales account 1 does not exist"),
        ({"name": "x", "amount": 1, "expected_close": "soon"}, "Expected close is not a valid date"),
    ],
)
def test_deal_validation(api: Api, deal: dict, message: str) -> None:
    response = api.post("/deals", {"deal": deal})
    assert response.status_code == 400
    assert response.json() == {"errors": {"code": 400, "message": [message]}}


def test_deal_upsert_by_name_and_contact_ids(api: Api) -> None:
    contact = api.post("/contacts", {"contact": {"email": "u@x.io"}}).json()["contact"]
    body = {"unique_identifier": {"name": "Renewal"}, "deal": {"amount": 10, "contact_ids": [contact["id"]]}}
    first = api.post("/deals/upsert", body).json()["deal"]
    second = api.post("/deals/upsert", {"unique_identifier": {"name": "Renewal"}, "deal": {"probability": 50}})
    assert second.json()["deal"]["id"] == first["id"] and first["contact_ids"] == [contact["id"]]
    assert api.post("/deals/upsert", {"unique_identifier": {"name": "New"}, "deal": {}}).status_code == 400
    listing = api.get("/contacts/" + str(contact["id"])).json()["contact"]
    assert listing["open_deals_amount"] == "10.0" and listing["open_deals_count"] == 1


def test_deal_links_account_by_name(api: Api) -> None:
    deal = api.post("/deals", {"deal": {"name": "N", "amount": 1, "sales_account": {"name": "ByName"}}}).json()
    account_id = deal["deal"]["sales_account_id"]
    assert api.get(f"/sales_accounts/{account_id}").json()["sales_account"]["name"] == "ByName"
