from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from freshsales_destination.freshsales.errors import (
    InvalidRequest,
    ServerError,
    Throttled,
    error_from_response,
    is_validation_5xx,
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


def test_is_validation_5xx() -> None:
    shape = parse_error_body(b'{"errors":{"code":500,"message":["Last name can\'t be blank"]}}')
    assert is_validation_5xx(500, shape)
    assert is_validation_5xx(502, parse_error_body(b'{"errors":{"code":422,"message":["x"]}}'))
    assert not is_validation_5xx(503, parse_error_body(b'{"errors":{"code":503,"message":["x"]}}'))
    assert not is_validation_5xx(500, parse_error_body(b'{"error_code":500}'))
    assert not is_validation_5xx(500, parse_error_body(b'{"message":"oops"}'))
    assert not is_validation_5xx(400, shape)


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
    assert isinstance(err, InvalidRequest)
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
