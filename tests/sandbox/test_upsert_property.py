from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from freshsales_destination.sandbox import SandboxOptions, build_app
from tests.sandbox.conftest import AUTH

EMAILS = ["a@x.io", "A@X.io", "b@x.io", "c@x.io", " b@x.io"]
NAMES = ["Acme", "acme", "Beta", "Gamma "]

contact_upsert = st.fixed_dictionaries({
    "entity": st.just("contacts"),
    "key": st.just("emails"),
    "value": st.sampled_from(EMAILS),
    "attrs": st.fixed_dictionaries({}, optional={"first_name": st.text(max_size=5),
                                                 "city": st.sampled_from(["Oslo", "Rome"])}),
})
mobile_upsert = st.fixed_dictionaries({
    "entity": st.just("contacts"), "key": st.just("mobile_number"),
    "value": st.sampled_from(["+1", "+2"]), "attrs": st.just({}),
})
named_upsert = st.fixed_dictionaries({
    "entity": st.sampled_from(["sales_accounts", "deals"]),
    "key": st.just("name"),
    "value": st.sampled_from(NAMES),
    "attrs": st.fixed_dictionaries({"amount": st.integers(0, 10**6)}),
})


@settings(max_examples=40, deadline=None)
@given(st.lists(st.one_of(contact_upsert, mobile_upsert, named_upsert), max_size=25))
def test_any_sequence_of_upserts_leaves_one_record_per_identifier(steps: list[dict]) -> None:
    app = build_app(SandboxOptions(api_key="test-key", rate_limit_per_minute=10**6, rate_limit_per_hour=10**6))
    wrapper = {"contacts": "contact", "sales_accounts": "sales_account", "deals": "deal"}
    with TestClient(app) as client:
        for step in steps:
            body = {"unique_identifier": {step["key"]: step["value"]}, wrapper[step["entity"]]: step["attrs"]}
            response = client.post(f"/api/{step['entity']}/upsert", json=body, headers=AUTH)
            assert response.status_code == 200, response.text
    records = app.state.sandbox.records
    emails = [e["value"].strip().lower() for c in records["contacts"].values() for e in c["emails"]]
    assert len(emails) == len(set(emails))
    used_emails = {s["value"].strip().lower() for s in steps if s["key"] == "emails"}
    assert set(emails) == used_emails
    mobile_only = [c for c in records["contacts"].values() if not c["emails"]]
    mobiles = [c["mobile_number"] for c in mobile_only]
    assert len(mobiles) == len(set(mobiles))
    for entity in ("sales_accounts", "deals"):
        names = [r["name"].strip().lower() for r in records[entity].values()]
        assert len(names) == len(set(names))
        assert set(names) == {s["value"].strip().lower() for s in steps if s["entity"] == entity}
