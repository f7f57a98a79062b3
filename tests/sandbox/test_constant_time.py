"""The sandbox's API key and tracking token: compared in constant time (hmac.compare_digest),
and any guess, of any shape, is a 401, never a crash."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

import pytest

from tests.sandbox.conftest import KEY, TOKEN, Api

GUESSES = [b"Token token=" + KEY.encode()[:-1], b"Token token=" + KEY.encode() + b"x",
           b"Token token=\xe9\xe9", "Token token=ключ".encode(), b"token token=" + KEY.encode(),
           b"Token token=", b"\xff" * 40]


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


@pytest.mark.parametrize("header", GUESSES)
def test_a_wrong_api_key_of_any_shape_is_401(
    api: Api, compared: list[tuple[Any, Any]], header: bytes
) -> None:
    response = api.client.get("/crm/sales/api/contacts/filters",
                              headers=[(b"Authorization", header)])
    assert response.status_code == 401
    assert compared and all(isinstance(a, bytes) and isinstance(b, bytes) for a, b in compared)
    assert any(b == f"Token token={KEY}".encode() for _, b in compared)


def test_the_right_api_key_passes_through_compare_digest(
    api: Api, compared: list[tuple[Any, Any]]
) -> None:
    assert api.get("/contacts/filters").status_code == 200
    assert (f"Token token={KEY}".encode(), f"Token token={KEY}".encode()) in compared


@pytest.mark.parametrize(
    "token", [TOKEN[:-1], TOKEN + "x", "ключ", "\\udc80", "\\u0000" + TOKEN, TOKEN.upper()]
)
def test_a_wrong_tracking_token_of_any_shape_is_refused(
    api: Api, compared: list[tuple[Any, Any]], token: str
) -> None:
    rest = '"sdk": "ruby", "identifier": "a@x.io", "event": {"name": "E"}'
    body = ('{"application_token": "' + token + '", ' + rest + "}").encode()  # escapes as sent
    response = api.client.post("/crm/sales/track/events", content=body,
                               headers={"Content-Type": "application/json"})
    assert response.status_code in (400, 401), response.text  # never a 500
    if response.status_code == 401:
        assert any(b == TOKEN.encode() for _, b in compared)
    else:  # only a body the sandbox cannot read as JSON (a lone surrogate)
        assert "udc80" in token


def test_the_right_tracking_token_passes_through_compare_digest(
    api: Api, compared: list[tuple[Any, Any]]
) -> None:
    body = {"application_token": TOKEN, "sdk": "ruby", "identifier": "a@x.io",
            "event": {"name": "E"}}
    assert api.client.post("/crm/sales/track/events", json=body).status_code == 200
    assert (TOKEN.encode(), TOKEN.encode()) in compared
