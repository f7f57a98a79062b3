"""Hostile and broken requests: each is refused whole with a JSON {code, message} and leaves
the store exactly as it was; per-message problems inside a good request cost only that message."""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import hmac
import logging
import sqlite3
import threading
import zlib
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx2
import orjson
import pytest

from freshsales_destination.errors import StoreUnavailable
from freshsales_destination.ingest import body as body_module
from freshsales_destination.ingest.body import read_limited
from freshsales_destination.ingest.responses import IngestError
from freshsales_destination.service import build_app
from freshsales_destination.store.base import InboxEntry, NewMessage
from freshsales_destination.store.sqlite import SQLiteStore
from tests.ingest.conftest import (
    HOOK_KEY,
    HOOK_SECRET,
    WRITE_KEY,
    Service,
    batch_body,
    make_settings,
    snapshot,
    track,
    wait_sorted,
)
from tests.support.server import serve_in_thread

JSON = {"Content-Type": "application/json"}


def _basic(value: str) -> str:
    return "Basic " + base64.b64encode(value.encode()).decode()


def _nested(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


def _gzip_bomb() -> bytes:
    """A valid batch whose one string inflates to 50 MB; about 50 KB on the wire."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts = [compressor.compress(
        b'{"writeKey":"' + WRITE_KEY.encode() + b'","batch":[{"type":"track","userId":"u",'
        b'"event":"'
    )]
    block = b"0" * (1 << 20)
    for _ in range(50):
        parts.append(compressor.compress(block))
    parts.append(compressor.compress(b'"}]}'))
    parts.append(compressor.flush())
    return b"".join(parts)


GZIP_BOMB = _gzip_bomb()


def _bad_requests() -> Iterator[Any]:
    """(id, path, content, headers, expected status, expected code)."""
    ok = orjson.dumps(batch_body(track("never-1")))
    yield "malformed-json", "/v1/batch", b'{"writeKey":"' + WRITE_KEY.encode() + b'","batch":[', \
        JSON, 400, "invalid_json"
    yield "empty-body", "/v1/batch", b"", JSON, 400, "invalid_json"
    yield "wrong-content-type", "/v1/batch", ok, {"Content-Type": "application/xml"}, \
        415, "unsupported_media_type"
    yield "form-content-type", "/v1/track", b"writeKey=x", \
        {"Content-Type": "application/x-www-form-urlencoded"}, 415, "unsupported_media_type"
    big = {"writeKey": WRITE_KEY, **track("never-2", properties={"x": "y" * 40_000})}
    yield "oversize-single-message", "/v1/track", orjson.dumps(big), JSON, 413, \
        "message_too_large"
    many_big = batch_body(*[track(f"never-big-{i}", properties={"x": "y" * 30_000})
                            for i in range(20)])
    yield "oversize-batch", "/v1/batch", orjson.dumps(many_big), JSON, 413, "request_too_large"
    yield "gzip-bomb", "/v1/batch", GZIP_BOMB, {**JSON, "Content-Encoding": "gzip"}, 413, \
        "request_too_large"
    yield "corrupt-gzip", "/v1/batch", b"\x1f\x8b\x08\x00garbage-garbage", \
        {**JSON, "Content-Encoding": "gzip"}, 400, "invalid_encoding"
    yield "truncated-gzip", "/v1/batch", gzip.compress(ok)[:-12], \
        {**JSON, "Content-Encoding": "gzip"}, 400, "invalid_encoding"
    yield "brotli", "/v1/batch", ok, {**JSON, "Content-Encoding": "br"}, 415, \
        "unsupported_encoding"
    yield "body-is-array", "/v1/batch", orjson.dumps([track("never-3")]), JSON, 400, \
        "invalid_body"
    yield "body-is-string", "/v1/track", b'"hello"', JSON, 400, "invalid_body"
    yield "body-is-null", "/v1/identify", b"null", JSON, 400, "invalid_body"
    yield "deep-nesting-body", "/v1/batch", _nested(5000), JSON, 400, "invalid_json"
    deep_message = (b'{"writeKey":"' + WRITE_KEY.encode() + b'","batch":[{"type":"track",'
                    b'"userId":"u","event":"e","messageId":"never-4","properties":'
                    + _nested(400) + b"}]}")
    yield "deep-nesting-message", "/v1/batch", deep_message, JSON, 400, "invalid_json"
    deep_non_object = (b'{"writeKey":"' + WRITE_KEY.encode() + b'","batch":['
                       + b"[" * 254 + b"]" * 254 + b"]}")
    yield "deep-nesting-non-object", "/v1/batch", deep_non_object, JSON, 400, "invalid_json"
    invalid_utf8 = (b'{"writeKey":"' + WRITE_KEY.encode()
                    + b'","batch":[{"type":"track","userId":"u","event":"\xff\xfe"}]}')
    yield "invalid-utf8", "/v1/batch", invalid_utf8, JSON, 400, "invalid_json"
    lone_surrogate = (b'{"writeKey":"' + WRITE_KEY.encode()
                      + b'","batch":[{"type":"track","userId":"u","event":"\\ud800"}]}')
    yield "lone-surrogate", "/v1/batch", lone_surrogate, JSON, 400, "invalid_json"
    yield "batch-not-array", "/v1/batch", orjson.dumps({"writeKey": WRITE_KEY, "batch": {}}), \
        JSON, 400, "invalid_batch"
    yield "batch-missing", "/v1/import", orjson.dumps({"writeKey": WRITE_KEY}), JSON, 400, \
        "invalid_batch"
    too_many = batch_body(*[{"type": "track"} for _ in range(2501)])
    yield "2501-messages", "/v1/batch", orjson.dumps(too_many), JSON, 413, "batch_too_large"
    yield "missing-write-key", "/v1/batch", orjson.dumps({"batch": [track("never-5")]}), JSON, \
        401, "unauthorized"
    yield "unknown-write-key", "/v1/batch", \
        orjson.dumps({"writeKey": "wk_guess", "batch": [track("never-6")]}), JSON, 401, \
        "unauthorized"
    yield "write-key-not-string", "/v1/track", \
        orjson.dumps({"writeKey": 12345, **track("never-7")}), JSON, 401, "unauthorized"
    yield "unknown-basic-user", "/v1/batch", ok, {**JSON, "Authorization": _basic("wk_guess:")}, \
        401, "unauthorized"
    yield "malformed-basic", "/v1/batch", ok, {**JSON, "Authorization": "Basic %%%not-b64"}, \
        401, "unauthorized"
    yield "bearer-without-key", "/v1/batch", orjson.dumps({"batch": [track("never-8")]}), \
        {**JSON, "Authorization": "Bearer token"}, 401, "unauthorized"
    hook_body = orjson.dumps({"type": "identify", "userId": "u", "messageId": "never-9"})
    yield "webhook-bad-signature", f"/webhook/{HOOK_KEY}", hook_body, \
        {**JSON, "X-Signature": "0" * 40}, 401, "invalid_signature"
    yield "webhook-missing-signature", f"/webhook/{HOOK_KEY}", hook_body, JSON, 401, \
        "invalid_signature"
    signed_other = hmac.new(HOOK_SECRET.encode(), b"{}", hashlib.sha1).hexdigest()
    yield "webhook-signature-of-other-body", f"/webhook/{HOOK_KEY}", hook_body, \
        {**JSON, "X-Signature": signed_other}, 401, "invalid_signature"
    garbage = b"{not json"
    yield "webhook-bad-signature-checked-before-json", f"/webhook/{HOOK_KEY}", garbage, \
        {**JSON, "X-Signature": "0" * 40}, 401, "invalid_signature"
    yield "webhook-unknown-key", "/webhook/wk_guess", hook_body, JSON, 401, "unauthorized"
    yield "webhook-scalar", f"/webhook/{WRITE_KEY}", b"42", JSON, 400, "invalid_body"
    yield "unknown-endpoint", "/v1/delete", ok, JSON, 404, "not_found"
    yield "unknown-deep-endpoint", "/v1/batch/extra", ok, JSON, 404, "not_found"


BAD = list(_bad_requests())


@pytest.mark.parametrize(
    ("path", "content", "headers", "status", "code"),
    [pytest.param(*case[1:], id=case[0]) for case in BAD],
)
def test_bad_request_is_refused_whole_and_changes_nothing(
    service: Service, path: str, content: bytes, headers: dict[str, str], status: int, code: str
) -> None:
    seed = httpx2.post(f"{service.url}/v1/batch", json=batch_body(track("seed-1"), track("seed-2")))
    assert seed.status_code == 200
    service.sorted()
    before = snapshot(service.store)
    assert before[0] == (0, 0) and before[1] == {"pending": 2}
    commits_before = service.inbox_commits()
    counters_before = service.ingest_counters().refused

    r = httpx2.post(f"{service.url}{path}", content=content, headers=headers, timeout=30)

    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"code", "message"}
    assert body["code"] == code
    assert isinstance(body["message"], str) and body["message"]
    assert snapshot(service.store) == before  # nothing in the inbox, nothing in messages...
    service.sorted()
    assert snapshot(service.store) == before  # ...and nothing sorted out of it later
    assert service.inbox_commits() == commits_before
    if status != 404:
        assert service.ingest_counters().refused == counters_before + 1


def test_wrong_method_is_json_405(service: Service) -> None:
    r = httpx2.get(f"{service.url}/v1/batch")
    assert r.status_code == 405
    assert r.headers["allow"] == "POST, OPTIONS"
    assert set(r.json()) == {"code", "message"}


def test_chunked_oversize_body_without_content_length(service: Service) -> None:
    before = snapshot(service.store)
    assert before == ((0, 0), {}, [])

    def chunks() -> Iterator[bytes]:
        yield b'{"writeKey":"' + WRITE_KEY.encode() + b'","batch":['
        for i in range(40):
            yield orjson.dumps(track(f"chunk-{i}", properties={"x": "y" * 20_000})) + b","
        yield orjson.dumps(track("chunk-last")) + b"]}"

    r = httpx2.post(f"{service.url}/v1/batch", content=chunks(), headers=JSON, timeout=30)
    assert r.status_code == 413
    assert r.json()["code"] == "request_too_large"
    assert snapshot(service.store) == before
    service.sorted()
    assert snapshot(service.store) == before
    assert service.inbox_commits() == 0


def test_exactly_at_the_limits_is_accepted(service: Service) -> None:
    messages = [{"type": "track", "userId": "u", "event": "e", "messageId": f"lim-{i}"}
                for i in range(2500)]
    r = httpx2.post(f"{service.url}/v1/batch", json=batch_body(*messages))
    assert r.status_code == 200, r.text
    service.sorted()
    assert service.store.count_by_status() == {"pending": 2500}
    assert service.store.inbox_count() == (0, 0)


# -- the gzip bomb is refused without being inflated ---------------------------------------------


class _CountingInflater:
    def __init__(self, inner: Any, produced: list[int]) -> None:
        self._inner = inner
        self._produced = produced

    def decompress(self, data: bytes, max_length: int = 0) -> bytes:
        out: bytes = self._inner.decompress(data, max_length)
        self._produced.append(len(out))
        return out

    def flush(self, *args: int) -> bytes:
        out: bytes = self._inner.flush(*args)
        self._produced.append(len(out))
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


async def _chunked(data: bytes, size: int, pulled: list[int]) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        pulled.append(1)
        yield data[start : start + size]


def test_read_limited_refuses_a_gzip_bomb_without_inflating_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    produced: list[int] = []
    real = zlib.decompressobj
    monkeypatch.setattr(
        body_module.zlib, "decompressobj", lambda *a: _CountingInflater(real(*a), produced)
    )
    pulled: list[int] = []
    limit = 500 * 1024
    assert len(GZIP_BOMB) < 200 * 1024 < 50 << 20  # small on the wire, 50 MB inflated

    with pytest.raises(IngestError) as refused:
        asyncio.run(read_limited(
            _chunked(GZIP_BOMB, 8192, pulled), encoding="gzip", limit=limit
        ))

    assert refused.value.status == 413
    # It stopped just past the limit: never more than the limit plus one byte was produced,
    # and it did not even read the rest of the compressed stream.
    assert sum(produced) <= limit + 1
    assert len(pulled) * 1024 < len(GZIP_BOMB) // 4


def test_read_limited_inflates_a_normal_gzip_body() -> None:
    data = orjson.dumps(batch_body(*[track(f"g-{i}") for i in range(100)]))
    pulled: list[int] = []
    out = asyncio.run(read_limited(
        _chunked(gzip.compress(data), 100, pulled), encoding="gzip", limit=len(data)
    ))
    assert out == data
    with pytest.raises(IngestError):
        asyncio.run(read_limited(
            _chunked(gzip.compress(data), 100, []), encoding="gzip", limit=len(data) - 1
        ))


# -- per-message problems ------------------------------------------------------------------------


def test_one_bad_message_never_costs_the_good_ones(service: Service) -> None:
    body = batch_body(
        track("good-1"),
        42,
        "a string",
        track("big-1", properties={"x": "y" * 33_000}),
        {"type": "identify", "messageId": "noid-1", "traits": {"a": 1}},
        {"type": "track", "userId": "u1", "messageId": "noevent-1"},
        {"type": "group", "userId": "u1", "messageId": "nogroup-1"},
        {"type": "teleport", "userId": "u1", "messageId": "unknown-1"},
        {"type": "delete", "userId": "u1", "messageId": "delete-1"},
        {"userId": "u1", "messageId": "notype-1"},
        {"type": "identify", "userId": {"id": 1}, "anonymousId": "a", "messageId": "objid-1"},
        {"type": "identify", "userId": "u1", "traits": [1], "messageId": "badtraits-1"},
        track("filtered-1", integrations={"All": False}),
        track("optin-1", integrations={"All": False, "Freshsales": True}),
        track("optout-1", integrations={"Freshsales": False}),
        {"type": "identify", "userId": "u2", "messageId": "good-2"},
    )
    r = httpx2.post(f"{service.url}/v1/batch", json=body)
    assert r.status_code == 200, r.text
    assert r.json() == {"success": True}
    service.sorted()

    def status(message_id: str) -> tuple[str, str | None]:
        stored = service.store.get_message("web", message_id)
        assert stored is not None, message_id
        return stored.status, stored.reason

    assert status("good-1") == ("pending", None)
    assert status("good-2") == ("pending", None)
    assert status("optin-1") == ("pending", None)
    assert status("big-1") == ("discarded", "message is larger than 32768 bytes")
    assert status("noid-1") == ("discarded", "message has neither userId nor anonymousId")
    assert status("noevent-1") == ("discarded", "track message has no event name")
    assert status("nogroup-1") == ("discarded", "group message has no groupId")
    assert status("unknown-1") == ("discarded", "unknown message type 'teleport'")
    assert status("delete-1") == (
        "discarded", "message type 'delete' is not accepted on this endpoint"
    )
    assert status("notype-1") == ("discarded", "message has no type")
    assert status("objid-1") == ("discarded", "userId is not a string or a number")
    assert status("badtraits-1") == ("discarded", "traits is not an object")
    assert status("filtered-1")[0] == "filtered"
    assert status("optout-1")[0] == "filtered"

    non_objects = [m for m in service.store.list_messages(limit=100)
                   if m.reason == "message is not a JSON object"]
    assert [orjson.loads(m.raw) for m in non_objects] == [42, "a string"]
    assert {(m.type, m.status) for m in non_objects} == {("invalid", "discarded")}
    # The oversize message is kept raw, next to a minimal normalised record.
    big = service.store.get_message("web", "big-1")
    assert big is not None and len(big.raw) > 33_000 and len(big.message) < 200
    assert service.store.count_by_status() == {"pending": 3, "discarded": 11, "filtered": 2}
    counters = service.ingest_counters()
    assert (counters.accepted, counters.discarded, counters.filtered) == (3, 11, 2)


# -- the store pushing back: 429 and 503 ---------------------------------------------------------


class BlockingStore(SQLiteStore):
    """A real SQLite store whose inbox commits (what a request waits for before its 200)
    wait until the test lets them through."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.entered = threading.Event()
        self.release = threading.Event()

    def inbox_append(self, entries: Sequence[InboxEntry]) -> None:
        self.entered.set()
        assert self.release.wait(10)
        super().inbox_append(entries)


def test_429_with_retry_after_when_the_store_is_saturated(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "q.db", max_pending_messages=2, commit_window=0)
    store = BlockingStore(tmp_path / "q.db")
    store.open()
    app = build_app(settings, store)
    with serve_in_thread(app) as url:
        first: dict[str, httpx2.Response] = {}
        sender = threading.Thread(target=lambda: first.update(
            r=httpx2.post(f"{url}/v1/batch", json=batch_body(track("slow-1")), timeout=20)
        ))
        sender.start()
        assert store.entered.wait(10)
        assert app.state.committer.pending == 1

        r = httpx2.post(f"{url}/v1/batch", json=batch_body(track("late-1"), track("late-2")))
        assert r.status_code == 429
        assert r.headers["retry-after"] == "1"
        assert r.json()["code"] == "store_saturated" and r.json()["message"]

        store.release.set()
        sender.join(20)
        assert first["r"].status_code == 200
        wait_sorted(app)
        assert store.get_message("web", "slow-1") is not None
        assert store.get_message("web", "late-1") is None
        assert app.state.committer.stats.entries == 1  # the refused request never reached it
        # Once the backlog is gone, the same request is accepted.
        again = httpx2.post(f"{url}/v1/batch", json=batch_body(track("late-1"), track("late-2")))
        assert again.status_code == 200
        wait_sorted(app)
    assert store.count_by_status() == {"pending": 3}
    assert store.inbox_count() == (0, 0)
    store.close()


class FailingStore(SQLiteStore):
    """A real SQLite store whose disk fails while `failing` is set: the inbox commit a
    request waits for (and any other append) raises as a failing driver would."""

    failing = False

    def inbox_append(self, entries: Sequence[InboxEntry]) -> None:
        if self.failing:
            raise sqlite3.OperationalError("disk I/O error")
        super().inbox_append(entries)

    def append(self, messages: Sequence[NewMessage]) -> list[bool]:
        if self.failing:
            raise sqlite3.OperationalError("disk I/O error")
        return super().append(messages)


def test_503_when_the_store_cannot_commit(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "q.db")
    store = FailingStore(tmp_path / "q.db")
    store.open()
    app = build_app(settings, store)
    with serve_in_thread(app) as url:
        assert httpx2.post(f"{url}/v1/batch", json=batch_body(track("ok-1"))).status_code == 200
        wait_sorted(app)
        before = snapshot(store)
        assert before[0] == (0, 0) and before[1] == {"pending": 1}
        store.failing = True
        r = httpx2.post(f"{url}/v1/batch", json=batch_body(track("lost-1")))
        assert r.status_code == 503
        assert r.json()["code"] == "store_unavailable" and r.json()["message"]
        store.failing = False
        assert snapshot(store) == before
        wait_sorted(app)
        assert snapshot(store) == before
        assert app.state.committer.stats.entries == 1
        assert httpx2.post(f"{url}/v1/batch", json=batch_body(track("lost-1"))).status_code == 200
        wait_sorted(app)
    assert store.get_message("web", "lost-1") is not None
    store.close()


def test_503_and_not_ready_when_the_store_is_closed(service: Service) -> None:
    assert httpx2.post(f"{service.url}/v1/track", json={"writeKey": WRITE_KEY, **track("c-1")}) \
        .status_code == 200
    service.sorted()
    before = snapshot(service.store)
    assert before[0] == (0, 0) and before[1] == {"pending": 1}
    commits_before = service.inbox_commits()
    service.sorted()
    service.store.close()
    r = httpx2.post(f"{service.url}/v1/track", json={"writeKey": WRITE_KEY, **track("c-2")})
    assert r.status_code == 503 and set(r.json()) == {"code", "message"}
    ready = httpx2.get(f"{service.url}/readyz")
    assert ready.status_code == 503 and set(ready.json()) == {"code", "message"}
    service.store.open()
    assert httpx2.get(f"{service.url}/readyz").status_code == 200
    assert snapshot(service.store) == before
    service.sorted()
    assert snapshot(service.store) == before
    assert service.inbox_commits() == commits_before


# -- secrets never leak --------------------------------------------------------------------------


def test_no_secret_in_error_bodies_or_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = make_settings(tmp_path / "q.db")
    store = FailingStore(tmp_path / "q.db")
    store.open()
    guess = "wk_guessed_secret_789"
    bodies: list[str] = []
    with serve_in_thread(build_app(settings, store)) as url:
        attempts = [
            ("/v1/batch", {"writeKey": guess, "batch": [track("s-1")]}, {}),
            ("/v1/batch", {"batch": [track("s-2")]}, {"Authorization": _basic(f"{guess}:")}),
            ("/v1/batch", {"writeKey": WRITE_KEY, "batch": {}}, {}),
            ("/v1/track", {"writeKey": WRITE_KEY, **track("s-3", properties={"x": "y" * 40_000})},
             {}),
            (f"/webhook/{HOOK_KEY}", {"type": "identify", "userId": "u"},
             {"X-Signature": "f" * 40}),
            (f"/webhook/{guess}", {"type": "identify", "userId": "u"}, {}),
        ]
        for path, body, headers in attempts:
            r = httpx2.post(f"{url}{path}", json=body, headers=headers)
            assert 400 <= r.status_code < 500
            bodies.append(r.text)
        store.failing = True
        r = httpx2.post(f"{url}/v1/batch", json=batch_body(track("s-4")))
        assert r.status_code == 503
        bodies.append(r.text)
    store.close()
    out, err = capfd.readouterr()
    formatter = logging.Formatter()
    # Everything the service logged (the test's own HTTP client logs its URLs; not ours).
    server_log = "\n".join(
        formatter.format(record) for record in caplog.records
        if not record.name.startswith(("httpx", "httpcore"))
    )
    assert "store commit failed" in server_log  # the 503 was logged...
    for secret in (WRITE_KEY, HOOK_KEY, HOOK_SECRET, guess):
        for text in (*bodies, server_log, out, err):
            assert secret not in text  # ...but no key or secret anywhere


def test_errors_raised_inside_the_store_stay_503_for_raw_store_errors(tmp_path: Path) -> None:
    class Unavailable(SQLiteStore):
        def inbox_append(self, entries: Sequence[InboxEntry]) -> None:
            raise StoreUnavailable("replica lost")

    store = Unavailable(tmp_path / "q.db")
    store.open()
    app = build_app(make_settings(tmp_path / "q.db"), store)
    with serve_in_thread(app) as url:
        r = httpx2.post(f"{url}/v1/batch", json=batch_body(track("x-1")))
        wait_sorted(app)
    assert r.status_code == 503 and r.json()["code"] == "store_unavailable"
    assert snapshot(store) == ((0, 0), {}, [])
    store.close()


# -- fuzz: nothing a client sends gets a 5xx -----------------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=25,
)
_field = _json | st.sampled_from(
    ["identify", "track", "group", "alias", "page", "screen", "delete", "u1", "2024-05-01T12:00Z",
     "9999-12-31T23:59:59-05:00", WRITE_KEY]
)
_message = st.dictionaries(
    st.sampled_from(["type", "userId", "anonymousId", "event", "groupId", "previousId",
                     "messageId", "timestamp", "originalTimestamp", "sentAt", "traits",
                     "context", "integrations", "properties", "writeKey"]),
    _field, max_size=8,
)
_body = st.one_of(
    st.fixed_dictionaries(
        {"writeKey": st.just(WRITE_KEY)},
        optional={"batch": st.lists(_message | _json, max_size=5), "context": _json,
                  "integrations": _json, "sentAt": _field},
    ),
    _message.map(lambda m: {**m, "writeKey": WRITE_KEY}),
    _json,
)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=_body, path=st.sampled_from(["/v1/batch", "/v1/track", "/v1/identify",
                                         f"/webhook/{WRITE_KEY}"]), gzipped=st.booleans())
def test_fuzz_never_a_server_error(
    service: Service, body: Any, path: str, gzipped: bool
) -> None:
    try:
        content = orjson.dumps(body)
    except (TypeError, orjson.JSONEncodeError):  # integers beyond 64 bits: send them as text
        import json

        content = json.dumps(body).encode()
    headers = dict(JSON)
    if gzipped:
        content = gzip.compress(content)
        headers["Content-Encoding"] = "gzip"
    r = httpx2.post(f"{service.url}{path}", content=content, headers=headers)
    assert r.status_code == 200 or 400 <= r.status_code < 500, r.text
    answer = r.json()
    if r.status_code == 200:
        assert answer == {"success": True}
    else:
        assert set(answer) == {"code", "message"}
