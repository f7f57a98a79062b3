"""Webhook signatures: any X-Signature header is a verdict (match or 401), never a crash;
a source's secret never shows in its repr."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import httpx2
import orjson
import pytest

from freshsales_destination.ingest.sources import Source, SourceRegistry, verify_signature
from tests.ingest.conftest import HOOK_KEY, HOOK_SECRET, Service, make_settings, snapshot

BODY = orjson.dumps({"type": "identify", "userId": "u", "messageId": "sig-1"})
GOOD = hmac.new(HOOK_SECRET.encode(), BODY, hashlib.sha1).hexdigest()


@pytest.mark.parametrize(
    "signature",
    ["é" * 40, "\u00ff" + GOOD[1:], GOOD[:-1] + "\u00e9", "ünïcödé", "\x00" * 40, "g" * 40,
     GOOD + "0", GOOD[:-1], " ", "sha1=" + GOOD],
)
def test_a_bad_signature_of_any_shape_is_false_not_an_error(signature: str) -> None:
    assert verify_signature(HOOK_SECRET.encode(), BODY, signature) is False


def test_a_good_signature_matches_in_either_case_and_with_spaces() -> None:
    secret = HOOK_SECRET.encode()
    assert verify_signature(secret, BODY, GOOD)
    assert verify_signature(secret, BODY, GOOD.upper())
    assert verify_signature(secret, BODY, f"  {GOOD} ")


@pytest.mark.parametrize(
    "raw", ["é".encode("latin-1") * 40, "é".encode() * 20, b"\xff" * 40, GOOD[:-1].encode() + b"\xe9"]
)
def test_webhook_with_a_non_ascii_signature_is_a_401_json(service: Service, raw: bytes) -> None:
    before = snapshot(service.store)
    assert before == ((0, 0), {}, [])
    response = httpx2.post(
        f"{service.url}/webhook/{HOOK_KEY}", content=BODY,
        headers=[(b"Content-Type", b"application/json"), (b"X-Signature", raw)],
    )
    assert response.status_code == 401
    assert response.json() == {"code": "invalid_signature",
                               "message": "X-Signature does not match the body"}
    assert snapshot(service.store) == before
    service.sorted()
    assert snapshot(service.store) == before
    assert service.inbox_commits() == 0


def test_webhook_with_the_right_signature_is_accepted(service: Service) -> None:
    response = httpx2.post(f"{service.url}/webhook/{HOOK_KEY}", content=BODY,
                           headers={"Content-Type": "application/json", "X-Signature": GOOD})
    assert response.status_code == 200
    service.sorted()
    stored = service.store.get_message("hook", "sig-1")
    assert stored is not None and (stored.type, stored.status) == ("identify", "pending")


def test_a_source_repr_does_not_show_its_webhook_secret(tmp_path: Path) -> None:
    source = Source("hook", "acme", b"top-secret-value")
    assert "top-secret-value" not in repr(source)
    assert "top-secret-value" not in str(source)
    registry = SourceRegistry(make_settings(tmp_path / "q.db"))
    hook = registry.lookup(HOOK_KEY)
    assert hook is not None and hook.webhook_secret == HOOK_SECRET.encode()
    assert HOOK_SECRET not in repr(hook)
