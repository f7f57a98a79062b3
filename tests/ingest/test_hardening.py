"""What an attacker or a clumsy operator sends to ingest: each is refused cleanly (JSON, the
right status, nothing stored), never a 500 or a silent loss."""

from __future__ import annotations

import base64
import gzip
import hashlib
import hmac
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx2
import orjson
import pytest

from freshsales_destination.config import settings_from_dict
from freshsales_destination.service import build_app
from freshsales_destination.store.sqlite import SQLiteStore
from tests.ingest.conftest import (
    HOOK_KEY,
    HOOK_SECRET,
    WRITE_KEY,
    Service,
    snapshot,
    track,
    wait_sorted,
)
from tests.support.server import serve_in_thread

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


@pytest.mark.parametrize("path", ["/v1/track", "/v1/batch", "/v1/import", "/v1/identify"])
@pytest.mark.parametrize("auth", ["basic", "body"])
def test_a_webhook_sources_key_is_refused_on_the_tracking_api(
    service: Service, path: str, auth: str
) -> None:
    """Anyone who saw the webhook URL holds its write key: without the signature check the
    tracking paths would let them post as that source."""
    before = snapshot(service.store)
    message = track("forged-1")
    body: dict[str, object] = {"batch": [message]} if path in ("/v1/batch", "/v1/import") else message
    if auth == "body":
        response = httpx2.post(f"{service.url}{path}", json={"writeKey": HOOK_KEY, **body})
    else:
        response = httpx2.post(f"{service.url}{path}", json=body, auth=(HOOK_KEY, ""))
    assert response.status_code == 401, response.text
    assert response.json()["code"] == "webhook_only"
    assert HOOK_KEY not in response.text and HOOK_SECRET not in response.text
    service.sorted()
    assert snapshot(service.store) == before
    assert service.inbox_commits() == 0


def test_accept_tracking_api_lets_a_webhook_source_use_both(tmp_path: Path) -> None:
    settings = settings_from_dict({
        "store": {"url": f"sqlite:///{tmp_path / 'q.db'}"},
        "sources": [{"write_key": HOOK_KEY, "destination": "acme", "name": "hook",
                     "webhook_secret": HOOK_SECRET, "accept_tracking_api": True}],
        "destinations": {"acme": {"domain": "acme", "api_key": "fs-api-key"}},
    })
    store = SQLiteStore(tmp_path / "q.db")
    store.open()
    app = build_app(settings, store, deliver=False)
    try:
        with serve_in_thread(app) as url:
            tracked = httpx2.post(f"{url}/v1/track", json=track("both-1"), auth=(HOOK_KEY, ""))
            assert tracked.status_code == 200, tracked.text
            raw = orjson.dumps(track("both-2"))
            unsigned = httpx2.post(f"{url}/webhook/{HOOK_KEY}", content=raw,
                                   headers={"Content-Type": "application/json"})
            assert unsigned.status_code == 401  # the webhook still needs its signature
            signature = hmac.new(HOOK_SECRET.encode(), raw, hashlib.sha1).hexdigest()
            signed = httpx2.post(f"{url}/webhook/{HOOK_KEY}", content=raw, headers={
                "Content-Type": "application/json", "X-Signature": signature})
            assert signed.status_code == 200, signed.text
            wait_sorted(app)
            for message_id in ("both-1", "both-2"):
                stored = store.get_message("hook", message_id)
                assert stored is not None and stored.status == "pending"
    finally:
        store.close()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/healthz/"), ("GET", "/readyz/"), ("GET", "//healthz"),
        ("POST", "/v1/track/"), ("POST", "/v1/batch/"), ("POST", f"/webhook/{HOOK_KEY}/"),
        ("GET", "/v1/"), ("GET", "/nothing/here/"), ("GET", "/sandbox/"),
    ],
)
def test_no_redirect_is_built_from_the_host_header(
    service: Service, method: str, path: str
) -> None:
    response = httpx2.request(
        method, f"{service.url}{path}", headers={"Host": "evil.example"}, content=b"{}",
        follow_redirects=False,
    )
    assert response.status_code == 404, (response.status_code, response.headers)
    assert "location" not in response.headers
    assert response.headers["content-type"].startswith("application/json")
    assert set(response.json()) == {"code", "message"}
    assert "evil.example" not in response.text


def _chunks(*parts: bytes) -> Iterator[bytes]:
    yield from parts


GOOD_GZIP = gzip.compress(orjson.dumps({"writeKey": WRITE_KEY, "batch": [track("gz-1")]}))
SECOND = gzip.compress(orjson.dumps({"writeKey": WRITE_KEY, "batch": [track("gz-2")]}))


@pytest.mark.parametrize(
    ("encoding", "content"),
    [
        pytest.param("gzip", GOOD_GZIP + SECOND, id="second-member"),
        pytest.param("gzip", GOOD_GZIP + b"trailing garbage", id="trailing-bytes"),
        pytest.param("gzip", GOOD_GZIP + b"\x00", id="one-nul-byte"),
        pytest.param("gzip", _chunks(GOOD_GZIP, b"x"), id="trailing-in-a-later-chunk"),
        pytest.param("gzip", _chunks(GOOD_GZIP[:10], GOOD_GZIP[10:], SECOND), id="chunked"),
        pytest.param("x-gzip", GOOD_GZIP + SECOND, id="x-gzip"),
        pytest.param(
            "deflate",
            zlib.compress(orjson.dumps({"writeKey": WRITE_KEY, "batch": [track("gz-3")]})) + b"!",
            id="deflate-trailing",
        ),
    ],
)
def test_a_compressed_body_with_more_after_its_end_is_400(
    service: Service, encoding: str, content: bytes | Iterator[bytes]
) -> None:
    before = snapshot(service.store)
    response = httpx2.post(
        f"{service.url}/v1/batch", content=content,
        headers={"Content-Type": "application/json", "Content-Encoding": encoding},
    )
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invalid_encoding"
    service.sorted()
    assert snapshot(service.store) == before
    assert service.inbox_commits() == 0


def test_one_gzip_member_alone_is_still_accepted(service: Service) -> None:
    response = httpx2.post(
        f"{service.url}/v1/batch", content=_chunks(GOOD_GZIP[:7], GOOD_GZIP[7:]),
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert response.status_code == 200, response.text
    service.sorted()
    assert service.store.get_message("web", "gz-1") is not None
