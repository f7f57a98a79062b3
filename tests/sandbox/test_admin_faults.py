from __future__ import annotations

import pytest

from freshsales_destination.sandbox.errors import ConnectionDropped
from tests.sandbox.conftest import Api, MakeApi


def test_auth_is_exact(api: Api) -> None:
    for header in (None, "Token token=wrong", "Bearer test-key", "Token test-key", "token token=test-key"):
        headers = {"Authorization": header} if header else {}
        response = api.client.get("/crm/sales/api/selector/owners", headers=headers)
        assert response.status_code == 401
        assert response.json() == {"login": "failed", "message": "Incorrect or expired API key"}
        assert api.client.get("/_sandbox/state", headers=headers).status_code == 401


def test_both_prefixes_serve_the_same_state(api: Api) -> None:
    api.post("/contacts", {"contact": {"email": "p@x.io"}})
    direct = api.client.get("/api/lookup", params={"q": "p@x.io", "f": "email", "entities": "contact"},
                            headers={"Authorization": "Token token=test-key"})
    assert len(direct.json()["contacts"]["contacts"]) == 1


def test_state_requests_and_counts(api: Api) -> None:
    api.post("/contacts", {"contact": {"email": "s@x.io"}})
    api.get("/contacts/1")
    state = api.get("/_sandbox/state").json()
    assert state["counts"]["contacts"] == 1 and state["records"]["contacts"][0]["email"] == "s@x.io"
    assert "api_key" not in state["options"] and "test-key" not in str(state)
    log = api.get("/_sandbox/requests").json()
    assert log["api_call_count"] == 2
    statuses = [(r["method"], r["route"], r["status"], r["admin"]) for r in log["requests"]]
    assert statuses[:2] == [("POST", "/api/contacts", 200, False), ("GET", "/api/contacts/1", 404, False)]
    assert statuses[2][3] is True  # the state call itself, flagged admin
    assert api.state.api_call_count() == 2
    since = api.get("/_sandbox/requests", params={"since": 3}).json()["requests"]
    assert [r["seq"] for r in since] == [4]


def test_scripted_answers_then_pass_through(api: Api) -> None:
    queued = api.post("/_sandbox/script", {"method": "POST", "path": "/api/contacts/upsert", "responses": [
        {"status": 429, "body": {"error_code": 429}, "headers": {"Retry-After": "7"}},
        {"status": 500, "body": {"errors": {"code": 500, "message": ["Last name can't be blank"]}}},
    ]})
    assert queued.json()["queued"] == 2
    body = {"unique_identifier": {"emails": "q@x.io"}, "contact": {}}
    first = api.post("/contacts/upsert", body)
    assert first.status_code == 429 and first.headers["retry-after"] == "7"
    assert "x-ratelimit-remaining" in first.headers
    assert api.post("/contacts/upsert", body).status_code == 500
    assert api.post("/contacts/upsert", body).status_code == 200
    outcomes = [r.outcome for r in api.state.requests if not r.admin]
    assert outcomes == ["scripted", "scripted", None]


def test_script_count_glob_and_clear(api: Api) -> None:
    api.post("/_sandbox/script", {"method": "*", "path": "/api/selector/*", "count": 3,
                                  "response": {"status": 503, "body": {"error_code": 503}}})
    assert [api.get("/selector/owners").status_code for _ in range(2)] == [503, 503]
    assert api.get("/_sandbox/script").json()["scripts"][0]["remaining"] == 1
    api.delete("/_sandbox/script")
    assert api.get("/selector/owners").status_code == 200
    for bad in ({"path": "no-slash", "responses": [{}]}, {"path": "/api/x"}, {"path": "/api/x", "responses": [
            {"status": 99}]}, {"path": "/api/x", "responses": [{"action": "explode"}]}):
        response = api.post("/_sandbox/script", bad)
        assert response.status_code == 400 and response.json()["errors"]["code"] == 400


def test_scripted_drop_and_random_drop(api: Api) -> None:
    api.post("/_sandbox/script", {"path": "/api/selector/owners", "responses": [{"action": "drop"}]})
    with pytest.raises(ConnectionDropped):
        api.get("/selector/owners")
    assert api.state.requests[-1].outcome == "fault_drop"


def test_random_faults_and_their_shapes(make_api: MakeApi) -> None:
    api = make_api(fault_seed=1)
    settings = api.post("/_sandbox/faults", {"error_rate": 1.0, "error_statuses": [502]}).json()["faults"]
    assert settings["error_rate"] == 1.0
    answers = [api.get("/selector/owners") for _ in range(6)]
    assert {a.status_code for a in answers} == {502}
    bodies = {str(a.json()) for a in answers}
    assert bodies <= {str({"error_code": 502}), str({"errors": {"code": 502, "message": [
        "Something went wrong. Please try again later."]}})}
    api.post("/_sandbox/faults", {"error_rate": 0, "drop_rate": 1.0})
    with pytest.raises(ConnectionDropped):
        api.get("/selector/owners")
    api.post("/_sandbox/faults", {"drop_rate": 0})
    assert api.get("/_sandbox/faults").json()["faults"]["drop_rate"] == 0
    for bad in ({"error_rate": 2}, {"nope": 1}, {"slow_seconds": -1}, {"error_statuses": [404]}):
        assert api.post("/_sandbox/faults", bad).status_code == 400


def test_slow_fault_still_applies_the_write(make_api: MakeApi) -> None:
    api = make_api(slow_rate=1.0, slow_seconds=0.0)
    assert api.post("/contacts", {"contact": {"email": "slow@x.io"}}).status_code == 200
    assert api.state.requests[-1].outcome == "fault_slow"
    assert len(api.state.records["contacts"]) == 1


def test_reset(api: Api) -> None:
    api.post("/contacts", {"contact": {"email": "r@x.io"}})
    assert api.post("/_sandbox/reset", {"keep_log": True}).json() == {"reset": True}
    assert api.state.records["contacts"] == {} and api.state.api_call_count() == 1
    api.post("/_sandbox/reset")
    assert api.state.api_call_count() == 0
    assert api.post("/_sandbox/reset", {"keep_log": "yes"}).status_code == 400


SOMETHING_WENT_WRONG = ["Something went wrong. Please try again later."]


def test_error_body_switch_gives_freshsales_transient_500_shape(make_api: MakeApi) -> None:
    api = make_api(error_rate=1.0, error_statuses=(500,), error_body="errors.message", fault_seed=3)
    answers = [api.get("/selector/owners") for _ in range(8)]
    assert {a.status_code for a in answers} == {500}
    assert all(a.json() == {"errors": {"code": 500, "message": SOMETHING_WENT_WRONG}} for a in answers)
    assert {r.outcome for r in api.state.requests if not r.admin} == {"fault_error"}
    faults = api.get("/_sandbox/faults").json()["faults"]
    assert faults["error_body"] == "errors.message" and faults["error_statuses"] == [500]
    options = api.get("/_sandbox/state").json()["options"]
    assert options["error_body"] == "errors.message" and options["error_statuses"] == [500]
    # Switched at run time through the admin route.
    api.post("/_sandbox/faults", {"error_body": "error_code", "error_statuses": [503]})
    assert api.get("/selector/owners").json() == {"error_code": 503}
    assert api.post("/_sandbox/faults", {"error_body": "html"}).status_code == 400
    assert api.get("/_sandbox/faults").json()["faults"]["error_body"] == "error_code"


def test_error_body_mixed_by_default_gives_both_shapes(make_api: MakeApi) -> None:
    api = make_api(error_rate=1.0, fault_seed=7)
    assert api.get("/_sandbox/faults").json()["faults"]["error_body"] == "mixed"
    bodies = [api.get("/selector/owners").json() for _ in range(40)]
    assert any("errors" in b for b in bodies) and any("error_code" in b for b in bodies)
