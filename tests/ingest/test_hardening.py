"""What an attacker or a clumsy operator sends to ingest: each is refused cleanly (JSON, the
right status, nothing stored), never a 500 or a silent loss."""

from __future__ import annotations

import base64

import httpx2
import orjson
import pytest

from tests.ingest.conftest import WRITE_KEY, Service, snapshot, track

BODY = orjson.dumps({"batch": [track("h-1")]})


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(b"Basic \xe9\xe9\xe9\xe9", id="latin-1-bytes"),
        pytest.param("Basic ŵķ_ünï".encode(), id="utf-8-bytes"),
        pytest.param(b"Basic " + base64.b64encode(b"\xff\xfe:"), id="user-not-utf-8"),
        pytest.param(b"Basic " + base64.b64encode(WRITE_KEY.encode())[:-1] + b"\xff", id="tail"),
        pytest.param(b"Basic d2tf\x85\xa0", id="c1-and-nbsp"),
        pytest.param(b"Basic ====", id="padding-only"),
    ],
)
def test_an_undecodable_basic_header_is_401_json(service: Service, header: bytes) -> None:
    before = snapshot(service.store)
    response = httpx2.post(
        f"{service.url}/v1/batch", content=BODY,
        headers=[(b"Content-Type", b"application/json"), (b"Authorization", header)],
    )
    assert response.status_code == 401, response.text
    assert response.json() == {"code": "unauthorized", "message": "missing or unknown write key"}
    service.sorted()
    assert snapshot(service.store) == before
    assert service.inbox_commits() == 0
