from __future__ import annotations

import pytest

from tests.sandbox.conftest import TOKEN, Api


def _track(api: Api, action: str, body: dict, prefix: str = "/crm/sales") -> object:
    payload = {"application_token": TOKEN, "sdk": "ruby", **body}
    return api.client.post(f"{prefix}/track/{action}", json=payload)


def test_classic_unknown_identifier_becomes_visitor_lead(classic: Api) -> None:
    response = _track(classic, "events", {"identifier": "new@x.io", "event": {"name": "Signed up"}}, prefix="")
    assert response.status_code == 200
    (lead,) = classic.state.records["leads"].values()
    assert lead["email"] == "new@x.io" and lead["last_name"] == "new"
    _track(classic, "page_views", {"identifier": "NEW@x.io", "page_view": {"url": "https://x.io/p"}}, prefix="")
    kinds = [(t["type"], t["targetable_type"], t["targetable_id"]) for t in classic.state.tracking]
    assert kinds == [("event", "Lead", lead["id"]), ("page_view", "Lead", lead["id"])]


def test_events_attach_to_existing_contact(api: Api) -> None:
    contact = api.post("/contacts", {"contact": {"email": "known@x.io"}}).json()["contact"]
    assert _track(api, "events", {"identifier": "known@x.io", "event": {"name": "Paid", "plan": "pro"}}).status_code == 200
    activities = api.get(f"/contacts/{contact['id']}/activities").json()["activities"]
    assert activities[0]["action_type"] == "event" and activities[0]["data"]["plan"] == "pro"
    assert api.get(f"/contacts/{contact['id']}").json()["contact"]["last_seen"] is not None


def test_visitors_create_and_update_with_labels_or_names(classic: Api) -> None:
    props = {"First name": "Vic", "Last name": "Tor", "Alternate number": "99", "company": {"Name": "VCo"}}
    assert _track(classic, "visitors", {"identifier": "v@x.io", "visitor": props}, prefix="").status_code == 200
    (lead,) = classic.state.records["leads"].values()
    assert lead["first_name"] == "Vic" and lead["custom_field"] == {"cf_alternate_number": "99"}
    assert lead["company"] == {"name": "VCo"}
    _track(classic, "visitors", {"identifier": "v@x.io", "visitor": {"job_title": "CEO"}}, prefix="")
    assert classic.state.records["leads"][lead["id"]]["job_title"] == "CEO"


def test_suite_unknown_identifier_creates_contact(api: Api) -> None:
    assert _track(api, "page_views", {"identifier": "s@x.io", "page_view": {"url": "/home"}}).status_code == 200
    (contact,) = api.state.records["contacts"].values()
    assert contact["email"] == "s@x.io"


@pytest.mark.parametrize(
    "action, body, status",
    [
        ("events", {"application_token": "wrong", "identifier": "a@x.io", "event": {"name": "e"}}, 401),
        ("events", {"application_token": "", "identifier": "a@x.io", "event": {"name": "e"}}, 400),
        ("events", {"sdk": "", "identifier": "a@x.io", "event": {"name": "e"}}, 400),
        ("events", {"sdk": "golang", "identifier": "a@x.io", "event": {"name": "e"}}, 400),
        ("events", {"identifier": "", "event": {"name": "e"}}, 400),
        ("events", {"identifier": "a@x.io", "event": {}}, 400),
        ("page_views", {"identifier": "a@x.io", "page_view": {}}, 400),
        ("visitors", {"identifier": "a@x.io", "visitor": {}}, 400),
        ("unknown", {"identifier": "a@x.io"}, 404),
    ],
)
def test_tracking_rejections(api: Api, action: str, body: dict, status: int) -> None:
    payload = {"application_token": TOKEN, "sdk": "ruby", **body}
    response = api.client.post(f"/track/{action}", json=payload)
    assert response.status_code == status
    if status == 400:
        assert response.json()["errors"]["code"] == 400
    assert api.state.tracking == []


def test_tracking_needs_no_api_key_but_is_logged_as_api_call(api: Api) -> None:
    response = api.client.post("/track/events", json={"application_token": TOKEN, "sdk": "php",
                                                       "identifier": "k@x.io", "event": {"name": "e"}})
    assert response.status_code == 200 and "x-ratelimit-remaining" in response.headers
    assert api.state.api_call_count() == 1 and api.state.requests[0].kind == "track"


def test_forget_erases_tracked_data(api: Api) -> None:
    _track(api, "events", {"identifier": "gdpr@x.io", "event": {"name": "e"}})
    (contact,) = api.state.records["contacts"].values()
    assert api.delete(f"/contacts/{contact['id']}/forget").status_code == 200
    assert api.state.tracking == []


@pytest.mark.parametrize("prefix, product", [("/crm/sales", "suite"), ("", "classic")])
def test_tracking_api_absent_answers_404_and_applies_nothing(make_api, prefix: str, product: str) -> None:
    api = make_api(product=product, tracking_api="absent")
    for action, body in (("events", {"event": {"name": "e"}}), ("page_views", {"page_view": {"url": "/p"}}),
                         ("visitors", {"visitor": {"first_name": "V"}})):
        response = _track(api, action, {"identifier": "a@x.io", **body}, prefix=prefix)
        assert response.status_code == 404 and response.json() == {"error_code": 404}
    assert api.state.tracking == [] and not api.state.records["contacts"]
    log = api.get("/_sandbox/requests").json()
    assert [r["kind"] for r in log["requests"] if not r["admin"]] == ["track"] * 3
    assert api.get("/contacts/filters").status_code == 200  # the REST API is still there


def test_tracking_api_html_answers_a_web_page(make_api) -> None:
    api = make_api(tracking_api="html")
    response = _track(api, "events", {"identifier": "a@x.io", "event": {"name": "e"}})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert response.text.lstrip().startswith("<!DOCTYPE html>")
    assert api.state.tracking == []
