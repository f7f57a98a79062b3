from __future__ import annotations

import httpx2

from tests.ingest.conftest import WRITE_KEY, Service


def test_identify_is_stored(service: Service) -> None:
    r = httpx2.post(
        f"{service.url}/v1/identify",
        json={"writeKey": WRITE_KEY, "userId": 42, "messageId": "m1", "traits": {"email": "a@b.co"}},
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"success": True}
    service.sorted()
    stored = service.store.get_message("web", "m1")
    assert stored is not None
    assert stored.status == "pending"
    msg = stored.normalized()
    assert msg["userId"] == "42"
    assert msg["type"] == "identify"
    assert "receivedAt" in msg and "timestamp" in msg and "originalTimestamp" in msg
