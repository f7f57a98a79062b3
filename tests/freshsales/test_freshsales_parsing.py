from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from freshsales_destination.core.retry import RetryPolicy, decide
from freshsales_destination.freshsales.errors import (
    InvalidRequest,
    ServerError,
    Throttled,
    error_from_response,
    parse_error_body,
    redact,
)
from freshsales_destination.freshsales.ratelimit_headers import (
    MAX_RESET_SECONDS,
    MAX_RETRY_AFTER_SECONDS,
    RateLimitInfo,
    parse_rate_limit_headers,
    parse_reset,
    parse_retry_after,
)

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("0", 0.0),
        ("42", 42.0),
        ("2.5", 2.5),
        ("-3", 0.0),
        ("nan", None),
        ("inf", None),
        ("9999999", MAX_RETRY_AFTER_SECONDS),
        (format_datetime(datetime(2026, 3, 1, 12, 1, 0, tzinfo=UTC), usegmt=True), 60.0),
        ("Sun, 01 Mar 2026 11:00:00 GMT", 0.0),
        ("whenever", None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, NOW) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (" ", None),
        ("300", 300.0),  # a delta
        (str(int(NOW) + 600), 600.0),  # epoch seconds
        (str(int(NOW * 1000) + 1500), 1.5),  # epoch milliseconds
        (str(int(NOW) - 10), 0.0),  # already past
        ("010326123000", 1800.0),  # DDMMYYHHMMSS, 12:30:00 on 1 March 2026
        ("010326110000", 0.0),
        (str(int(NOW) + 86400), MAX_RESET_SECONDS),  # clamped to an hour
        ("Sun, 01 Mar 2026 12:05:00 GMT", 300.0),
        ("garbage", None),
    ],
)
def test_parse_reset(value: str | None, expected: float | None) -> None:
    assert parse_reset(value, NOW) == expected


@given(st.text(max_size=30))
def test_header_parsers_never_raise_and_stay_in_range(value: str) -> None:
    reset = parse_reset(value, NOW)
    retry = parse_retry_after(value, NOW)
    assert reset is None or 0.0 <= reset <= MAX_RESET_SECONDS
    assert retry is None or 0.0 <= retry <= MAX_RETRY_AFTER_SECONDS


def test_parse_rate_limit_headers_case_insensitive_plain_dict() -> None:
    info = parse_rate_limit_headers(
        {"x-ratelimit-limit": "1000", "X-RATELIMIT-REMAINING": "7", "x-RateLimit-Reset": "60"},
        NOW,
    )
    assert info == RateLimitInfo(observed_at=NOW, limit=1000, remaining=7, reset_after=60.0)
    assert info.present
    assert info.reset_at == NOW + 60
    assert info.throttle_delay == 60.0


def test_rate_limit_info_absent_and_bad_counts() -> None:
    info = parse_rate_limit_headers({"X-RateLimit-Remaining": "-1", "X-RateLimit-Limit": "x"}, NOW)
    assert info == RateLimitInfo(observed_at=NOW)
    assert not info.present
    assert info.reset_at is None
    assert info.throttle_delay is None


def test_retry_after_beats_reset_for_throttle_delay() -> None:
    info = RateLimitInfo(observed_at=NOW, reset_after=500.0, retry_after=5.0)
    assert info.throttle_delay == 5.0


@pytest.mark.parametrize(
    ("body", "messages", "code", "validation"),
    [
        ('{"errors":{"code":400,"message":["a","b"]}}', ("a", "b"), 400, True),
        ('{"errors":{"code":"422","message":"one"}}', ("one",), 422, True),
        ('{"errors":{"message":"Access Denied"}}', ("Access Denied",), None, True),
        ('{"errors":{"email":["is invalid"]}}', ("email is invalid",), None, False),
        ('{"errors":["x", "y"]}', ("x", "y"), None, False),
        ('{"login":"failed","message":"Incorrect or expired API key"}',
         ("Incorrect or expired API key",), None, False),
        ('{"login":"failed","message":null}', ("login failed",), None, False),
        ('{"error_code":429}', (), 429, False),
        ('{"message":"Nope"}', ("Nope",), None, False),
        ('{"error":"Bad"}', ("Bad",), None, False),
        ('"just a string"', ("just a string",), None, False),
        ("plain   text\nbody", ("plain text body",), None, False),
        ("", (), None, False),
        ("[]", (), None, False),
        ("true", (), None, False),
    ],
)
def test_parse_error_body_shapes(
    body: str, messages: tuple[str, ...], code: int | None, validation: bool
) -> None:
    parsed = parse_error_body(body.encode())
    assert parsed.messages == messages
    assert parsed.error_code == code
    assert parsed.has_validation_shape is validation


def test_parse_error_body_shortens_long_text() -> None:
    parsed = parse_error_body("x" * 5000)
    assert len(parsed.messages[0]) == 500


@given(st.binary(max_size=200))
def test_parse_error_body_never_raises(content: bytes) -> None:
    parse_error_body(content)


SOMETHING_WENT_WRONG = (
    b'{"errors":{"code":500,"message":["Something went wrong. Please try again later."]}}'
)


@pytest.mark.parametrize(
    "body",
    [
        SOMETHING_WENT_WRONG,
        b'{"errors":{"code":500,"message":["Last name can\'t be blank"]}}',
        b'{"errors":{"code":422,"message":["Email is invalid"]}}',
        b'{"errors":{"message":"Invalid contact status provided."}}',
        b'{"error_code":500}',
        b'{"message":"oops"}',
        b"<html>Bad gateway</html>",
        b"",
    ],
)
@pytest.mark.parametrize("status", [408, 500, 502, 503, 504, 507, 599])
def test_408_and_every_5xx_are_retryable_whatever_the_body(status: int, body: bytes) -> None:
    err = error_from_response(status, body, RateLimitInfo(observed_at=NOW))
    assert isinstance(err, ServerError)
    assert err.kind == "retryable" and err.retryable


@pytest.mark.parametrize("body", [SOMETHING_WENT_WRONG, b'{"error_code":429}', b""])
def test_429_is_throttled_whatever_the_body(body: bytes) -> None:
    err = error_from_response(429, body, RateLimitInfo(observed_at=NOW))
    assert isinstance(err, Throttled)
    assert err.kind == "throttled" and err.retryable


@pytest.mark.parametrize("status", [400, 422])
def test_4xx_validation_answers_are_permanent(status: int) -> None:
    body = b'{"errors":{"code":%d,"message":["Name has already been taken"]}}' % status
    err = error_from_response(status, body, RateLimitInfo(observed_at=NOW))
    assert isinstance(err, InvalidRequest)
    assert err.kind == "permanent" and not err.retryable
    assert err.messages == ("Name has already been taken",)


def test_the_transient_500_keeps_freshsales_words_for_the_user() -> None:
    err = error_from_response(500, SOMETHING_WENT_WRONG, RateLimitInfo(observed_at=NOW),
                              method="POST", path="/api/contacts/upsert")
    assert err is not None
    assert err.freshsales_message == "Something went wrong. Please try again later."
    assert str(err) == (
        "Freshsales answered 500 to POST /api/contacts/upsert: "
        "Something went wrong. Please try again later."
    )
    assert err.to_dict()["kind"] == "retryable"


def test_the_transient_500_is_retried_within_the_window_then_dead_with_its_words() -> None:
    policy = RetryPolicy()
    err = error_from_response(500, SOMETHING_WENT_WRONG, RateLimitInfo(observed_at=NOW))
    assert err is not None
    first = decide(policy, attempts=0, first_failure_at=None, now=NOW, error_kind=err.kind,
                   retry_after=err.retry_after, rand=0.0, last_error=str(err))
    assert first.action == "retry" and first.attempts_after == 1
    late = decide(policy, attempts=20, first_failure_at=NOW, now=NOW + 4 * 3600 - 60,
                  error_kind=err.kind, rand=0.0, last_error=str(err))
    assert late.action == "dead"
    assert "Something went wrong. Please try again later." in late.reason


def test_error_kind_has_one_definition() -> None:
    from freshsales_destination.core import retry
    from freshsales_destination.freshsales import errors

    assert errors.ErrorKind is retry.ErrorKind


def test_error_from_response_success_is_none() -> None:
    rate = RateLimitInfo(observed_at=NOW)
    for status in (200, 201, 204, 299):
        assert error_from_response(status, b"", rate) is None


def test_error_from_response_classes_and_redaction() -> None:
    rate = RateLimitInfo(observed_at=NOW, retry_after=9.0, reset_after=100.0)
    err = error_from_response(
        500,
        b'{"errors":{"code":500,"message":["key SECRETKEY is bad"]}}',
        rate,
        method="PUT",
        path="/api/contacts/SECRETKEY",
        secrets=["SECRETKEY"],
    )
    assert isinstance(err, ServerError)
    assert "SECRETKEY" not in str(err) and "SECRETKEY" not in repr(err)
    assert err.path == "/api/contacts/[redacted]"
    throttled = error_from_response(429, b"", rate)
    assert isinstance(throttled, Throttled) and throttled.retry_after == 9.0
    no_retry_after = RateLimitInfo(observed_at=NOW, reset_after=100.0)
    throttled = error_from_response(429, b"", no_retry_after)
    assert isinstance(throttled, Throttled) and throttled.retry_after == 100.0
    server = error_from_response(504, b"", no_retry_after)
    assert isinstance(server, ServerError) and server.retry_after is None


def test_redact_ignores_trivial_secrets() -> None:
    assert redact("abc", ["", "a"]) == "abc"
    assert redact("token=abcd1234!", ["abcd1234"]) == "token=[redacted]!"
