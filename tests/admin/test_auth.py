"""admin/auth.py on a real uvicorn server: the Bearer token (constant time), the browser
session (signed, stateless, expiring, void when the token changes), cross-site refusal and
the CSRF token, and what happens without a configured token."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx2
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from freshsales_destination.admin import auth
from freshsales_destination.config import Settings, settings_from_dict
from tests.support.server import serve_in_thread

TOKEN = "adm-test-token-0123456789"


def make_settings(token: str | None = TOKEN, **server: object) -> Settings:
    return settings_from_dict({
        "server": {"admin_token": token, **server} if token is not None else dict(server),
        "sources": [{"write_key": "wk", "destination": "acme"}],
        "destinations": {"acme": {"domain": "acme", "api_key": "k"}},
    })


def make_app(settings: Settings) -> Starlette:
    """A minimal admin API and dashboard using auth.py as the real ones do."""

    async def ping(request: Request) -> Response:
        refused = auth.refusal(request, settings)
        return refused or JSONResponse({"by": auth.method(request, settings)})

    async def act(request: Request) -> Response:
        refused = auth.refusal(request, settings)
        return refused or JSONResponse({"done": True})

    async def form_act(request: Request) -> Response:
        form = await request.form()
        value = form.get(auth.CSRF_FIELD)
        refused = auth.refusal(request, settings, form_token=value if isinstance(value, str) else "")
        return refused or JSONResponse({"done": True})

    async def csrf(request: Request) -> Response:
        refused = auth.refusal(request, settings)
        return refused or JSONResponse({"csrf": auth.csrf_token(request, settings)})

    async def login(request: Request) -> Response:
        form = await request.form()
        token, next_url = form.get("token"), form.get("next")
        return auth.login_response(
            request, settings, token if isinstance(token, str) else "",
            next_url=next_url if isinstance(next_url, str) else "/dashboard",
        )

    async def logout(request: Request) -> Response:
        form = await request.form()
        value = form.get(auth.CSRF_FIELD)
        refused = auth.refusal(request, settings, form_token=value if isinstance(value, str) else "")
        return refused or auth.logout_response(request, settings)

    return Starlette(routes=[
        Route("/admin/v1/ping", ping, methods=["GET"]),
        Route("/admin/v1/act", act, methods=["POST"]),
        Route("/dashboard/act", form_act, methods=["POST"]),
        Route("/dashboard/csrf", csrf, methods=["GET"]),
        Route("/dashboard/login", login, methods=["POST"]),
        Route("/dashboard/logout", logout, methods=["POST"]),
    ])


@pytest.fixture
def server() -> Iterator[str]:
    with serve_in_thread(make_app(make_settings())) as url:
        yield url


@pytest.fixture
def compared(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, Any]]:
    """Every call of hmac.compare_digest (the real one still answers)."""
    real: Callable[[Any, Any], bool] = hmac.compare_digest
    calls: list[tuple[Any, Any]] = []

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    return calls


@contextmanager
def logged_in(url: str, token: str = TOKEN) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=url) as client:
        response = client.post("/dashboard/login", data={"token": token}, headers={"Origin": url})
        assert response.status_code == 303, response.text
        assert auth.SESSION_COOKIE in client.cookies
        yield client


def assert_refused(response: httpx2.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code and isinstance(body["message"], str) and body["message"]
    assert TOKEN not in response.text


# -- Bearer --------------------------------------------------------------------------------------


def test_the_bearer_token_is_accepted_and_compared_in_constant_time(
    server: str, compared: list[tuple[Any, Any]]
) -> None:
    response = httpx2.get(f"{server}/admin/v1/ping", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200 and response.json() == {"by": "bearer"}
    assert (TOKEN.encode(), TOKEN.encode()) in compared


@pytest.mark.parametrize("header", [
    None, f"Bearer {TOKEN[:-1]}", f"Bearer {TOKEN}x", f"Basic {TOKEN}", "Bearer", f"Bearer {TOKEN.upper()}",
    "Bearer ключ",
])
def test_no_or_a_wrong_token_is_401_json(
    server: str, header: str | None, compared: list[tuple[Any, Any]]
) -> None:
    headers = {"Authorization": header.encode()} if header is not None else {}
    response = httpx2.get(f"{server}/admin/v1/ping", headers=headers)
    assert_refused(response, 401, "unauthorized")
    assert response.headers["www-authenticate"].startswith("Bearer")
    if header is not None and header.startswith("Bearer ") and header.strip() != "Bearer":
        assert compared, "a submitted Bearer token is compared with compare_digest"


def test_a_wrong_bearer_is_refused_even_with_a_valid_session(server: str) -> None:
    with logged_in(server) as client:
        response = client.get("/admin/v1/ping", headers={"Authorization": "Bearer nope"})
        assert_refused(response, 401, "unauthorized")


def test_without_a_configured_token_the_routes_are_closed_and_say_what_to_set() -> None:
    for token in (None, ""):
        settings = make_settings(token)
        with serve_in_thread(make_app(settings)) as url:
            for headers in ({}, {"Authorization": "Bearer"}, {"Authorization": "Bearer x"}):
                response = httpx2.get(f"{url}/admin/v1/ping", headers=headers)
                assert_refused(response, 503, "admin_disabled")
                assert "server.admin_token" in response.json()["message"]
            login = httpx2.post(f"{url}/dashboard/login", data={"token": ""})
            assert_refused(login, 503, "admin_disabled")
            assert "set-cookie" not in login.headers


# -- the browser session -------------------------------------------------------------------------


def test_login_sets_an_httponly_samesite_strict_cookie_that_authenticates(server: str) -> None:
    client = httpx2.Client(base_url=server)
    response = client.post(
        "/dashboard/login", data={"token": TOKEN, "next": "/dashboard/messages?x=1"},
        headers={"Origin": server},
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard/messages?x=1"
    cookie = response.headers["set-cookie"]
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "path", "max-age", "samesite"} <= attributes
    assert "samesite=strict" in cookie.lower() and "path=/" in cookie.lower()
    assert "secure" not in attributes  # served over plain http here
    assert TOKEN not in cookie
    assert client.get("/admin/v1/ping").json() == {"by": "session"}
    client.close()


def test_the_cookie_is_secure_over_https_behind_a_trusted_proxy() -> None:
    settings = make_settings(trust_proxy=True)
    with serve_in_thread(make_app(settings)) as url:
        response = httpx2.post(
            f"{url}/dashboard/login", data={"token": TOKEN},
            headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "admin.example.com",
                     "Origin": "https://admin.example.com"},
        )
        assert response.status_code == 303
        assert "secure" in response.headers["set-cookie"].lower()


def test_a_wrong_login_sets_no_cookie(server: str) -> None:
    response = httpx2.post(f"{server}/dashboard/login", data={"token": TOKEN + "0"})
    assert_refused(response, 401, "unauthorized")
    assert "set-cookie" not in response.headers


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "/\\evil.example"])
def test_login_never_redirects_off_site(server: str, target: str) -> None:
    response = httpx2.post(f"{server}/dashboard/login", data={"token": TOKEN, "next": target})
    assert response.status_code == 303 and response.headers["location"] == "/dashboard"


def test_a_cross_site_login_is_refused(server: str) -> None:
    for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        response = httpx2.post(f"{server}/dashboard/login", data={"token": TOKEN}, headers=headers)
        assert_refused(response, 403, "cross_site_request")
        assert "set-cookie" not in response.headers


def test_the_session_works_in_another_process_and_dies_with_the_token(server: str) -> None:
    with logged_in(server) as client:
        cookie = client.cookies[auth.SESSION_COOKIE]
    # Another app (as another process would build it) with the same token accepts the cookie.
    with serve_in_thread(make_app(make_settings())) as other:
        response = httpx2.get(f"{other}/admin/v1/ping", cookies={auth.SESSION_COOKIE: cookie})
        assert response.json() == {"by": "session"}
    with serve_in_thread(make_app(make_settings(TOKEN + "-rotated"))) as rotated:
        response = httpx2.get(f"{rotated}/admin/v1/ping", cookies={auth.SESSION_COOKIE: cookie})
        assert_refused(response, 401, "unauthorized")


def test_a_tampered_cookie_is_refused(server: str) -> None:
    with logged_in(server) as client:
        cookie = client.cookies[auth.SESSION_COOKIE]
    version, expires, session_id, signature = cookie.split(".")
    forged = [
        f"{version}.{int(expires) + 10**6}.{session_id}.{signature}",  # longer life
        f"{version}.{expires}.{session_id}x.{signature}",
        f"{version}.{expires}.{session_id}.{signature[:-1]}A",
        f"2.{expires}.{session_id}.{signature}",
        "garbage", "",
    ]
    for value in forged:
        if value == cookie:
            continue
        response = httpx2.get(f"{server}/admin/v1/ping", cookies={auth.SESSION_COOKIE: value})
        assert_refused(response, 401, "unauthorized")


def test_a_session_expires() -> None:
    value = auth.session_cookie_value(TOKEN, now=1_000_000, lifetime=60)
    assert auth.read_session(TOKEN, value, now=1_000_059) is not None
    assert auth.read_session(TOKEN, value, now=1_000_060) is None
    assert auth.read_session(TOKEN + "x", value, now=1_000_000) is None


def test_logout_removes_the_cookie(server: str) -> None:
    with logged_in(server) as client:
        token = client.get("/dashboard/csrf").json()["csrf"]
        response = client.post("/dashboard/logout", data={auth.CSRF_FIELD: token},
                               headers={"Origin": server})
        assert response.status_code == 303
        assert response.headers["location"] == "/dashboard/login"
        assert auth.SESSION_COOKIE not in client.cookies
        assert_refused(client.get("/admin/v1/ping"), 401, "unauthorized")


# -- cross-site requests and the CSRF token ----------------------------------------------------


def test_a_same_origin_form_post_with_the_csrf_token_passes(server: str) -> None:
    with logged_in(server) as client:
        token = client.get("/dashboard/csrf").json()["csrf"]
        assert token and TOKEN not in token
        for headers in ({"Origin": server, "Sec-Fetch-Site": "same-origin"}, {"Origin": server}, {}):
            response = client.post("/dashboard/act", data={auth.CSRF_FIELD: token}, headers=headers)
            assert response.status_code == 200 and response.json() == {"done": True}
        # JSON from the dashboard's own page: the token in the header.
        response = client.post("/admin/v1/act", json={}, headers={auth.CSRF_HEADER: token})
        assert response.status_code == 200


@pytest.mark.parametrize("headers", [
    {"Origin": "https://evil.example"},
    {"Origin": "null"},
    {"Origin": "not a url"},
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},
    {"Sec-Fetch-Site": "cross-site", "Origin": "SELF"},
    {"Sec-Fetch-Site": "nonsense"},
])
def test_a_cross_site_post_with_the_cookie_is_refused(server: str, headers: dict[str, str]) -> None:
    with logged_in(server) as client:
        token = client.get("/dashboard/csrf").json()["csrf"]
        headers = {k: (server if v == "SELF" else v) for k, v in headers.items()}
        response = client.post("/dashboard/act", data={auth.CSRF_FIELD: token}, headers=headers)
        assert_refused(response, 403, "cross_site_request")
        response = client.post("/admin/v1/act", json={}, headers={**headers, auth.CSRF_HEADER: token})
        assert_refused(response, 403, "cross_site_request")


def test_a_foreign_origin_on_another_port_is_cross_site(server: str) -> None:
    other_port = server.rsplit(":", 1)[0] + ":1"
    with logged_in(server) as client:
        token = client.get("/dashboard/csrf").json()["csrf"]
        response = client.post("/dashboard/act", data={auth.CSRF_FIELD: token},
                               headers={"Origin": other_port})
        assert_refused(response, 403, "cross_site_request")


def test_a_cookie_post_without_the_sessions_csrf_token_is_refused(server: str) -> None:
    with logged_in(server) as client, logged_in(server) as other:
        theirs = other.get("/dashboard/csrf").json()["csrf"]
        mine = client.get("/dashboard/csrf").json()["csrf"]
        assert theirs != mine
        for data in ({}, {auth.CSRF_FIELD: ""}, {auth.CSRF_FIELD: theirs}, {auth.CSRF_FIELD: mine[:-1]}):
            response = client.post("/dashboard/act", data=data, headers={"Origin": server})
            assert_refused(response, 403, "csrf_token_invalid")
        assert_refused(client.post("/admin/v1/act", json={}), 403, "csrf_token_invalid")


def test_a_bearer_post_needs_no_csrf_token_but_is_refused_cross_site(server: str) -> None:
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert httpx2.post(f"{server}/admin/v1/act", json={}, headers=bearer).status_code == 200
    response = httpx2.post(f"{server}/admin/v1/act", json={},
                           headers={**bearer, "Origin": "https://evil.example"})
    assert_refused(response, 403, "cross_site_request")


def test_a_get_is_never_refused_for_its_origin(server: str) -> None:
    response = httpx2.get(f"{server}/admin/v1/ping", headers={
        "Authorization": f"Bearer {TOKEN}", "Origin": "https://evil.example",
        "Sec-Fetch-Site": "cross-site"})
    assert response.status_code == 200


def test_no_csrf_token_without_a_session(server: str) -> None:
    response = httpx2.get(f"{server}/dashboard/csrf", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.json() == {"csrf": None}


def test_behind_a_tls_proxy_the_dashboards_own_posts_pass() -> None:
    """A proxy serves https://admin.example.com and forwards plain HTTP with the Host kept:
    the browser's Origin differs from the service's scheme, not its host. Without
    Sec-Fetch-Site (an older browser) the host decides; with it, the browser's word does
    (also when a proxy rewrote Host)."""
    settings = make_settings()
    with serve_in_thread(make_app(settings)) as url, httpx2.Client(base_url=url) as client:
        login = client.post("/dashboard/login", data={"token": TOKEN},
                            headers={"Host": "admin.example.com",
                                     "Origin": "https://admin.example.com"})
        assert login.status_code == 303, login.text
        assert "secure" not in login.headers["set-cookie"].lower()  # the proxy is not trusted
        cookie = {auth.SESSION_COOKIE: login.cookies[auth.SESSION_COOKIE]}
        token = httpx2.get(f"{url}/dashboard/csrf", cookies=cookie).json()["csrf"]
        for headers in (
            {"Host": "admin.example.com", "Origin": "https://admin.example.com"},
            {"Host": "admin.example.com:443", "Origin": "https://admin.example.com"},
            {"Host": "internal:8080", "Origin": "https://admin.example.com",
             "Sec-Fetch-Site": "same-origin"},
        ):
            response = httpx2.post(f"{url}/dashboard/act", data={auth.CSRF_FIELD: token},
                                   headers=headers, cookies=cookie)
            assert response.status_code == 200, (headers, response.text)
        response = httpx2.post(f"{url}/dashboard/act", data={auth.CSRF_FIELD: token},
                               headers={"Host": "internal:8080",
                                        "Origin": "https://admin.example.com"}, cookies=cookie)
        assert_refused(response, 403, "cross_site_request")
