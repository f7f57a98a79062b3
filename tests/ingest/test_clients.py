"""Real clients against the real server: analytics-python, and the Node SDK's auth forms."""

from __future__ import annotations

import base64
import gzip
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2
import orjson
import pytest
from segment.analytics.client import Client

from tests.ingest.conftest import HOOK_KEY, WRITE_KEY, Service, snapshot, track


def _client(service: Service, errors: list[Exception], **options: Any) -> Client:
    def on_error(error: Exception, batch: object) -> None:
        errors.append(error)

    return Client(
        WRITE_KEY, host=service.url, gzip=True, on_error=on_error, max_retries=1, **options
    )


def test_analytics_python_sync_mode_lands_normalised(service: Service) -> None:
    errors: list[Exception] = []
    client = _client(service, errors, sync_mode=True)
    when = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    client.identify(user_id=42, traits={"email": "a@b.co"}, message_id="py-1", timestamp=when)
    client.track(
        user_id="u1", event="Order Completed", properties={"revenue": 19.99}, message_id="py-2"
    )
    client.page(anonymous_id="anon-1", name="Pricing", message_id="py-3")
    client.screen(user_id="u1", name="Home", message_id="py-4")
    client.group(user_id="u1", group_id=7, traits={"name": "Initech"}, message_id="py-5")
    client.alias(previous_id="anon-1", user_id="u1", message_id="py-6")
    assert errors == []
    service.sorted()

    identify = service.store.get_message("web", "py-1")
    assert identify is not None and identify.status == "pending" and identify.type == "identify"
    msg = identify.normalized()
    assert msg["userId"] == "42"  # numeric id became a string
    assert "anonymousId" not in msg  # the client sends null: null means absent
    assert msg["traits"] == {"email": "a@b.co"}
    assert msg["context"]["library"]["name"] == "analytics-python"
    assert msg["originalTimestamp"] == "2024-05-01T12:00:00.000Z"
    received = datetime.fromisoformat(msg["receivedAt"])
    corrected = datetime.fromisoformat(msg["timestamp"])
    # timestamp = receivedAt - (sentAt - originalTimestamp): the sentAt was "just now", so the
    # corrected time is close to the original one, whatever the client clock says.
    sent_at = datetime.fromisoformat(msg["sentAt"])
    # (The stored strings keep milliseconds: allow for the truncation of each of them.)
    assert abs(corrected - (received - (sent_at - when))) <= timedelta(milliseconds=3)
    assert "writeKey" not in msg
    raw = orjson.loads(identify.raw)
    assert raw["userId"] == "42" or raw["userId"] == 42
    assert "writeKey" not in raw

    for message_id, kind in [("py-2", "track"), ("py-3", "page"), ("py-4", "screen"),
                             ("py-5", "group"), ("py-6", "alias")]:
        stored = service.store.get_message("web", message_id)
        assert stored is not None, message_id
        assert (stored.type, stored.status) == (kind, "pending"), stored.reason
    group = service.store.get_message("web", "py-5")
    assert group is not None and group.normalized()["groupId"] == "7"


def test_analytics_python_threaded_batches_with_flush(service: Service) -> None:
    errors: list[Exception] = []
    client = _client(service, errors, upload_size=50, upload_interval=0.05)
    try:
        for i in range(120):
            client.track(user_id=f"u{i % 7}", event="Viewed", message_id=f"th-{i}")
        client.flush()
    finally:
        client.join()
    assert errors == []
    service.sorted()
    assert service.store.count_by_status() == {"pending": 120}
    stored = service.store.get_message("web", "th-119")
    assert stored is not None and stored.normalized()["event"] == "Viewed"


def test_analytics_python_sees_401_for_a_wrong_key_and_does_not_retry(service: Service) -> None:
    errors: list[Exception] = []

    def on_error(error: Exception, batch: object) -> None:
        errors.append(error)

    client = Client(
        "not-a-key", host=service.url, gzip=True, on_error=on_error, max_retries=3,
        upload_interval=0.05,
    )
    try:
        client.track(user_id="u1", event="x", message_id="nope")
        client.flush()
    finally:
        client.join()
    assert len(errors) == 1
    error = errors[0]
    assert getattr(error, "status", None) == 401
    assert getattr(error, "code", None) == "unauthorized"
    service.sorted()
    assert snapshot(service.store) == ((0, 0), {}, [])
    assert service.inbox_commits() == 0
    assert service.ingest_counters().requests == 1  # a 4xx is not retried


def _basic(value: str) -> str:
    return "Basic " + base64.b64encode(value.encode()).decode()


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"Authorization": _basic(f"{WRITE_KEY}:")}, id="basic-with-colon"),
        pytest.param({"Authorization": _basic(WRITE_KEY)}, id="basic-without-colon"),
    ],
)
def test_node_style_basic_auth(service: Service, headers: dict[str, str]) -> None:
    body = {
        "batch": [track("node-1", timestamp="2024-05-01T12:00:00.000Z")],
        "sentAt": "2024-05-01T12:00:10.000Z",
        "context": {"library": {"name": "analytics-node-next", "version": "latest"}},
        "_metadata": {"nodeVersion": "20"},
    }
    r = httpx2.post(
        f"{service.url}/v1/batch",
        content=gzip.compress(orjson.dumps(body)),
        headers={**headers, "Content-Type": "application/json", "Content-Encoding": "gzip",
                 "User-Agent": "analytics-node-next/latest"},
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"success": True}
    service.sorted()
    stored = service.store.get_message("web", "node-1")
    assert stored is not None and stored.status == "pending"
    msg = stored.normalized()
    assert msg["context"]["library"]["name"] == "analytics-node-next"
    # The client clock ran 10 s behind the send time: the event happened 10 s before receipt.
    received = datetime.fromisoformat(msg["receivedAt"])
    assert datetime.fromisoformat(msg["timestamp"]) == received - timedelta(seconds=10)
    assert msg["originalTimestamp"] == "2024-05-01T12:00:00.000Z"


def test_bearer_token_with_body_write_key(service: Service) -> None:
    r = httpx2.post(
        f"{service.url}/v1/track",
        json={"writeKey": WRITE_KEY, **track("bearer-1")},
        headers={"Authorization": "Bearer some.oauth.token"},
    )
    assert r.status_code == 200, r.text
    service.sorted()
    assert service.store.get_message("web", "bearer-1") is not None


def test_bearer_token_without_body_write_key_is_401(service: Service) -> None:
    r = httpx2.post(
        f"{service.url}/v1/track",
        json=track("bearer-2"),
        headers={"Authorization": "Bearer some.oauth.token"},
    )
    assert r.status_code == 401
    assert set(r.json()) == {"code", "message"}
    service.sorted()
    assert snapshot(service.store) == ((0, 0), {}, [])
    assert service.inbox_commits() == 0


def test_body_write_key_without_any_header(service: Service) -> None:
    r = httpx2.post(
        f"{service.url}/v1/import", json={"writeKey": WRITE_KEY, "batch": [track("imp-1")]}
    )
    assert r.status_code == 200, r.text
    service.sorted()
    stored = service.store.get_message("web", "imp-1")
    assert stored is not None and stored.source == "web"


@pytest.mark.parametrize("kind", ["identify", "track", "page", "screen", "group", "alias"])
def test_every_single_endpoint_sets_the_type(service: Service, kind: str) -> None:
    body: dict[str, Any] = {
        "writeKey": WRITE_KEY, "userId": "u1", "messageId": f"one-{kind}", "type": "ignored",
        "event": "E", "groupId": "g1", "previousId": "old",
    }
    r = httpx2.post(f"{service.url}/v1/{kind}", json=body)
    assert r.status_code == 200, r.text
    service.sorted()
    stored = service.store.get_message("web", f"one-{kind}")
    assert stored is not None
    assert (stored.type, stored.status) == (kind, "pending")
    assert stored.normalized()["type"] == kind


def test_webhook_single_and_array_with_signature(service: Service) -> None:
    import hashlib
    import hmac

    from tests.ingest.conftest import HOOK_SECRET

    one = orjson.dumps({"type": "identify", "userId": "u9", "messageId": "wh-1"})
    many = orjson.dumps([
        {"type": "track", "userId": "u9", "event": "E", "messageId": "wh-2"},
        {"type": "delete", "userId": "u9", "messageId": "wh-3"},
    ])
    for body in (one, many):
        signature = hmac.new(HOOK_SECRET.encode(), body, hashlib.sha1).hexdigest()
        r = httpx2.post(
            f"{service.url}/webhook/{HOOK_KEY}", content=body,
            headers={"Content-Type": "application/json", "X-Signature": signature},
        )
        assert r.status_code == 200, r.text
    service.sorted()
    for message_id, kind in [("wh-1", "identify"), ("wh-2", "track"), ("wh-3", "delete")]:
        stored = service.store.get_message("hook", message_id)
        assert stored is not None and (stored.type, stored.status) == (kind, "pending")


def test_webhook_without_secret_needs_no_signature(service: Service) -> None:
    r = httpx2.post(
        f"{service.url}/webhook/{WRITE_KEY}",
        json={"type": "identify", "userId": "u9", "messageId": "wh-plain"},
    )
    assert r.status_code == 200, r.text
    service.sorted()
    assert service.store.get_message("web", "wh-plain") is not None


def test_health_and_readiness(service: Service) -> None:
    assert httpx2.get(f"{service.url}/healthz").status_code == 200
    ready = httpx2.get(f"{service.url}/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}
