from __future__ import annotations

import pytest

from tests.sandbox.conftest import Api, MakeApi


def _contact(api: Api, **attrs: object) -> dict:
    response = api.post("/contacts", {"contact": {"first_name": "Ada", **attrs}})
    assert response.status_code == 200, response.text
    return response.json()["contact"]


def test_create_returns_envelope_ids_timestamps_and_both_email_forms(api: Api) -> None:
    contact = _contact(api, last_name="Lovelace", emails="ada@example.com")
    assert isinstance(contact["id"], int) and len(str(contact["id"])) == 11
    assert contact["email"] == "ada@example.com"
    assert contact["emails"][0]["value"] == "ada@example.com" and contact["emails"][0]["is_primary"] is True
    assert contact["display_name"] == "Ada Lovelace"
    assert contact["created_at"].endswith("+00:00")
    assert contact["record_type_id"] == "71000000000"
    assert contact["open_deals_amount"] == "0.0"


@pytest.mark.parametrize(
    "attrs, expected",
    [
        ({"email": "a@x.io"}, ["a@x.io"]),
        ({"emails": "a@x.io"}, ["a@x.io"]),
        ({"emails": ["a@x.io", None, "b@x.io"]}, ["a@x.io", "b@x.io"]),
        ({"emails": [{"value": "b@x.io"}, {"value": "a@x.io", "is_primary": True}]}, ["a@x.io", "b@x.io"]),
        ({"email": "a@x.io", "emails": ["b@x.io"]}, ["a@x.io", "b@x.io"]),
    ],
)
def test_email_input_forms(api: Api, attrs: dict, expected: list[str]) -> None:
    contact = _contact(api, **attrs)
    assert [e["value"] for e in contact["emails"]] == expected
    assert contact["email"] == expected[0]


def test_unwrapped_body_is_accepted(api: Api) -> None:
    response = api.post("/contacts", {"first_name": "U", "email": "u@x.io"})
    assert response.status_code == 200
    assert response.json()["contact"]["email"] == "u@x.io"


def test_duplicate_email_is_rejected_case_insensitively(api: Api) -> None:
    _contact(api, email="dup@x.io")
    response = api.post("/contacts", {"contact": {"email": "DUP@x.io"}})
    assert response.status_code == 400
    assert response.json() == {"errors": {"code": 400, "message": ["Email has already been taken"]}}


def test_case_sensitive_option_allows_other_case(make_api: MakeApi) -> None:
    api = make_api(email_case_sensitive=True)
    _contact(api, email="dup@x.io")
    assert api.post("/contacts", {"contact": {"email": "DUP@x.io"}}).status_code == 200


def test_contact_needs_an_email_or_mobile(api: Api) -> None:
    response = api.post("/contacts", {"contact": {"first_name": "Nobody"}})
    assert response.status_code == 400
    assert response.json()["errors"]["code"] == 400
    assert _contact(api, mobile_number="+100")["mobile_number"] == "+100"


def test_view_update_delete_forget(api: Api) -> None:
    contact = _contact(api, email="v@x.io")
    cid = contact["id"]
    assert api.get(f"/contacts/{cid}").json()["contact"]["email"] == "v@x.io"
    updated = api.put(f"/contacts/{cid}", {"contact": {"job_title": "CTO"}}).json()["contact"]
    assert updated["job_title"] == "CTO" and updated["email"] == "v@x.io"
    deleted = api.delete(f"/contacts/{cid}")
    assert deleted.status_code == 200 and deleted.json() is True
    assert api.get(f"/contacts/{cid}").json() == {"error_code": 404}
    other = _contact(api, email="f@x.io")["id"]
    assert api.delete(f"/contacts/{other}/forget").status_code == 200
    assert api.delete(f"/contacts/{other}/forget").status_code == 404


def test_unknown_and_non_numeric_ids_are_404(api: Api) -> None:
    assert api.get("/contacts/70099999999").json() == {"error_code": 404}
    response = api.get("/contacts/abc")
    assert response.status_code == 404 and response.json() == {"error_code": 404}
    assert api.put("/contacts/70099999999", {"contact": {}}).status_code == 404


def test_clone_drops_unique_fields(api: Api) -> None:
    source = _contact(api, email="c@x.io", last_name="Orig", external_id="ext-1")
    clone = api.post(f"/contacts/{source['id']}/clone", {"contact": {"first_name": "Copy"}}).json()["contact"]
    assert clone["id"] != source["id"] and clone["emails"] == [] and clone["external_id"] is None
    assert clone["last_name"] == "Orig" and clone["first_name"] == "Copy"


@pytest.mark.parametrize("identifier", ["emails", "mobile_number", "external_id"])
def test_upsert_creates_then_updates(api: Api, identifier: str) -> None:
    value = {"emails": "up@x.io", "mobile_number": "+4912345", "external_id": "u-1"}[identifier]
    body = {"unique_identifier": {identifier: value}, "contact": {"first_name": "One"}}
    first = api.post("/contacts/upsert", body)
    assert first.status_code == 200
    body["contact"] = {"last_name": "Two"}
    second = api.post("/contacts/upsert", body).json()["contact"]
    assert second["id"] == first.json()["contact"]["id"]
    assert second["first_name"] == "One" and second["last_name"] == "Two"
    assert len(api.state.records["contacts"]) == 1


def test_upsert_keeps_first_written_email_case(api: Api) -> None:
    api.post("/contacts/upsert", {"unique_identifier": {"emails": "Mixed@X.io"}, "contact": {}})
    again = api.post("/contacts/upsert", {"unique_identifier": {"emails": "mixed@x.io"}, "contact": {"city": "Oslo"}})
    assert again.json()["contact"]["email"] == "Mixed@X.io"
    assert len(api.state.records["contacts"]) == 1


@pytest.mark.parametrize(
    "body",
    [
        {"contact": {"first_name": "x"}},
        {"unique_identifier": {"first_name": "x"}, "contact": {}},
        {"unique_identifier": {"emails": "a@x.io", "mobile_number": "1"}, "contact": {}},
        {"unique_identifier": {"emails": ""}, "contact": {}},
        {"unique_identifier": "a@x.io", "contact": {}},
        {"unique_identifier": {"emails": "a@x.io"}, "contact": "nope"},
    ],
)
def test_upsert_rejects_bad_identifiers(api: Api, body: dict) -> None:
    response = api.post("/contacts/upsert", body)
    assert response.status_code == 400
    assert response.json()["errors"]["code"] == 400
    assert isinstance(response.json()["errors"]["message"], list)


def test_sales_accounts_links_and_include(api: Api) -> None:
    a = api.post("/sales_accounts", {"sales_account": {"name": "Acme"}}).json()["sales_account"]
    b = api.post("/sales_accounts", {"sales_account": {"name": "Beta"}}).json()["sales_account"]
    contact = _contact(api, email="l@x.io", sales_accounts=[{"id": a["id"], "is_primary": True}])
    assert "sales_accounts" not in contact
    body = {"unique_identifier": {"emails": "l@x.io"},
            "contact": {"sales_accounts": [{"id": a["id"], "is_primary": False}, {"id": b["id"], "is_primary": True}]}}
    upserted = api.post("/contacts/upsert?include=sales_accounts", body).json()["contact"]
    assert [(s["name"], s["is_primary"]) for s in upserted["sales_accounts"]] == [("Acme", False), ("Beta", True)]
    viewed = api.get(f"/contacts/{contact['id']}?include=sales_accounts").json()["contact"]
    assert len(viewed["sales_accounts"]) == 2 and viewed["sales_accounts"][0]["partial"] is True


def test_sales_accounts_object_instead_of_list_is_rejected(api: Api) -> None:
    response = api.post("/contacts", {"contact": {"email": "o@x.io", "sales_accounts": {"id": 1}}})
    assert response.json() == {"errors": {"code": 400, "message": ["The type for sales_accounts is invalid."]}}
    missing = api.post("/contacts", {"contact": {"email": "o@x.io", "sales_accounts": [{"id": 123}]}})
    assert missing.status_code == 400


def test_invalid_selector_ids_are_rejected(api: Api) -> None:
    response = api.post("/contacts", {"contact": {"email": "s@x.io", "contact_status_id": 1}})
    assert response.json()["errors"]["message"] == ["Invalid contact status provided."]
    good = _contact(api, email="t@x.io", contact_status_id=72000000001, lifecycle_stage_id=71000000001)
    assert good["contact_status_id"] == 72000000001


def test_lookup_by_email_and_other_fields(api: Api) -> None:
    contact = _contact(api, email="Look@x.io", mobile_number="+1555", external_id="ext-9")
    found = api.get("/lookup", params={"q": "look@X.io", "f": "email", "entities": "contact"}).json()
    assert [c["id"] for c in found["contacts"]["contacts"]] == [contact["id"]]
    by_mobile = api.get("/lookup", params={"q": "+1555", "f": "mobile_number", "entities": "contact"}).json()
    assert len(by_mobile["contacts"]["contacts"]) == 1
    none = api.get("/lookup", params={"q": "no@x.io", "f": "email", "entities": "contact,sales_account"}).json()
    assert none == {"contacts": {"contacts": []}, "sales_accounts": {"sales_accounts": []}}
    assert api.get("/lookup", params={"q": "x"}).status_code == 400


def test_filtered_search_by_email(api: Api) -> None:
    first = _contact(api, email="one@x.io")
    _contact(api, email="two@x.io")
    body = {"filter_rule": [{"attribute": "contact_email.email", "operator": "is_in", "value": "ONE@x.io"}]}
    result = api.post("/filtered_search/contact", body).json()
    assert [c["id"] for c in result["contacts"]] == [first["id"]]
    assert result["contacts"][0]["partial"] is True and result["meta"]["total"] == 1
    both = {"filter_rule": [{"attribute": "contact_email.email", "operator": "is_in",
                             "value": ["one@x.io", "two@x.io"]}]}
    assert api.post("/filtered_search/contact", both).json()["meta"]["total"] == 2
    bad = {"filter_rule": [{"attribute": "contact_email.email", "operator": "nearly", "value": "x"}]}
    assert api.post("/filtered_search/contact", bad).status_code == 400


def test_full_text_search_returns_an_array(api: Api) -> None:
    _contact(api, email="finder@x.io", last_name="Finder")
    result = api.get("/search", params={"q": "finder", "include": "contact,user"}).json()
    assert isinstance(result, list) and result[0]["type"] == "contact"


def test_views_and_activities(api: Api) -> None:
    _contact(api, email="view@x.io")
    filters = api.get("/contacts/filters").json()["filters"]
    listing = api.get(f"/contacts/view/{filters[0]['id']}", params={"per_page": 10}).json()
    assert listing["meta"]["total"] == 1 and len(listing["contacts"]) == 1
    cid = listing["contacts"][0]["id"]
    assert api.get(f"/contacts/{cid}/activities").json()["activities"] == []
