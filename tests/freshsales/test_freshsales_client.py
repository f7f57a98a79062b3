from __future__ import annotations

import json
import pickle
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx2
import pytest
from pydantic import SecretStr

from freshsales_destination.config import DestinationConfig
from freshsales_destination.errors import ConfigError, FreshsalesDestinationError
from freshsales_destination.freshsales import (
    AuthenticationFailed,
    ConnectionFailed,
    FreshsalesClient,
    FreshsalesError,
    FreshsalesStatusError,
    InvalidArgument,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    PermanentError,
    PermissionDenied,
    RequestRejected,
    RequestTimeout,
    RetryableError,
    ServerError,
    Throttled,
    TransportFailure,
    UnexpectedResponse,
)

API_KEY = "sEcReT-api-key-0123456789"
APP_TOKEN = "aPp-ToKeN-abcdef0123456789"
SUITE = "https://acme.myfreshworks.com/crm/sales"
CLASSIC = "https://acme.freshsales.io"
NOW = 1_700_000_000.0

Handler = Callable[[httpx2.Request], httpx2.Response]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Recorder:
    """A MockTransport handler that records requests and answers from a queue or a function."""

    def __init__(self, answer: Handler | httpx2.Response | None = None) -> None:
        self.requests: list[httpx2.Request] = []
        self.answer = answer

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        if callable(self.answer):
            return self.answer(request)
        if isinstance(self.answer, httpx2.Response):
            return self.answer
        return httpx2.Response(200, json={})

    @property
    def last(self) -> httpx2.Request:
        return self.requests[-1]

    def last_json(self) -> Any:
        return json.loads(self.last.content)


def make_client(
    answer: Handler | httpx2.Response | None = None,
    base_url: str = SUITE,
    **kwargs: Any,
) -> tuple[FreshsalesClient, Recorder]:
    rec = Recorder(answer)
    kwargs.setdefault("app_token", APP_TOKEN)
    client = FreshsalesClient(
        base_url,
        API_KEY,
        transport=httpx2.MockTransport(rec),
        clock=lambda: NOW,
        **kwargs,
    )
    return client, rec


@pytest.fixture
async def suite() -> AsyncIterator[tuple[FreshsalesClient, Recorder]]:
    client, rec = make_client()
    async with client:
        yield client, rec


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        assert API_KEY not in text
        assert APP_TOKEN not in text


# ---------------------------------------------------------------------------------------------
# construction


def test_refuses_non_freshworks_base_urls() -> None:
    for url in (
        "http://acme.myfreshworks.com/crm/sales",
        "https://evil.example.com",
        "https://acme.myfreshworks.com.evil.com/crm/sales",
        "ftp://acme.freshsales.io",
        "",
    ):
        with pytest.raises(ConfigError):
            FreshsalesClient(url, API_KEY)


def test_refusal_text_contains_no_secret() -> None:
    with pytest.raises(ConfigError) as info:
        FreshsalesClient("https://evil.example.com", API_KEY)
    assert_no_secret(str(info.value), repr(info.value))


def test_rejects_credentials_and_query_in_base_url_even_when_custom_allowed() -> None:
    with pytest.raises(ConfigError):
        FreshsalesClient("https://u:p@localhost:9000", API_KEY, allow_custom_base_url=True)
    with pytest.raises(ConfigError):
        FreshsalesClient("https://localhost/?x=1", API_KEY, allow_custom_base_url=True)


def test_rejects_empty_api_key() -> None:
    with pytest.raises(ConfigError):
        FreshsalesClient(SUITE, " ")


@pytest.mark.anyio
async def test_custom_base_url_allowed_when_asked() -> None:
    client, rec = make_client(base_url="http://127.0.0.1:9999/fake/", allow_custom_base_url=True)
    async with client:
        await client.get_contact(1)
    assert str(rec.last.url) == "http://127.0.0.1:9999/fake/api/contacts/1"


@pytest.mark.anyio
async def test_from_config_suite_and_classic() -> None:
    rec = Recorder()
    suite_cfg = DestinationConfig(
        domain="acme", api_key=SecretStr(API_KEY), app_token=SecretStr(APP_TOKEN)
    )
    async with FreshsalesClient.from_config(suite_cfg, httpx2.MockTransport(rec)) as client:
        assert client.base_url == SUITE
        assert client.has_app_token
        await client.create_contact({"email": "a@b.c"})
    assert str(rec.last.url) == f"{SUITE}/api/contacts"

    classic_cfg = DestinationConfig(product="classic", domain="acme", api_key=SecretStr(API_KEY))
    async with FreshsalesClient.from_config(classic_cfg, httpx2.MockTransport(rec)) as client:
        await client.create_lead({"last_name": "X"})
        assert not client.has_app_token
    assert str(rec.last.url) == f"{CLASSIC}/api/leads"

    custom = DestinationConfig(
        base_url="http://localhost:8000", allow_custom_base_url=True, api_key=SecretStr(API_KEY)
    )
    async with FreshsalesClient.from_config(custom, httpx2.MockTransport(rec)) as client:
        assert client.base_url == "http://localhost:8000"


@pytest.mark.anyio
async def test_repr_has_no_secret() -> None:
    client, _ = make_client()
    async with client:
        assert_no_secret(repr(client))
        assert "acme.myfreshworks.com" in repr(client)


# ---------------------------------------------------------------------------------------------
# URLs, headers, wrapping


@pytest.mark.anyio
@pytest.mark.parametrize("base", [SUITE, CLASSIC, SUITE + "/"])
async def test_rest_headers_and_urls(base: str) -> None:
    client, rec = make_client(base_url=base)
    async with client:
        await client.get_contact(42, include=["sales_accounts", "owner"])
    req = rec.last
    root = base.rstrip("/")
    assert req.method == "GET"
    assert req.url.path == urlpath(root) + "/api/contacts/42"
    assert req.url.params["include"] == "sales_accounts,owner"
    assert req.headers["authorization"] == f"Token token={API_KEY}"
    assert req.headers["accept"] == "application/json"
    assert req.headers["content-type"] == "application/json"
    assert req.extensions["timeout"]["read"] == 20.0


def urlpath(base: str) -> str:
    return httpx2.URL(base).path.rstrip("/")


@pytest.mark.anyio
async def test_timeout_is_per_request_and_configurable() -> None:
    client, rec = make_client(timeout=3.5)
    async with client:
        await client.get_lead(1)
    assert rec.last.extensions["timeout"] == {
        "connect": 3.5,
        "read": 3.5,
        "write": 3.5,
        "pool": 3.5,
    }


CALLS: list[tuple[str, Callable[[FreshsalesClient], Any], str, str, Any]] = [
    (
        "upsert_contact",
        lambda c: c.upsert_contact({"emails": "a@b.c"}, {"first_name": "A"}),
        "POST",
        "/api/contacts/upsert",
        {"unique_identifier": {"emails": "a@b.c"}, "contact": {"first_name": "A"}},
    ),
    (
        "create_contact",
        lambda c: c.create_contact({"email": "a@b.c"}),
        "POST",
        "/api/contacts",
        {"contact": {"email": "a@b.c"}},
    ),
    (
        "update_contact",
        lambda c: c.update_contact(7, {"job_title": "CEO"}),
        "PUT",
        "/api/contacts/7",
        {"contact": {"job_title": "CEO"}},
    ),
    ("forget_contact", lambda c: c.forget_contact(7), "DELETE", "/api/contacts/7/forget", None),
    ("delete_contact", lambda c: c.delete_contact("7"), "DELETE", "/api/contacts/7", None),
    (
        "create_lead",
        lambda c: c.create_lead({"last_name": "L"}),
        "POST",
        "/api/leads",
        {"lead": {"last_name": "L"}},
    ),
    (
        "update_lead",
        lambda c: c.update_lead(9, {"last_name": "M"}),
        "PUT",
        "/api/leads/9",
        {"lead": {"last_name": "M"}},
    ),
    ("get_lead", lambda c: c.get_lead(9), "GET", "/api/leads/9", None),
    (
        "search_contacts_by_email",
        lambda c: c.search_contacts_by_email("a@b.c"),
        "POST",
        "/api/filtered_search/contact",
        {
            "filter_rule": [
                {"attribute": "contact_email.email", "operator": "is_in", "value": "a@b.c"}
            ]
        },
    ),
    (
        "upsert_sales_account",
        lambda c: c.upsert_sales_account("Acme", {"website": "acme.io"}),
        "POST",
        "/api/sales_accounts/upsert",
        {
            "unique_identifier": {"name": "Acme"},
            "sales_account": {"name": "Acme", "website": "acme.io"},
        },
    ),
    (
        "update_sales_account",
        lambda c: c.update_sales_account(3, {"website": "x.io"}),
        "PUT",
        "/api/sales_accounts/3",
        {"sales_account": {"website": "x.io"}},
    ),
    (
        "upsert_deal",
        lambda c: c.upsert_deal("Big", {"amount": 10}),
        "POST",
        "/api/deals/upsert",
        {"unique_identifier": {"name": "Big"}, "deal": {"name": "Big", "amount": 10}},
    ),
    (
        "create_deal",
        lambda c: c.create_deal({"name": "D", "amount": 1}),
        "POST",
        "/api/deals",
        {"deal": {"name": "D", "amount": 1}},
    ),
    (
        "create_note",
        lambda c: c.create_note("hi", "Contact", 5),
        "POST",
        "/api/notes",
        {"note": {"description": "hi", "targetable_type": "Contact", "targetable_id": 5}},
    ),
    (
        "create_sales_activity",
        lambda c: c.create_sales_activity({"title": "T"}),
        "POST",
        "/api/sales_activities",
        {"sales_activity": {"title": "T"}},
    ),
    ("get_fields", lambda c: c.get_fields("contact"), "GET", "/api/settings/contacts/fields", None),
    (
        "get_fields plural",
        lambda c: c.get_fields("sales_accounts"),
        "GET",
        "/api/settings/sales_accounts/fields",
        None,
    ),
    ("get_selector", lambda c: c.get_selector("owners"), "GET", "/api/selector/owners", None),
    (
        "get_selector nested",
        lambda c: c.get_selector("deal_pipelines/4/deal_stages"),
        "GET",
        "/api/selector/deal_pipelines/4/deal_stages",
        None,
    ),
    (
        "request",
        lambda c: c.request("GET", "/api/tasks", params={"filter": "open"}),
        "GET",
        "/api/tasks",
        None,
    ),
]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("name", "call", "method", "path", "body"), CALLS, ids=[c[0] for c in CALLS]
)
async def test_typed_methods_build_wrapped_requests(
    suite: tuple[FreshsalesClient, Recorder],
    name: str,
    call: Callable[[FreshsalesClient], Any],
    method: str,
    path: str,
    body: Any,
) -> None:
    client, rec = suite
    await call(client)
    req = rec.last
    assert req.method == method
    assert req.url.path == "/crm/sales" + path
    assert req.headers["authorization"] == f"Token token={API_KEY}"
    if body is None:
        assert req.content == b""
    else:
        assert rec.last_json() == body


@pytest.mark.anyio
async def test_lookup_query_string(suite: tuple[FreshsalesClient, Recorder]) -> None:
    client, rec = suite
    await client.lookup("a+b@c.d", "email", ["contact", "lead"])
    params = rec.last.url.params
    assert params["q"] == "a+b@c.d"
    assert params["f"] == "email"
    assert params["entities"] == "contact,lead"


@pytest.mark.anyio
async def test_upsert_contact_include(suite: tuple[FreshsalesClient, Recorder]) -> None:
    client, rec = suite
    await client.upsert_contact({"emails": "a@b.c"}, {}, include="sales_accounts")
    assert rec.last.url.params["include"] == "sales_accounts"


@pytest.mark.anyio
async def test_ids_are_quoted_into_one_segment(suite: tuple[FreshsalesClient, Recorder]) -> None:
    client, rec = suite
    await client.get_contact("1/../2")
    assert rec.last.url.raw_path == b"/crm/sales/api/contacts/1%2F..%2F2"


@pytest.mark.anyio
async def test_invalid_arguments_are_refused_before_sending(
    suite: tuple[FreshsalesClient, Recorder],
) -> None:
    client, rec = suite
    with pytest.raises(InvalidArgument):
        await client.get_contact("")
    with pytest.raises(InvalidArgument):
        await client.upsert_contact({}, {"a": 1})
    with pytest.raises(InvalidArgument):
        await client.get_fields("widgets")
    with pytest.raises(InvalidArgument):
        await client.request("GET", "https://evil.example.com/api")
    with pytest.raises(InvalidArgument):
        await client.create_contact({"when": object()})
    with pytest.raises(InvalidArgument):
        await client.track_event("a@b.c", "")
    with pytest.raises(InvalidArgument):
        await client.track_page_view("a@b.c", "")
    with pytest.raises(InvalidArgument):
        await client.track_visitor("", {"x": 1})
    with pytest.raises(InvalidArgument):
        await client.track_visitor("a@b.c", {})
    assert rec.requests == []


# ---------------------------------------------------------------------------------------------
# replies


@pytest.mark.anyio
async def test_reply_unwraps_record_and_keeps_body() -> None:
    body = {"contact": {"id": 70042006456, "email": "a@b.c"}, "users": [{"id": 1}]}
    client, _ = make_client(
        httpx2.Response(
            200,
            json=body,
            headers={
                "X-RateLimit-Limit": "1000",
                "X-RateLimit-Remaining": "998",
                "X-RateLimit-Reset": str(int(NOW) + 1200),
            },
        )
    )
    async with client:
        reply = await client.upsert_contact({"emails": "a@b.c"}, {"first_name": "A"})
    assert reply.status == 200
    assert reply.data == {"id": 70042006456, "email": "a@b.c"}
    assert reply.id == 70042006456
    assert reply.body == body
    assert reply.rate.limit == 1000
    assert reply.rate.remaining == 998
    assert reply.rate.reset_after == 1200.0
    assert reply.rate.observed_at == NOW


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("response", "data"),
    [
        (httpx2.Response(200, content=b"true"), {}),
        (httpx2.Response(204), {}),
        (httpx2.Response(201, json={"x": 1}), {"x": 1}),
    ],
)
async def test_reply_for_odd_success_bodies(response: httpx2.Response, data: Any) -> None:
    client, _ = make_client(response)
    async with client:
        reply = await client.delete_contact(1)
    assert reply.data == data
    assert not reply.rate.present


@pytest.mark.anyio
async def test_unreadable_success_body_is_unexpected_response() -> None:
    client, _ = make_client(httpx2.Response(200, text="<html>login</html>"))
    async with client:
        with pytest.raises(UnexpectedResponse) as info:
            await client.get_contact(1)
    assert info.value.status == 200
    assert isinstance(info.value, PermanentError)


# ---------------------------------------------------------------------------------------------
# tracking API


@pytest.mark.anyio
@pytest.mark.parametrize("base", [SUITE, CLASSIC])
async def test_tracking_calls(base: str) -> None:
    client, rec = make_client(httpx2.Response(200, text="OK"), base_url=base)
    async with client:
        r1 = await client.track_event("a@b.c", "Signed Up", {"plan": "pro"})
        await client.track_page_view("a@b.c", "https://x.io/p", {"title": "P"})
        await client.track_visitor("a@b.c", {"first_name": "A"})
    root = urlpath(base)
    paths = [r.url.path for r in rec.requests]
    assert paths == [f"{root}/track/events", f"{root}/track/page_views", f"{root}/track/visitors"]
    bodies = [json.loads(r.content) for r in rec.requests]
    common = {"identifier": "a@b.c", "application_token": APP_TOKEN, "sdk": "python"}
    assert bodies[0] == {**common, "event": {"name": "Signed Up", "plan": "pro"}}
    assert bodies[1] == {**common, "page_view": {"url": "https://x.io/p", "title": "P"}}
    assert bodies[2] == {**common, "visitor": {"first_name": "A"}}
    for req in rec.requests:
        assert "authorization" not in req.headers  # the REST key never goes to /track
        assert req.headers["content-type"] == "application/json"
        assert req.headers["accept"] == "application/json"
    assert r1.status == 200
    assert r1.data == {}


@pytest.mark.anyio
async def test_tracking_needs_app_token() -> None:
    client, rec = make_client(app_token=None)
    async with client:
        with pytest.raises(InvalidArgument):
            await client.track_event("a@b.c", "X")
    assert rec.requests == []


@pytest.mark.anyio
async def test_tracking_error_hides_app_token() -> None:
    def echo(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(400, text=f"bad token {APP_TOKEN} in {request.content.decode()}")

    client, _ = make_client(echo)
    async with client:
        with pytest.raises(InvalidRequest) as info:
            await client.track_event("a@b.c", "X")
    err = info.value
    assert_no_secret(str(err), repr(err), err.freshsales_message, *err.messages)
    assert "[redacted]" in err.freshsales_message


# ---------------------------------------------------------------------------------------------
# error statuses and body shapes


ERROR_CASES: list[tuple[int, Any, type[FreshsalesError], tuple[str, ...], int | None]] = [
    (
        400,
        {"errors": {"code": 400, "message": ["Name has already been taken"]}},
        InvalidRequest,
        ("Name has already been taken",),
        400,
    ),
    (
        422,
        {"errors": {"code": 422, "message": ["A", "B"]}},
        InvalidRequest,
        ("A", "B"),
        422,
    ),
    (
        401,
        {"login": "failed", "message": "Incorrect or expired API key"},
        AuthenticationFailed,
        ("Incorrect or expired API key",),
        None,
    ),
    (401, {"login": "failed", "message": None}, AuthenticationFailed, ("login failed",), None),
    (403, {"errors": {"message": "Access Denied"}}, PermissionDenied, ("Access Denied",), None),
    (404, {"error_code": 404}, NotFound, (), 404),
    (404, b"", NotFound, (), None),
    (409, {"message": "Conflict here"}, RequestRejected, ("Conflict here",), None),
    (302, b"", RequestRejected, (), None),
    (405, "Method Not Allowed", MethodNotAllowed, ("Method Not Allowed",), None),
    (500, {"error_code": 500}, ServerError, (), 500),
    (502, "<html>Bad gateway</html>", ServerError, ("<html>Bad gateway</html>",), None),
    (503, {"message": "Service Unavailable"}, ServerError, ("Service Unavailable",), None),
    (408, b"", ServerError, (), None),
    # A 5xx is never a verdict, whatever its body says (reference §13.2).
    (
        500,
        {"errors": {"code": 500, "message": ["Something went wrong. Please try again later."]}},
        ServerError,
        ("Something went wrong. Please try again later.",),
        500,
    ),
    (
        500,
        {"errors": {"code": 500, "message": ["Last name can't be blank"]}},
        ServerError,
        ("Last name can't be blank",),
        500,
    ),
    (
        500,
        {"errors": {"message": ["Invalid contact status provided."]}},
        ServerError,
        ("Invalid contact status provided.",),
        None,
    ),
    (
        502,
        {"errors": {"code": 422, "message": ["Email is invalid"]}},
        ServerError,
        ("Email is invalid",),
        422,
    ),
    (
        503,
        {"errors": {"code": 503, "message": ["Temporarily unavailable"]}},
        ServerError,
        ("Temporarily unavailable",),
        503,
    ),
]


def _response(status: int, body: Any, headers: dict[str, str] | None = None) -> httpx2.Response:
    if isinstance(body, bytes):
        return httpx2.Response(status, content=body, headers=headers)
    if isinstance(body, str):
        return httpx2.Response(status, text=body, headers=headers)
    return httpx2.Response(status, json=body, headers=headers)


@pytest.mark.anyio
@pytest.mark.parametrize(("status", "body", "cls", "messages", "code"), ERROR_CASES)
async def test_error_classes_and_body_shapes(
    status: int,
    body: Any,
    cls: type[FreshsalesError],
    messages: tuple[str, ...],
    code: int | None,
) -> None:
    client, _ = make_client(
        _response(status, body, {"X-RateLimit-Remaining": "10", "X-RateLimit-Limit": "1000"})
    )
    async with client:
        with pytest.raises(FreshsalesError) as info:
            await client.upsert_contact({"emails": "a@b.c"}, {"x": 1})
    err = info.value
    assert type(err) is cls
    assert isinstance(err, FreshsalesDestinationError)
    assert isinstance(err, FreshsalesStatusError)
    assert not isinstance(err, TransportFailure)
    assert err.status == status
    assert err.messages == messages
    assert err.error_code == code
    assert err.method == "POST"
    assert err.path == "/api/contacts/upsert"
    assert err.rate is not None and err.rate.remaining == 10 and err.rate.limit == 1000
    assert str(status) in str(err)
    for m in messages:
        assert m in str(err)
    expected_kind = "retryable" if cls is ServerError else "permanent"
    assert err.kind == expected_kind
    assert err.retryable is (expected_kind == "retryable")
    assert_no_secret(str(err), repr(err))


@pytest.mark.anyio
async def test_server_error_keeps_retry_after() -> None:
    client, _ = make_client(httpx2.Response(503, headers={"Retry-After": "30"}))
    async with client:
        with pytest.raises(ServerError) as info:
            await client.get_contact(1)
    assert info.value.retry_after == 30.0
    assert isinstance(info.value, RetryableError)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("headers", "retry_after"),
    [
        ({"Retry-After": "17"}, 17.0),
        ({"Retry-After": "17", "X-RateLimit-Reset": str(int(NOW) + 900)}, 17.0),
        ({"X-RateLimit-Reset": str(int(NOW) + 900)}, 900.0),
        ({"X-RateLimit-Reset": "120"}, 120.0),
        ({"x-ratelimit-reset": str(int(NOW * 1000) + 5000)}, 5.0),
        ({}, None),
        ({"Retry-After": "soon"}, None),
    ],
)
async def test_throttled_retry_after_sources(
    headers: dict[str, str], retry_after: float | None
) -> None:
    client, _ = make_client(
        httpx2.Response(
            429, json={"error_code": 429}, headers={**headers, "X-RateLimit-Remaining": "0"}
        )
    )
    async with client:
        with pytest.raises(Throttled) as info:
            await client.track_event("a@b.c", "X")
    err = info.value
    assert err.kind == "throttled"
    assert err.status == 429
    assert err.error_code == 429
    assert err.retry_after == retry_after
    assert err.rate is not None and err.rate.remaining == 0
    assert not isinstance(err, RetryableError | PermanentError)
    assert "rate limit" in str(err)


# ---------------------------------------------------------------------------------------------
# transport failures


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("exc", "cls"),
    [
        (httpx2.ConnectTimeout("timed out"), RequestTimeout),
        (httpx2.ReadTimeout("read timed out"), RequestTimeout),
        (httpx2.PoolTimeout("pool"), RequestTimeout),
        (httpx2.ConnectError("connection refused"), ConnectionFailed),
        (httpx2.ReadError("reset by peer"), TransportFailure),
        (httpx2.RemoteProtocolError("server disconnected"), TransportFailure),
    ],
)
async def test_transport_failures_are_retryable_and_apart(
    exc: Exception, cls: type[FreshsalesError]
) -> None:
    def boom(request: httpx2.Request) -> httpx2.Response:
        raise exc

    client, _ = make_client(boom)
    async with client:
        with pytest.raises(TransportFailure) as info:
            await client.upsert_contact({"emails": "a@b.c"}, {})
    err = info.value
    assert type(err) is cls
    assert isinstance(err, RetryableError)
    assert not isinstance(err, FreshsalesStatusError)
    assert err.kind == "retryable"
    assert err.status is None
    assert err.rate is None
    assert err.path == "/api/contacts/upsert"
    assert err.__cause__ is None and err.__suppress_context__
    assert_no_secret(str(err), repr(err))


@pytest.mark.anyio
async def test_transport_error_text_with_secret_is_redacted() -> None:
    def boom(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError(f"failed with headers {dict(request.headers)}")

    client, _ = make_client(boom)
    async with client:
        with pytest.raises(ConnectionFailed) as info:
            await client.get_contact(1)
    assert_no_secret(str(info.value), repr(info.value))


# ---------------------------------------------------------------------------------------------
# secrets never appear in error text


@pytest.mark.anyio
@pytest.mark.parametrize("status", [400, 401, 403, 404, 422, 429, 500, 503])
async def test_no_secret_in_errors_even_when_the_server_echoes_it(status: int) -> None:
    def echo(request: httpx2.Request) -> httpx2.Response:
        auth = request.headers["authorization"]
        return httpx2.Response(
            status,
            json={"errors": {"code": status, "message": [f"bad header {auth}", APP_TOKEN]}},
        )

    client, _ = make_client(echo)
    async with client:
        with pytest.raises(FreshsalesError) as info:
            await client.get_contact(f"x{API_KEY}")
    err = info.value
    texts = [str(err), repr(err), err.freshsales_message, str(err.path), *err.messages]
    assert_no_secret(*texts)
    data = err.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["status"] == status and data["kind"] == err.kind
    assert_no_secret(json.dumps(data))
    restored = pickle.loads(pickle.dumps(err))
    assert type(restored) is type(err)
    assert restored.status == status and restored.messages == err.messages
    assert_no_secret(str(restored), repr(restored))
