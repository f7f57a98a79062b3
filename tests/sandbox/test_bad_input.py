from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.sandbox.conftest import AUTH, Api, MakeApi

ROUTES = ["/contacts", "/contacts/upsert", "/sales_accounts", "/sales_accounts/upsert", "/deals", "/deals/upsert",
          "/sales_activities", "/notes", "/filtered_search/contact"]


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b'"text"', b"\xff\xfe", b"null"])
def test_malformed_json_gets_the_error_shape(api: Api, path: str, raw: bytes) -> None:
    response = api.client.post("/crm/sales/api" + path, content=raw,
                               headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["errors"]["code"] == 400


def test_huge_body_is_413(make_api: MakeApi) -> None:
    api = make_api(max_body_bytes=1000)
    response = api.client.post("/api/contacts", content=b"{" + b" " * 5000 + b"}", headers=AUTH)
    assert response.status_code == 413
    assert response.json() == {"errors": {"code": 413, "message": ["Request entity too large"]}}

    def chunks():  # no content-length: streamed
        for _ in range(10):
            yield b" " * 200

    streamed = api.client.post("/api/contacts", content=chunks(), headers=AUTH)
    assert streamed.status_code == 413


@pytest.mark.parametrize(
    "attrs",
    [
        {"email": 5}, {"emails": {"value": "a@x.io"}}, {"emails": [5]}, {"email": "not-an-email"},
        {"email": "a@x.io", "first_name": {"x": 1}}, {"email": "a@x.io", "owner_id": "me"},
        {"email": "a@x.io", "tags": "a,b", "do_not_disturb": "perhaps"}, {"email": "a@x.io", "custom_field": []},
    ],
)
def test_wrong_types_get_400(api: Api, attrs: dict) -> None:
    response = api.post("/contacts", {"contact": attrs})
    assert response.status_code == 400, response.text
    assert response.json()["errors"]["code"] == 400


def test_unknown_routes_and_methods(api: Api) -> None:
    assert api.get("/widgets").json() == {"error_code": 404}
    assert api.client.get("/elsewhere").json() == {"error_code": 404}
    response = api.call("PATCH", "/contacts")
    assert response.status_code == 405 and response.json() == {"error_code": 405}


def test_internal_errors_become_500_in_the_error_shape(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    from freshsales_destination.sandbox import people

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(people, "create_contact", boom)
    response = api.post("/contacts", {"contact": {"email": "a@x.io"}})
    assert response.status_code == 500
    assert response.json() == {"errors": {"code": 500, "message": ["Internal server error"]}}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
attr_names = st.sampled_from(["email", "emails", "first_name", "owner_id", "sales_accounts", "custom_field",
                              "amount", "name", "contacts_added_list", "unique_identifier", "tags",
                              "sales_account_id", "expected_close", "targetable_id", "title", "filter_rule"])


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(ROUTES), body=st.dictionaries(attr_names, json_values, max_size=5),
       wrap=st.booleans())
def test_fuzzed_bodies_never_crash(api: Api, path: str, body: dict, wrap: bool) -> None:
    key = {"contacts": "contact", "sales_accounts": "sales_account", "deals": "deal",
           "sales_activities": "sales_activity", "notes": "note"}.get(path.strip("/").split("/")[0], "x")
    payload = {key: body, "unique_identifier": body.get("unique_identifier")} if wrap else body
    response = api.post(path, payload)
    assert response.status_code in (200, 400), response.text
    if response.status_code == 400:
        assert isinstance(response.json()["errors"]["message"], list)


def test_no_redirect_is_built_from_the_host_header() -> None:
    """A trailing slash is not found, never a redirect to a URL taken from ``Host``."""
    from starlette.testclient import TestClient

    from freshsales_destination.sandbox import SandboxOptions, build_app

    with TestClient(build_app(SandboxOptions(api_key="k")), base_url="http://evil.example") as client:
        for path in ("/crm/sales/api/contacts/", "/api/contacts/", "/_sandbox/state/",
                     "/crm/sales/_sandbox/state/"):
            response = client.get(path, headers={"Authorization": "Token token=k"},
                                  follow_redirects=False)
            assert response.status_code == 404, (path, response.status_code)
            assert "location" not in response.headers
