"""The dashboard's pages over plain HTTP, on the real service (uvicorn, SQLite, delivery into
the real sandbox): who may see them (the login form, a wrong token, the Bearer header), that
no action is taken from another site or without the form's CSRF token, and what each page
shows for events that were really sent and delivered or dead-lettered."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest

from freshsales_destination.admin import auth
from freshsales_destination.config import settings_from_dict
from freshsales_destination.service import build_app
from freshsales_destination.store.sqlite import SQLiteStore
from tests.support.dashboard_stack import (
    ADMIN_TOKEN,
    API_KEY,
    APP_TOKEN,
    REFUSAL,
    WRITE_KEY,
    DashboardStack,
    dashboard_stack,
    identify,
    track,
)
from tests.support.server import serve_in_thread

pytestmark = pytest.mark.slow

PAGES = ["/dashboard", "/dashboard/messages", "/dashboard/messages/1",
         "/dashboard/dead-letters", "/dashboard/tester"]
SECRETS = [ADMIN_TOKEN, WRITE_KEY, API_KEY, APP_TOKEN]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[DashboardStack]:
    with dashboard_stack(tmp_path) as running:
        yield running


def client(stack: DashboardStack) -> httpx2.Client:
    return httpx2.Client(base_url=stack.url, follow_redirects=False, timeout=30)


@contextmanager
def logged_in(stack: DashboardStack) -> Iterator[httpx2.Client]:
    with client(stack) as browser:
        answer = browser.post("/dashboard/login",
                              data={"token": ADMIN_TOKEN, "next": "/dashboard"},
                              headers={"Origin": stack.url})
        assert answer.status_code == 303, answer.text
        yield browser


def csrf_of(html: str) -> str:
    found = re.search(rf'name="{auth.CSRF_FIELD}" value="([^"]+)"', html)
    assert found is not None, "the page has no CSRF field"
    return found.group(1)


def no_secrets(html: str) -> None:
    for secret in SECRETS:
        assert secret not in html


# -- who may see the pages -------------------------------------------------------------


def test_every_page_redirects_to_the_login_form_without_credentials(
    stack: DashboardStack,
) -> None:
    with client(stack) as anonymous:
        for path in PAGES:
            answer = anonymous.get(path + "?q=x")
            assert answer.status_code == 303, path
            location = urlsplit(answer.headers["location"])
            assert location.path == "/dashboard/login" and not location.netloc
            assert parse_qs(location.query)["next"] == [path + "?q=x"]
        form = anonymous.get("/dashboard/login")
        assert form.status_code == 200
        assert '<label for="token">Admin token</label>' in form.text
        assert 'type="password"' in form.text
        # A POST without credentials is refused, not redirected, and changes nothing.
        answer = anonymous.post("/dashboard/dead-letters/retry", data={"scope": "all"})
        assert answer.status_code == 401


def test_a_wrong_token_is_refused_and_the_right_one_gives_a_strict_session(
    stack: DashboardStack,
) -> None:
    with client(stack) as browser:
        wrong = browser.post("/dashboard/login",
                             data={"token": "not-it-" + ADMIN_TOKEN[:6], "next": "/dashboard"})
        assert wrong.status_code == 401
        assert "That is not the admin token" in wrong.text
        assert "set-cookie" not in wrong.headers
        assert "not-it-" not in wrong.text  # the submitted value is never echoed
        assert browser.get("/dashboard").status_code == 303

        right = browser.post("/dashboard/login",
                             data={"token": ADMIN_TOKEN, "next": "/dashboard/dead-letters"})
        assert right.status_code == 303
        assert right.headers["location"] == "/dashboard/dead-letters"
        cookie = right.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        assert ADMIN_TOKEN.lower() not in cookie
        page = browser.get("/dashboard/dead-letters")
        assert page.status_code == 200
        assert "default-src 'none'" in page.headers["content-security-policy"]
        no_secrets(page.text)

        # Logging out (a POST with the form's token) ends the session.
        out = browser.post("/dashboard/logout", data={auth.CSRF_FIELD: csrf_of(page.text)})
        assert out.status_code == 303 and out.headers["location"] == "/dashboard/login"
        assert browser.get("/dashboard/dead-letters").status_code == 303


def test_login_never_redirects_to_another_site(stack: DashboardStack) -> None:
    with client(stack) as browser:
        for target in ("//evil.example/x", "https://evil.example/", "/elsewhere", "/dashboard\\x"):
            answer = browser.post("/dashboard/login", data={"token": ADMIN_TOKEN, "next": target})
            assert answer.status_code == 303
            assert answer.headers["location"] == "/dashboard", target


def test_cross_site_login_and_actions_are_refused(stack: DashboardStack) -> None:
    with client(stack) as browser:
        forged = browser.post("/dashboard/login", data={"token": ADMIN_TOKEN},
                              headers={"Origin": "http://evil.example"})
        assert forged.status_code == 403 and "set-cookie" not in forged.headers
    with logged_in(stack) as browser:
        token = csrf_of(browser.get("/dashboard/tester").text)
        form = {auth.CSRF_FIELD: token, "event": '{"type": "track", "userId": "u", "event": "E"}'}
        for headers in ({"Origin": "http://evil.example"},
                        {"Sec-Fetch-Site": "cross-site"}, {"Origin": "null"}):
            answer = browser.post("/dashboard/tester", data=form, headers=headers)
            assert answer.status_code == 403, headers
            assert "another site" in answer.text
        # Without the form's CSRF token, or with another one, a same-site POST is refused too.
        for data in ({"scope": "all"}, {"scope": "all", auth.CSRF_FIELD: token[:-2] + "xx"}):
            answer = browser.post("/dashboard/dead-letters/retry", data=data,
                                  headers={"Origin": stack.url})
            assert answer.status_code == 403
            assert "security token" in answer.text


def test_without_an_admin_token_the_dashboard_is_closed(tmp_path: Path) -> None:
    settings = settings_from_dict({
        "store": {"url": f"sqlite:///{tmp_path / 'q.db'}"},
        "sources": [{"write_key": WRITE_KEY, "destination": "crm"}],
        "destinations": {"crm": {"domain": "acme", "api_key": API_KEY}},
    })
    store = SQLiteStore(tmp_path / "q.db")
    store.open()
    try:
        with serve_in_thread(build_app(settings, store, deliver=False)) as url:
            with httpx2.Client(base_url=url, follow_redirects=False) as anonymous:
                for path in ("/dashboard", "/dashboard/login"):
                    answer = anonymous.get(path)
                    assert answer.status_code == 503
                    assert "server.admin_token" in answer.text
                    assert 'name="token"' not in answer.text
                answer = anonymous.post("/dashboard/login", data={"token": ""})
                assert answer.status_code == 503
    finally:
        store.close()


# -- what the pages show ---------------------------------------------------------------


def sent_and_settled(stack: DashboardStack) -> dict[str, list[str]]:
    """Three people delivered (an identify and a track each), two dead letters (their person
    writes refused with a 400) and one discarded message; waits until delivery settled."""
    stack.scripted_400(2)
    dead = [identify("dora", "dora-1"), identify("dirk", "dirk-1")]
    stack.send(dead)
    stack.wait_status(["dora-1", "dirk-1"], "dead")
    good = [m for user in ("ann", "bob", "cyd")
            for m in (identify(user, f"{user}-1"), track(user, f"{user}-2", "Signed Up"))]
    stack.send([*good, {"type": "track", "userId": "eve", "messageId": "eve-1"}])  # no event
    ids = [m["messageId"] for m in good]
    stack.wait_status(ids, "delivered")
    stack.wait_status(["eve-1"], "discarded")
    return {"delivered": ids, "dead": ["dora-1", "dirk-1"], "discarded": ["eve-1"]}


def step_count(html: str, step: str) -> int:
    found = re.search(rf'data-step="{step}"><span class="count">(\d+)</span>', html)
    assert found is not None, step
    return int(found.group(1))


def test_the_pages_show_what_was_sent(stack: DashboardStack) -> None:
    sent = sent_and_settled(stack)
    with logged_in(stack) as browser:
        overview = browser.get("/dashboard")
        assert overview.status_code == 200
        html = overview.text
        assert step_count(html, "received") == 9
        assert step_count(html, "delivered") == 6
        assert step_count(html, "dead") == 2
        assert step_count(html, "discarded") == 1
        assert '<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img"' in html
        assert REFUSAL in html  # the failure reasons table
        assert "healthy" in html
        no_secrets(html)

        # Search by userId and by email (the person's events), and by messageId: the one
        # event found opens its journey.
        for q in ("bob", "bob@example.com"):
            found = browser.get("/dashboard/messages", params={"q": q})
            assert found.status_code == 200
            assert "<code>bob-1</code>" in found.text and "<code>bob-2</code>" in found.text, q
            assert "ann-1" not in found.text, q
        seq = stack.message("bob-2")
        assert seq is not None
        found = browser.get("/dashboard/messages", params={"q": "bob-2"})
        assert found.status_code == 303
        assert found.headers["location"] == f"/dashboard/messages/{seq.seq}"
        journey = browser.get(f"/dashboard/messages/{seq.seq}")
        assert journey.status_code == 200
        assert 'id="final-status">delivered<' in journey.text
        assert "Signed Up" in journey.text
        no_secrets(journey.text)
        assert browser.get("/dashboard/messages/999999").status_code == 404
        assert browser.get("/dashboard/messages/x").status_code == 400

        dead = browser.get("/dashboard/dead-letters")
        assert dead.status_code == 200
        assert dead.text.count('type="checkbox" name="ids"') == len(sent["dead"])
        no_secrets(dead.text)


def test_a_dead_letter_is_retried_from_the_page_and_delivered(stack: DashboardStack) -> None:
    sent_and_settled(stack)
    dora = stack.message("dora-1")
    dirk = stack.message("dirk-1")
    assert dora is not None and dirk is not None
    with logged_in(stack) as browser:
        page = browser.get("/dashboard/dead-letters")
        token = csrf_of(page.text)
        # One, by its own row's form: the other stays dead.
        answer = browser.post("/dashboard/dead-letters/retry",
                              data={auth.CSRF_FIELD: token, "ids": str(dora.seq)},
                              headers={"Origin": stack.url})
        assert answer.status_code == 303
        assert parse_qs(urlsplit(answer.headers["location"]).query)["changed"] == ["1"]
        stack.wait_status(["dora-1"], "delivered")
        assert (stack.message("dirk-1") or dora).status == "dead"
        shown = browser.get(answer.headers["location"])
        assert "Retried 1 dead letter." in shown.text
        # Drop all matching a filter (its reason).
        answer = browser.post("/dashboard/dead-letters/drop",
                              data={auth.CSRF_FIELD: token, "scope": "all", "reason": "contact status"},
                              headers={"Origin": stack.url})
        assert parse_qs(urlsplit(answer.headers["location"]).query)["changed"] == ["1"]
        assert (stack.message("dirk-1") or dora).status == "dropped"
        # Nothing selected is a clear 400, not a silent no-op.
        answer = browser.post("/dashboard/dead-letters/retry", data={auth.CSRF_FIELD: token},
                              headers={"Origin": stack.url})
        assert answer.status_code == 400 and "Select at least one" in answer.text


def test_the_bearer_header_works_without_a_session_or_csrf_token(stack: DashboardStack) -> None:
    sent_and_settled(stack)
    dirk = stack.message("dirk-1")
    assert dirk is not None
    bearer = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with client(stack) as script:
        assert script.get("/dashboard", headers=bearer).status_code == 200
        answer = script.post("/dashboard/dead-letters/drop", data={"ids": str(dirk.seq)},
                             headers=bearer)
        assert answer.status_code == 303
        assert (stack.message("dirk-1") or dirk).status == "dropped"
        wrong = script.get("/dashboard", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 303


def test_the_event_tester_explains_a_pasted_event_and_a_stored_one(stack: DashboardStack) -> None:
    sent_and_settled(stack)
    with logged_in(stack) as browser:
        token = csrf_of(browser.get("/dashboard/tester").text)
        event = '{"type": "identify", "userId": "zed", "traits": {"email": "zed@example.com", "plan": "pro"}}'
        answer = browser.post("/dashboard/tester",
                              data={auth.CSRF_FIELD: token, "event": event, "destination": "crm"})
        assert answer.status_code == 200, answer.text
        assert "Every trait and why" in answer.text
        assert "traits.plan" in answer.text  # every trait is explained
        assert "upsert_contact" in answer.text  # the Freshsales operation
        no_secrets(answer.text)
        stored = browser.post("/dashboard/tester",
                              data={auth.CSRF_FIELD: token, "message_id": "eve-1"})
        assert stored.status_code == 200, stored.text
        assert "discarded" in stored.text
        no_secrets(stored.text)
        bad = browser.post("/dashboard/tester", data={auth.CSRF_FIELD: token, "event": "{oops"})
        assert bad.status_code == 400
        assert "not valid JSON" in bad.text
        assert "{oops" in bad.text  # the text is kept in the form
        missing = browser.post("/dashboard/tester",
                               data={auth.CSRF_FIELD: token, "message_id": "no-such"})
        assert missing.status_code == 404


def test_below_a_mount_point_links_and_redirects_keep_the_prefix(tmp_path: Path) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    settings = settings_from_dict({
        "server": {"admin_token": ADMIN_TOKEN},
        "store": {"url": f"sqlite:///{tmp_path / 'q.db'}"},
        "sources": [{"write_key": WRITE_KEY, "destination": "crm"}],
        "destinations": {"crm": {"domain": "acme", "api_key": API_KEY}},
    })
    store = SQLiteStore(tmp_path / "q.db")
    store.open()
    try:
        outer = Starlette(routes=[Mount("/ops", app=build_app(settings, store, deliver=False))])
        with serve_in_thread(outer) as url, httpx2.Client(base_url=url) as browser:
            answer = browser.get("/ops/dashboard/dead-letters")
            assert answer.status_code == 303
            assert answer.headers["location"] == (
                "/ops/dashboard/login?next=%2Fops%2Fdashboard%2Fdead-letters")
            assert 'action="/ops/dashboard/login"' in browser.get("/ops/dashboard/login").text
            login = browser.post("/ops/dashboard/login", data={
                "token": ADMIN_TOKEN, "next": "/ops/dashboard/dead-letters"})
            assert login.status_code == 303
            assert login.headers["location"] == "/ops/dashboard/dead-letters"
            page = browser.get("/ops/dashboard/dead-letters")
            assert page.status_code == 200
            assert 'href="/ops/dashboard/tester"' in page.text
            assert 'href="/dashboard' not in page.text
    finally:
        store.close()


def test_search_pages_and_filters(tmp_path: Path) -> None:
    """Without delivery: 60 pending tracks of one person and 2 of another; pages of 50, the
    older ones behind a link; filters by status and destination; bad parameters are 400."""
    with dashboard_stack(tmp_path, deliver=False) as stack:
        stack.send([track("pat", f"pat-{i:02d}", "Viewed") for i in range(60)]
                   + [track("quin", f"quin-{i}", "Viewed") for i in range(2)])
        stack.wait("sorting", lambda: all(stack.message(f"pat-{i:02d}") is not None
                                          for i in range(60)))
        with logged_in(stack) as browser:
            first = browser.get("/dashboard/messages", params={"q": "pat", "field": "user_id"})
            assert first.status_code == 200
            assert first.text.count("<code>pat-") == 50
            assert "<code>pat-59</code>" in first.text and "<code>pat-09</code>" not in first.text
            older = re.search(r'href="(/dashboard/messages\?[^"]+)">Older messages', first.text)
            assert older is not None
            second = browser.get(older.group(1).replace("&amp;", "&"))
            assert second.text.count("<code>pat-") == 10
            assert "<code>pat-00</code>" in second.text and "Older messages" not in second.text

            everything = browser.get("/dashboard/messages", params={"status": "pending"})
            assert "<code>quin-1</code>" in everything.text
            assert 'No message matches' in browser.get(  # nothing failed: none retrying
                "/dashboard/messages", params={"status": "retrying"}).text
            assert "No message matches" in browser.get(
                "/dashboard/messages", params={"q": "quin", "status": "delivered"}).text
            for params in ({"status": "nonsense"}, {"field": "password"}, {"cursor": "zzz"}):
                bad = browser.get("/dashboard/messages", params=params)
                assert bad.status_code == 400, params
            for params in ({"since": "yesterday"}, {"destination": "nope"}):
                bad = browser.get("/dashboard/dead-letters", params=params)
                assert bad.status_code == 400, params
                assert "yesterday" in bad.text or "nope" in bad.text
