"""The admin API on a real uvicorn server, fed by real ingest and delivery into the sandbox:
credentials and cross-site refusal on every route, search with every filter and pagination,
the journey, stats, failures, dead-letter retry and drop, explain both ways, and 400 for every
bad parameter. Answers are validated against the served OpenAPI description."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from starlette.requests import Request
from starlette.routing import Route

from freshsales_destination.admin import auth
from freshsales_destination.config import settings_from_dict
from freshsales_destination.service import build_app
from freshsales_destination.store.sqlite import SQLiteStore
from tests.admin.conftest import ADMIN_TOKEN, Admin, make_admin
from tests.admin.openapi_check import assert_conforms
from tests.delivery.conftest import API_KEY, APP_TOKEN, WRITE_KEY
from tests.support.server import serve_in_thread

UPSERT = "/api/contacts/upsert"
INVALID_STATUS = "Invalid contact status provided."


def admin_routes(admin: Admin) -> list[tuple[str, str]]:
    """(method, concrete path) of every route mounted under /admin/v1."""
    found = []
    for route in admin.pipeline.app.routes:
        if isinstance(route, Route) and route.path.startswith("/admin/v1/"):
            for method in sorted(route.methods or ()):
                if method != "HEAD":
                    found.append((method, route.path.replace("{id}", "1")))
    assert len(found) >= 9
    return found


def seed_dead(admin: Admin, user: str, mid: str) -> int:
    """Send one identify whose upsert Freshsales refuses (400): a dead letter; its id."""
    admin.script("POST", UPSERT, {
        "status": 400, "body": {"errors": {"code": 400, "message": [INVALID_STATUS]}},
    })
    admin.pipeline.send("/v1/identify", identify(user, mid))
    admin.pipeline.deliver()
    found = admin.ok("/admin/v1/messages", message_id=mid)["messages"]
    assert [m["status"] for m in found] == ["dead"], found
    return int(found[0]["id"])


def identify(user: str, mid: str, **traits: Any) -> dict[str, Any]:
    return {"type": "identify", "userId": user, "messageId": mid,
            "traits": {"email": f"{user}@example.com", "firstName": user.title(), **traits}}


def status_of(admin: Admin, seq: int) -> str:
    return next(m.status for m in admin.pipeline.store.list_messages(limit=10_000) if m.seq == seq)


def session_headers(admin: Admin) -> dict[str, str]:
    """A logged-in browser's cookie and the session's CSRF token (as the dashboard's page
    would carry it), made with auth.py's own functions."""
    cookie = auth.session_cookie_value(ADMIN_TOKEN, time.time())
    scope = {"type": "http", "method": "GET", "path": "/", "headers": [
        (b"cookie", f"{auth.SESSION_COOKIE}={cookie}".encode())]}
    csrf = auth.csrf_token(Request(scope), admin.pipeline.settings)
    assert csrf
    return {"Cookie": f"{auth.SESSION_COOKIE}={cookie}", auth.CSRF_HEADER: csrf}


# -- credentials and cross-site requests ---------------------------------------------------------


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", f"Bearer {ADMIN_TOKEN}x",
                                           f"Token token={ADMIN_TOKEN}", f"Basic {ADMIN_TOKEN}"])
def test_every_route_is_401_without_the_token_or_with_a_wrong_one(
    admin: Admin, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    for method, path in admin_routes(admin):
        response = httpx2.request(method, f"{admin.url}{path}", headers=headers, json={"all": True})
        assert response.status_code == 401, (method, path, response.text)
        body = response.json()
        assert body["code"] == "unauthorized" and body["message"], body
        assert ADMIN_TOKEN not in response.text


def test_a_refused_retry_changes_nothing(admin: Admin) -> None:
    seq = seed_dead(admin, "ann", "ann-1")
    for headers in ({}, {"Authorization": "Bearer nope"}):
        response = httpx2.post(f"{admin.url}/admin/v1/dead-letters/retry", json={"all": True},
                               headers=headers)
        assert response.status_code == 401
    assert status_of(admin, seq) == "dead"


def test_without_a_configured_token_every_route_is_closed(tmp_path: Path) -> None:
    for admin in make_admin(tmp_path, token=None):
        for method, path in admin_routes(admin):
            for headers in ({}, {"Authorization": "Bearer anything"}):
                response = httpx2.request(method, f"{admin.url}{path}", headers=headers, json={})
                assert response.status_code == 503, (method, path)
                body = response.json()
                assert body["code"] == "admin_disabled"
                assert "server.admin_token" in body["message"]


@pytest.mark.parametrize("cross", [
    {"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}, {"Origin": "null"},
    {"Sec-Fetch-Site": "same-site", "Origin": "https://sub.evil.example"},
])
def test_a_cross_site_post_with_the_session_cookie_is_refused(
    admin: Admin, cross: dict[str, str]
) -> None:
    seq = seed_dead(admin, "cat", "cat-1")
    with httpx2.Client(base_url=admin.url) as browser:
        session = session_headers(admin)
        for path, body in (("/admin/v1/dead-letters/retry", {"ids": [seq]}),
                           ("/admin/v1/dead-letters/drop", {"ids": [seq]}),
                           ("/admin/v1/explain", {"id": seq})):
            response = browser.post(path, json=body, headers={**session, **cross})
            assert response.status_code == 403, response.text
            assert response.json()["code"] == "cross_site_request"
        assert status_of(admin, seq) == "dead"
        # The same request from the service's own page passes.
        same = {**session, "Origin": admin.url, "Sec-Fetch-Site": "same-origin"}
        response = browser.post("/admin/v1/dead-letters/retry", json={"ids": [seq]}, headers=same)
        assert response.status_code == 200, response.text
        assert response.json() == {"action": "retry", "changed": 1}
    assert status_of(admin, seq) == "pending"


def test_a_session_post_without_its_csrf_token_is_refused(admin: Admin) -> None:
    seq = seed_dead(admin, "dan", "dan-1")
    session = session_headers(admin)
    del session[auth.CSRF_HEADER]
    response = httpx2.post(f"{admin.url}/admin/v1/dead-letters/drop", json={"ids": [seq]},
                           headers={**session, "Origin": admin.url})
    assert response.status_code == 403 and response.json()["code"] == "csrf_token_invalid"
    assert status_of(admin, seq) == "dead"


def test_a_bearer_post_from_a_foreign_origin_is_refused(admin: Admin) -> None:
    seq = seed_dead(admin, "eve", "eve-1")
    response = admin.client.post("/admin/v1/dead-letters/drop", json={"ids": [seq]},
                                 headers={"Origin": "https://evil.example"})
    assert response.status_code == 403
    assert status_of(admin, seq) == "dead"


def test_a_post_that_is_not_json_is_415(admin: Admin) -> None:
    """What an HTML form or a cross-site "simple" request can send is refused before reading."""
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {"Content-Type": content_type} if content_type else {}
        response = admin.client.post("/admin/v1/dead-letters/retry", content=b'{"all": true}',
                                     headers=headers)
        assert response.status_code == 415, response.text
        assert response.json()["code"] == "unsupported_media_type"


# -- bad parameters ------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "params", "code"), [
    ("/admin/v1/messages", {"limit": "0"}, "invalid_parameter"),
    ("/admin/v1/messages", {"limit": "501"}, "invalid_parameter"),
    ("/admin/v1/messages", {"limit": "ten"}, "invalid_parameter"),
    ("/admin/v1/messages", {"status": "lost"}, "invalid_parameter"),
    ("/admin/v1/messages", {"type": "purchase"}, "invalid_parameter"),
    ("/admin/v1/messages", {"since": "yesterday"}, "invalid_parameter"),
    ("/admin/v1/messages", {"until": "-5"}, "invalid_parameter"),
    ("/admin/v1/messages", {"since": "200", "until": "100"}, "invalid_parameter"),
    ("/admin/v1/messages", {"userId": "u1"}, "invalid_parameter"),
    ("/admin/v1/messages", {"cursor": "not-a-cursor"}, "invalid_cursor"),
    ("/admin/v1/messages/abc", {}, "invalid_id"),
    ("/admin/v1/messages/0", {}, "invalid_id"),
    ("/admin/v1/messages/99999999999999999999", {}, "invalid_id"),
    ("/admin/v1/stats", {"window": "2h"}, "invalid_parameter"),
    ("/admin/v1/stats", {"windows": "1h"}, "invalid_parameter"),
    ("/admin/v1/failures", {"since": "soon"}, "invalid_parameter"),
    ("/admin/v1/destinations", {"x": "1"}, "invalid_parameter"),
])
def test_a_bad_query_is_400(admin: Admin, path: str, params: dict[str, str], code: str) -> None:
    response = admin.get(path, **params)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == code and body["message"]


@pytest.mark.parametrize(("path", "body", "code"), [
    ("/admin/v1/dead-letters/retry", {}, "empty_filter"),
    ("/admin/v1/dead-letters/retry", [], "invalid_body"),
    ("/admin/v1/dead-letters/retry", {"ids": []}, "invalid_parameter"),
    ("/admin/v1/dead-letters/retry", {"ids": ["x"]}, "invalid_id"),
    ("/admin/v1/dead-letters/retry", {"ids": 5}, "invalid_parameter"),
    ("/admin/v1/dead-letters/drop", {"all": "yes"}, "invalid_parameter"),
    ("/admin/v1/dead-letters/drop", {"all": True, "reason": "x"}, "ambiguous_filter"),
    ("/admin/v1/dead-letters/drop", {"reasons": "x"}, "invalid_parameter"),
    ("/admin/v1/dead-letters/drop", {"since": "last week"}, "invalid_parameter"),
    ("/admin/v1/explain", [1], "invalid_body"),
    ("/admin/v1/explain", {"id": "seven"}, "invalid_id"),
    ("/admin/v1/explain", {"id": 1, "message_id": "m"}, "ambiguous_filter"),
    ("/admin/v1/explain", {"message_id": ""}, "invalid_parameter"),
    ("/admin/v1/explain", {"event": "identify"}, "invalid_body"),
    ("/admin/v1/explain", {"event": {"type": "identify"}, "destination": "nope"},
     "unknown_destination"),
])
def test_a_bad_body_is_400(admin: Admin, path: str, body: Any, code: str) -> None:
    response = admin.post(path, body)
    assert response.status_code == 400, response.text
    answer = response.json()
    assert answer["code"] == code and answer["message"]


def test_invalid_json_is_400_and_a_huge_body_413(admin: Admin) -> None:
    headers = {"Content-Type": "application/json"}
    response = admin.client.post("/admin/v1/explain", content=b"{nope", headers=headers)
    assert response.status_code == 400 and response.json()["code"] == "invalid_json"
    response = admin.client.post("/admin/v1/explain", content=b" " * (1024 * 1024 + 1),
                                 headers=headers)
    assert response.status_code == 413 and response.json()["code"] == "body_too_large"


# -- reading: a seeded history -------------------------------------------------------------------


class Seeded:
    """What the module's service was sent, by name, and the ids the API gave them."""

    def __init__(self, admin: Admin) -> None:
        self.admin = admin
        self.ids: dict[str, int] = {}

    def id(self, mid: str) -> int:
        if mid not in self.ids:
            found = self.admin.ok("/admin/v1/messages", message_id=mid)["messages"]
            assert len(found) == 1, (mid, found)
            self.ids[mid] = int(found[0]["id"])
        return self.ids[mid]


PAGER = [f"pg-{i}" for i in range(7)]


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    for admin in make_admin(tmp_path_factory.mktemp("seeded")):
        send = admin.pipeline.send
        send("/v1/identify", identify("ada", "ada-1"))
        send("/v1/track", {"type": "track", "userId": "ada", "messageId": "ada-2",
                           "event": "Clicked", "properties": {"plan": "pro"}})
        # Discarded by the planner: Freshsales cannot find an anonymous person.
        send("/v1/track", {"type": "track", "anonymousId": "anon-7", "messageId": "anon-1",
                           "event": "Viewed"})
        send("/v1/track", {"type": "track", "userId": "ada", "messageId": "no-event"})
        send("/v1/track", {"type": "track", "userId": "ada", "messageId": "switched-off",
                           "event": "Hidden", "integrations": {"All": False}})
        send("/v1/batch", {"batch": [
            {"type": "track", "userId": "pager", "messageId": mid, "event": "Paged"}
            for mid in PAGER
        ]})
        admin.pipeline.deliver()
        admin.script("POST", UPSERT, *[{
            "status": 400, "body": {"errors": {"code": 400, "message": [INVALID_STATUS]}},
        }] * 2)
        send("/v1/identify", identify("bob", "bob-1"))
        send("/v1/identify", identify("cy", "cy-1"))
        admin.pipeline.deliver()
        # A 500: rex-1 waits for its retry (pending with a last error), which this run
        # never reaches (delivery is run only on demand).
        admin.script("POST", UPSERT, {
            "status": 500, "body": {"errors": {"code": 500, "message": ["Try later"]}},
        })
        send("/v1/identify", identify("rex", "rex-1"))
        admin.pipeline.deliver()
        yield Seeded(admin)


def test_search_lists_newest_first_and_each_message_once(seeded: Seeded) -> None:
    body = seeded.admin.ok("/admin/v1/messages", limit=100)
    assert_conforms(body, "/admin/v1/messages")
    ids = [m["id"] for m in body["messages"]]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == len(ids)
    mids = {m["message_id"] for m in body["messages"]}
    assert {"ada-1", "ada-2", "anon-1", "no-event", "switched-off", "bob-1", "cy-1", "rex-1",
            *PAGER} == mids
    assert body["next_cursor"] is None


def test_pagination_walks_every_page_once(seeded: Seeded) -> None:
    seen: list[str] = []
    pages = 0
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"user_id": "pager", "limit": 3}
        if cursor:
            params["cursor"] = cursor
        body = seeded.admin.ok("/admin/v1/messages", **params)
        assert len(body["messages"]) <= 3
        seen += [m["message_id"] for m in body["messages"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
        assert pages < 10
    assert pages == 3
    assert seen == list(reversed(PAGER))  # newest first, none twice, none missed


@pytest.mark.parametrize(("params", "expected"), [
    ({"user_id": "ada"}, {"ada-1", "ada-2", "no-event", "switched-off"}),
    ({"anonymous_id": "anon-7"}, {"anon-1"}),
    ({"email": "bob@example.com"}, {"bob-1"}),
    ({"email": "Bob@Example.com"}, {"bob-1"}),
    ({"message_id": "cy-1"}, {"cy-1"}),
    ({"status": "dead"}, {"bob-1", "cy-1"}),
    ({"status": "discarded"}, {"no-event", "anon-1"}),
    ({"status": "filtered"}, {"switched-off"}),
    ({"type": "identify"}, {"ada-1", "bob-1", "cy-1", "rex-1"}),
    ({"type": "identify", "status": "delivered"}, {"ada-1"}),
    ({"reason": "Invalid contact status"}, {"bob-1", "cy-1"}),
    ({"reason": "needs a userId"}, {"anon-1"}),
    ({"destination": "crm", "user_id": "cy"}, {"cy-1"}),
    ({"status": "retrying"}, {"rex-1"}),
    ({"status": "pending"}, {"rex-1"}),
    ({"destination": "elsewhere"}, set()),
    ({"user_id": "nobody"}, set()),
])
def test_each_filter_selects_exactly_its_messages(
    seeded: Seeded, params: dict[str, str], expected: set[str]
) -> None:
    body = seeded.admin.ok("/admin/v1/messages", limit=100, **params)
    assert {m["message_id"] for m in body["messages"]} == expected


def test_since_and_until_select_by_time_received(seeded: Seeded) -> None:
    everything = seeded.admin.ok("/admin/v1/messages", limit=100)["messages"]
    bob = next(m for m in everything if m["message_id"] == "bob-1")
    later = {m["message_id"] for m in everything if m["received_at"] >= bob["received_at"]}
    earlier = {m["message_id"] for m in everything if m["received_at"] < bob["received_at"]}
    assert later and earlier
    got = seeded.admin.ok("/admin/v1/messages", limit=100, since=str(bob["received_at"]))
    assert {m["message_id"] for m in got["messages"]} == later
    got = seeded.admin.ok("/admin/v1/messages", limit=100, until=str(bob["received_at"]))
    assert {m["message_id"] for m in got["messages"]} == earlier
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(bob["received_at"] + 3600))
    assert seeded.admin.ok("/admin/v1/messages", since=iso)["messages"] == []


def test_since_and_until_take_an_age_as_the_cli_does(seeded: Seeded) -> None:
    everything = seeded.admin.ok("/admin/v1/messages", limit=100)["messages"]
    assert everything
    recent = seeded.admin.ok("/admin/v1/messages", limit=100, since="1h")["messages"]
    assert recent == everything  # all were received within the hour
    assert seeded.admin.ok("/admin/v1/messages", until="1h")["messages"] == []
    assert seeded.admin.ok("/admin/v1/messages", type="delete")["messages"] == []  # a stored type
    retrying = seeded.admin.ok("/admin/v1/messages", status="retrying")["messages"]
    assert all(m["status"] == "pending" and m["last_error"] for m in retrying)


def test_the_journey_of_a_delivered_message(seeded: Seeded) -> None:
    seq = seeded.id("ada-1")
    body = seeded.admin.ok(f"/admin/v1/messages/{seq}")
    assert_conforms(body, "/admin/v1/messages/{id}")
    assert body["message"]["id"] == seq and body["message"]["status"] == "delivered"
    assert body["raw"]["traits"]["email"] == "ada@example.com"
    kinds = [step["kind"] for step in body["steps"]]
    assert kinds[0] == "received" and kinds[-1] == "delivered"
    calls = [step["detail"] for step in body["steps"] if step["kind"] == "call"]
    assert calls and any("upsert" in call["route"] for call in calls)
    assert all(call["status"] == 200 and call["method"] for call in calls if "upsert" in call["route"])
    text = str(body)
    assert API_KEY not in text and APP_TOKEN not in text and WRITE_KEY not in text


def test_the_journey_of_a_dead_message_says_why(seeded: Seeded) -> None:
    body = seeded.admin.ok(f"/admin/v1/messages/{seeded.id('bob-1')}")
    assert body["message"]["status"] == "dead"
    dead = [step for step in body["steps"] if step["kind"] == "dead"]
    assert dead and INVALID_STATUS in str(dead[-1]["detail"])
    refused = [s["detail"] for s in body["steps"] if s["kind"] == "call" and s["detail"]["status"] == 400]
    assert refused and INVALID_STATUS in str(refused[0].get("error"))


def test_the_journey_of_a_discarded_message_says_why(seeded: Seeded) -> None:
    body = seeded.admin.ok(f"/admin/v1/messages/{seeded.id('no-event')}")
    assert body["message"]["status"] == "discarded" and body["message"]["reason"]
    assert any(step["kind"] == "discarded" for step in body["steps"])


def test_an_unknown_message_is_404(seeded: Seeded) -> None:
    response = seeded.admin.get("/admin/v1/messages/987654321")
    assert response.status_code == 404 and response.json()["code"] == "not_found"


@pytest.mark.parametrize("window", ["1h", "24h", "7d", None])
def test_stats_count_what_happened(seeded: Seeded, window: str | None) -> None:
    body = seeded.admin.ok("/admin/v1/stats", **({"window": window} if window else {}))
    assert_conforms(body, "/admin/v1/stats")
    assert body["window"] == (window or "24h")
    (crm,) = body["destinations"]
    assert crm["destination"] == "crm"
    totals = crm["totals"]
    assert totals["received"] == 15
    assert totals["dead"] == 2 and totals["discarded"] == 2 and totals["filtered"] == 1
    assert totals["delivered"] == 9  # ada's two and the pager's seven
    assert sum(bucket["received"] for bucket in crm["buckets"]) == 15
    assert totals["retried"] == 1
    starts = [bucket["start"] for bucket in crm["buckets"]]
    assert starts == sorted(starts)
    assert crm["latency_p50_seconds"] is not None
    assert crm["latency_p50_seconds"] <= crm["latency_p95_seconds"]


def test_failures_group_reasons_with_counts_and_samples(seeded: Seeded) -> None:
    body = seeded.admin.ok("/admin/v1/failures")
    assert_conforms(body, "/admin/v1/failures")
    groups = body["failures"]
    dead = [g for g in groups if g["status"] == "dead"]
    assert len(dead) == 1 and INVALID_STATUS in dead[0]["reason"]
    assert dead[0]["count"] == 2
    assert set(dead[0]["samples"]) == {seeded.id("bob-1"), seeded.id("cy-1")}
    assert dead[0]["first_seen"] <= dead[0]["last_seen"]
    discarded = {g["reason"]: g["samples"] for g in groups if g["status"] == "discarded"}
    assert sorted(discarded.values()) == sorted([[seeded.id("no-event")], [seeded.id("anon-1")]])
    assert any("needs a userId" in reason for reason in discarded)
    retrying = [g for g in groups if g["status"] == "retrying"]
    assert len(retrying) == 1 and "Try later" in retrying[0]["reason"]
    assert retrying[0]["samples"] == [seeded.id("rex-1")]
    counts = [g["count"] for g in groups]
    assert counts == sorted(counts, reverse=True)
    assert seeded.admin.ok("/admin/v1/failures", destination="elsewhere")["failures"] == []
    # since bounds finished messages; those waiting for a retry are listed whatever their age.
    later = seeded.admin.ok("/admin/v1/failures", since=str(time.time() + 3600))["failures"]
    assert [g["status"] for g in later] == ["retrying"]


def test_destinations_show_health_budget_and_backlog(seeded: Seeded) -> None:
    body = seeded.admin.ok("/admin/v1/destinations")
    assert_conforms(body, "/admin/v1/destinations")
    (crm,) = body["destinations"]
    assert crm["name"] == "crm"
    assert crm["backlog"].get("dead") == 2
    assert crm["backlog"].get("retrying") == 1
    assert crm["health"] and crm["budget"]
    text = str(body)
    assert API_KEY not in text and APP_TOKEN not in text


def test_explain_of_an_event_without_a_type_says_so_and_lists_the_types(seeded: Seeded) -> None:
    answer = seeded.admin.post("/admin/v1/explain", {"userId": "z"})
    assert answer.status_code == 200, answer.text
    reason = answer.json()["explanation"]["reason"]
    assert "None" not in reason and "has no type" in reason
    assert all(kind in reason for kind in ("identify", "track", "page", "group", "alias"))
    odd = seeded.admin.post("/admin/v1/explain", {"type": "purchase", "userId": "z"})
    assert "'purchase'" in odd.json()["explanation"]["reason"]
    assert "identify" in odd.json()["explanation"]["reason"]


def test_explain_a_posted_event_and_a_stored_one(seeded: Seeded) -> None:
    event = identify("zed", "zed-1", title="CTO")
    posted = seeded.admin.post("/admin/v1/explain", {"event": event, "destination": "crm"})
    assert posted.status_code == 200, posted.text
    assert_conforms(posted.json(), "/admin/v1/explain", "post")
    assert "message" not in posted.json()
    bare = seeded.admin.post("/admin/v1/explain", event)
    assert bare.status_code == 200 and bare.json() == posted.json()
    assert "zed@example.com" in posted.text
    # Nothing was stored by explaining.
    assert seeded.admin.ok("/admin/v1/messages", user_id="zed")["messages"] == []

    by_message_id = seeded.admin.post("/admin/v1/explain", {"message_id": "ada-1"})
    by_id = seeded.admin.post("/admin/v1/explain", {"id": seeded.id("ada-1")})
    assert by_message_id.status_code == 200 and by_id.status_code == 200, by_id.text
    assert by_message_id.json() == by_id.json()
    assert_conforms(by_id.json(), "/admin/v1/explain", "post")
    assert by_id.json()["message"] == seeded.id("ada-1")
    assert "ada@example.com" in by_id.text
    for body in ({"message_id": "never-sent"}, {"id": 987654321}):
        response = seeded.admin.post("/admin/v1/explain", body)
        assert response.status_code == 404 and response.json()["code"] == "not_found"


# -- steering ------------------------------------------------------------------------------------


def test_retry_and_drop_count_what_they_changed(admin: Admin) -> None:
    first = seed_dead(admin, "fay", "fay-1")
    second = seed_dead(admin, "gus", "gus-1")
    third = seed_dead(admin, "hal", "hal-1")
    admin.pipeline.send("/v1/identify", identify("ivy", "ivy-1"))
    admin.pipeline.deliver()

    def act(action: str, body: dict[str, Any]) -> int:
        response = admin.post(f"/admin/v1/dead-letters/{action}", body)
        assert response.status_code == 200, response.text
        assert_conforms(response.json(), f"/admin/v1/dead-letters/{action}", "post")
        assert response.json()["action"] == action
        return int(response.json()["changed"])

    delivered = admin.ok("/admin/v1/messages", message_id="ivy-1")["messages"][0]["id"]
    assert act("retry", {"ids": [delivered]}) == 0  # only dead letters ever change
    assert act("retry", {"ids": [first]}) == 1
    assert status_of(admin, first) == "pending"
    assert act("retry", {"ids": [first]}) == 0  # no longer dead
    assert act("drop", {"reason": "no such reason"}) == 0
    assert act("drop", {"destination": "elsewhere"}) == 0
    assert act("drop", {"since": time.time() + 3600}) == 0
    assert act("drop", {"ids": [second], "reason": "Invalid contact"}) == 1
    assert status_of(admin, second) == "dropped"
    assert act("drop", {"reason": "Invalid contact", "destination": "crm"}) == 1
    assert status_of(admin, third) == "dropped"
    assert status_of(admin, delivered) == "delivered"
    # The retried one is delivered now that Freshsales takes it.
    admin.pipeline.deliver()
    assert status_of(admin, first) == "delivered"


def test_retry_all(admin: Admin) -> None:
    seqs = [seed_dead(admin, user, f"{user}-1") for user in ("jo", "kim")]
    response = admin.post("/admin/v1/dead-letters/retry", {"all": True})
    assert response.json() == {"action": "retry", "changed": 2}
    assert [status_of(admin, s) for s in seqs] == ["pending", "pending"]


def test_explain_names_the_destination_when_several_are_configured(tmp_path: Path) -> None:
    settings = settings_from_dict({
        "server": {"admin_token": ADMIN_TOKEN},
        "store": {"url": f"sqlite:///{tmp_path / 'q.db'}"},
        "sources": [{"write_key": "wk", "destination": "acme"}],
        "destinations": {"acme": {"domain": "acme", "api_key": "k1"},
                         "beta": {"domain": "beta", "api_key": "k2"}},
    })
    store = SQLiteStore(tmp_path / "q.db")
    store.open()
    event = identify("zoe", "zoe-1")
    try:
        with serve_in_thread(build_app(settings, store, deliver=False)) as url, httpx2.Client(
            base_url=url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        ) as client:
            response = client.post("/admin/v1/explain", json=event)
            assert response.status_code == 400
            body = response.json()
            assert body["code"] == "destination_required" and "acme, beta" in body["message"]
            named = client.post("/admin/v1/explain", json={"event": event, "destination": "beta"})
            assert named.status_code == 200 and named.json()["destination"] == "beta"
            query = client.post("/admin/v1/explain", params={"destination": "acme"}, json=event)
            assert query.status_code == 200 and query.json()["destination"] == "acme"
    finally:
        store.close()


def test_an_unavailable_store_is_503_without_details(tmp_path: Path) -> None:
    settings = settings_from_dict({
        "server": {"admin_token": ADMIN_TOKEN},
        "store": {"url": f"sqlite:///{tmp_path / 'q.db'}"},
        "sources": [{"write_key": "wk", "destination": "acme"}],
        "destinations": {"acme": {"domain": "acme", "api_key": "k1"}},
    })
    store = SQLiteStore(tmp_path / "q.db")
    store.open()
    app = build_app(settings, store, deliver=False)
    with serve_in_thread(app) as url:
        store.close()  # as if the database went away under the running service
        response = httpx2.get(f"{url}/admin/v1/messages",
                              headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code == 503, response.text
    assert response.json() == {"code": "store_unavailable",
                               "message": "the store is unavailable; try again"}
