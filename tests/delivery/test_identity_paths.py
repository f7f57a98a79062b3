"""Identity edge cases: people who already exist, change ids, vanish, or ask to be forgotten."""

from __future__ import annotations

from typing import Any

import httpx2

from tests.delivery.conftest import API_KEY, Pipeline


def _status(pipeline: Pipeline, message_id: str) -> tuple[str, str | None]:
    stored = pipeline.store.get_message("web", message_id)
    assert stored is not None
    return stored.status, stored.reason


def _identify(mid: str, user: str, email: str, **traits: Any) -> dict[str, Any]:
    return {"type": "identify", "messageId": mid, "userId": user,
            "traits": {"email": email, **traits}}


def _api(pipeline: Pipeline, method: str, path: str, body: Any = None) -> httpx2.Response:
    return httpx2.request(
        method, f"{pipeline.sandbox.base_url}{path}", json=body,
        headers={"Authorization": f"Token token={API_KEY}"},
    )


def test_a_contact_entered_by_hand_is_updated_not_dead_lettered(suite: Pipeline) -> None:
    created = _api(suite, "POST", "/api/contacts",
                   {"contact": {"first_name": "Pre", "emails": "pre@example.com"}})
    assert created.status_code in (200, 201), created.text
    suite.send("/v1/identify", _identify("pre-1", "pre-user", "pre@example.com", title="CEO"))
    suite.deliver()
    assert _status(suite, "pre-1")[0] == "delivered"
    (contact,) = suite.records("contacts")
    assert contact["job_title"] == "CEO" and contact["external_id"] == "pre-user"


def test_one_bad_identify_does_not_cost_the_others_of_its_lane(suite: Pipeline) -> None:
    batch = [
        _identify("m-1", "lane-user", "lane@example.com", title="A"),
        _identify("m-2", "lane-user", "lane@example.com",
                  deal={"name": "Broken deal", "amount": "not a number"}),
        _identify("m-3", "lane-user", "lane@example.com", title="C"),
    ]
    suite.send("/v1/batch", {"batch": batch})
    suite.deliver()
    statuses = {mid: _status(suite, mid)[0] for mid in ("m-1", "m-2", "m-3")}
    assert statuses["m-1"] == "delivered" and statuses["m-3"] == "delivered", statuses
    assert statuses["m-2"] == "dead", statuses
    assert "amount" in (_status(suite, "m-2")[1] or "").lower()
    (contact,) = suite.records("contacts")
    assert contact["job_title"] == "C"


def test_identify_and_group_in_one_lane_link_the_account(suite: Pipeline) -> None:
    suite.send("/v1/batch", {"batch": [
        _identify("g-1", "grp-user", "grp@example.com"),
        {"type": "group", "messageId": "g-2", "userId": "grp-user", "groupId": "acct-1",
         "traits": {"name": "Initech"}},
    ]})
    suite.deliver()
    assert _status(suite, "g-2")[0] == "delivered"
    (account,) = suite.records("sales_accounts")
    (contact,) = suite.records("contacts")
    linked = [link["id"] for link in contact.get("_sales_accounts", [])]
    assert account["id"] in linked


def test_a_contact_deleted_in_freshsales_is_written_anew(suite: Pipeline) -> None:
    suite.send("/v1/identify", _identify("d-1", "gone-user", "gone@example.com", title="A"))
    suite.deliver()
    (contact,) = suite.records("contacts")
    assert _api(suite, "DELETE", f"/api/contacts/{contact['id']}").status_code == 200
    suite.send("/v1/identify", _identify("d-2", "gone-user", "gone@example.com", title="B"))
    suite.deliver()
    assert _status(suite, "d-2")[0] == "delivered"
    live = [c for c in suite.records("contacts") if not c.get("is_deleted")]
    assert [c["job_title"] for c in live] == ["B"]


def test_alias_carries_the_person_over_to_the_new_id(suite: Pipeline) -> None:
    suite.send("/v1/identify", _identify("a-1", "old-id", "alias@example.com", title="A"))
    suite.deliver()
    suite.send("/v1/alias", {"messageId": "a-2", "previousId": "old-id", "userId": "new-id"})
    suite.deliver()
    suite.send("/v1/identify", _identify("a-3", "new-id", "alias@example.com", title="B"))
    suite.deliver()
    assert _status(suite, "a-3")[0] == "delivered"
    (contact,) = suite.records("contacts")
    assert contact["job_title"] == "B"


def test_delete_of_a_person_known_only_by_user_id_is_not_guessed(suite: Pipeline) -> None:
    """Lookups by external_id are unattested (reference 13.2): a userId that is not an email,
    of a person delivery never wrote, cannot be found safely, and nothing is erased."""
    created = _api(suite, "POST", "/api/contacts", {"contact": {
        "first_name": "Erase", "emails": "erase@example.com", "external_id": "erase-me"}})
    assert created.status_code in (200, 201), created.text
    response = httpx2.post(
        f"{suite.ingest_url}/webhook/wk_delivery_test",
        json={"type": "delete", "userId": "erase-me", "messageId": "del-1"},
    )
    assert response.status_code == 200, response.text
    assert suite.app.state.sorting.wait_sorted(30)
    suite.deliver()
    status, reason = _status(suite, "del-1")
    assert status == "skipped"
    assert "external_id" in (reason or "")
    assert not [e for e in suite.sandbox.request_log() if "/lookup" in e["path"]]
    assert len([c for c in suite.records("contacts") if not c.get("is_deleted")]) == 1
