from __future__ import annotations

from tests.sandbox.conftest import Api, MakeApi


def test_leads_exist_only_in_classic(api: Api) -> None:
    response = api.post("/leads", {"lead": {"last_name": "X"}})
    assert response.status_code == 404 and response.json() == {"error_code": 404}
    assert api.get("/settings/leads/fields").status_code == 404


def test_create_view_update_delete(classic: Api) -> None:
    response = classic.post("/leads", {"lead": {"first_name": "Lea", "last_name": "D", "email": "lea@x.io",
                                                "company": {"name": "Acme"}, "deal": {"name": "D1", "amount": 12}}})
    assert response.status_code == 200
    lead = response.json()["lead"]
    assert lead["email"] == "lea@x.io" and lead["company"] == {"name": "Acme"} and lead["deal"]["amount"] == "12.0"
    assert classic.get(f"/leads/{lead['id']}").json()["lead"]["id"] == lead["id"]
    updated = classic.put(f"/leads/{lead['id']}", {"lead": {"job_title": "VP"}}).json()["lead"]
    assert updated["job_title"] == "VP"
    assert classic.delete(f"/leads/{lead['id']}").json() is True
    assert classic.get(f"/leads/{lead['id']}").status_code == 404


def test_last_name_is_required(classic: Api) -> None:
    response = classic.post("/leads", {"lead": {"email": "n@x.io"}})
    assert response.json() == {"errors": {"code": 400, "message": ["Last name can't be blank"]}}


def test_lookup_lead_by_email(classic: Api) -> None:
    lead = classic.post("/leads", {"lead": {"last_name": "L", "email": "find@x.io"}}).json()["lead"]
    found = classic.get("/lookup", params={"q": "FIND@x.io", "f": "email", "entities": "lead"}).json()
    assert [x["id"] for x in found["leads"]["leads"]] == [lead["id"]]
    search = classic.post("/filtered_search/lead",
                          {"filter_rule": [{"attribute": "lead_email.email", "operator": "is_in",
                                            "value": "find@x.io"}]}).json()
    assert search["meta"]["total"] == 1


def test_convert_creates_contact_account_and_deal(classic: Api) -> None:
    lead = classic.post("/leads", {"lead": {"last_name": "Conv", "email": "conv@x.io",
                                            "custom_field": {"cf_alternate_number": "55"},
                                            "company": {"name": "ConvCo"},
                                            "deal": {"name": "Big", "amount": "100.5"}}}).json()["lead"]
    result = classic.post(f"/leads/{lead['id']}/convert", {"lead": {"first_name": "Now"}})
    assert result.status_code == 200
    body = result.json()
    assert body["contact"]["email"] == "conv@x.io" and body["contact"]["first_name"] == "Now"
    assert body["contact"]["custom_field"] == {"cf_alternate_number": "55"}
    assert body["sales_account"]["name"] == "ConvCo"
    assert body["deal"]["amount"] == "100.5" and body["deal"]["contact_ids"] == [body["contact"]["id"]]
    assert body["deal"]["sales_account_id"] == body["sales_account"]["id"]
    assert classic.get(f"/leads/{lead['id']}").status_code == 404


def test_convert_unwrapped_and_keep_option(make_api: MakeApi) -> None:
    api = make_api(product="classic", convert_keeps_lead=True)
    lead = api.post("/leads", {"lead": {"last_name": "K", "email": "k@x.io"}}).json()["lead"]
    body = api.post(f"/leads/{lead['id']}/convert", {"first_name": "Unwrapped"}).json()
    assert body["contact"]["first_name"] == "Unwrapped" and body["deal"] is None
    assert api.get(f"/leads/{lead['id']}").json()["lead"]["converted_contact_id"] == body["contact"]["id"]


def test_lead_upsert_is_off_by_default_and_switchable(classic: Api, make_api: MakeApi) -> None:
    body = {"unique_identifier": {"emails": "up@x.io"}, "lead": {"last_name": "U"}}
    assert classic.post("/leads/upsert", body).status_code == 404
    api = make_api(product="classic", lead_upsert=True)
    first = api.post("/leads/upsert", body).json()["lead"]
    second = api.post("/leads/upsert", {**body, "lead": {"city": "Rome"}}).json()["lead"]
    assert first["id"] == second["id"] and second["city"] == "Rome"
