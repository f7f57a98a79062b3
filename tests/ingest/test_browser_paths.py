"""What browsers send and load, over real HTTP: analytics.js' short paths, CORS, the settings
route and analytics.js itself (the real browser is in tests/browser/)."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import orjson
import pytest

from freshsales_destination.config import Settings, settings_from_dict
from freshsales_destination.errors import ConfigError
from freshsales_destination.service import build_app
from freshsales_destination.store.sqlite import SQLiteStore
from tests.ingest.conftest import WRITE_KEY, Service, snapshot, track
from tests.support.server import free_port, serve_in_thread

SHOP = "https://shop.example"
BLOG = "https://blog.example:8443"
EVIL = "https://evil.example"
SHOP_KEY = "wk_shop"
BLOG_KEY = "wk_blog"
OPEN_KEY = "wk_open"
FAKE_AJS = b'!function(){try{window.analyticsWriteKey="__WRITE_KEY__"}catch(t){}}();\n'


def _basic(key: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


def _ajs_post(url: str, body: dict[str, Any], *, origin: str | None, key: str) -> httpx2.Response:
    """A request as analytics.js' fetch dispatcher makes it: text/plain JSON, Basic auth and
    the writeKey in the body."""
    headers = {"Content-Type": "text/plain", "Authorization": _basic(key)}
    if origin is not None:
        headers["Origin"] = origin
    return httpx2.post(url, content=orjson.dumps({**body, "writeKey": key}), headers=headers)


def _settings(tmp_path: Path, sources: list[dict[str, Any]], **extra: Any) -> Settings:
    return settings_from_dict(
        {
            "server": extra.pop("server", {}),
            "store": {"url": f"sqlite:///{tmp_path / 'q.db'}"},
            "sources": sources,
            "destinations": {"acme": {"domain": "acme", "api_key": "fs-api-key"}},
            **extra,
        }
    )


def _serve(settings: Settings, tmp_path: Path, **options: Any) -> Iterator[Service]:
    store = SQLiteStore(tmp_path / "q.db")
    store.open()
    app = build_app(settings, store, deliver=False)
    # proxy_headers=False: as `serve` runs uvicorn unless server.trust_proxy.
    with serve_in_thread(app, proxy_headers=False, **options) as url:
        yield Service(url, store, settings, app)
    store.close()


@pytest.fixture
def restricted(tmp_path: Path) -> Iterator[Service]:
    """Two sources each allowing one origin, and one allowing any."""
    settings = _settings(tmp_path, [
        {"write_key": SHOP_KEY, "destination": "acme", "name": "shop", "allowed_origins": [SHOP]},
        {"write_key": BLOG_KEY, "destination": "acme", "name": "blog",
         "allowed_origins": [BLOG + "/"]},
    ])
    yield from _serve(settings, tmp_path)


# -- short paths ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("short", "kind"),
    [("t", "track"), ("i", "identify"), ("p", "page"), ("g", "group"), ("a", "alias"),
     ("s", "screen")],
)
def test_short_paths_are_the_single_endpoints(service: Service, short: str, kind: str) -> None:
    body = {"userId": "u1", "messageId": f"short-{short}", "type": "ignored", "event": "E",
            "groupId": "g1", "previousId": "old"}
    r = _ajs_post(f"{service.url}/v1/{short}", body, origin=None, key=WRITE_KEY)
    assert r.status_code == 200, r.text
    assert r.json() == {"success": True}
    service.sorted()
    stored = service.store.get_message("web", f"short-{short}")
    assert stored is not None and (stored.type, stored.status) == (kind, "pending")
    assert "writeKey" not in orjson.loads(stored.raw)


def test_b_is_batch(service: Service) -> None:
    body = {"batch": [track("b-1"), track("b-2", type="page", name="Home")],
            "sentAt": "2024-05-01T12:00:00.000Z"}
    r = _ajs_post(f"{service.url}/v1/b", body, origin=None, key=WRITE_KEY)
    assert r.status_code == 200, r.text
    service.sorted()
    first, second = (service.store.get_message("web", m) for m in ("b-1", "b-2"))
    assert first is not None and first.type == "track"
    assert second is not None and second.type == "page"


def test_short_paths_refuse_what_the_long_ones_refuse(service: Service) -> None:
    url = service.url
    unknown = _ajs_post(f"{url}/v1/t", track("x-1"), origin=None, key="not-a-key")
    assert unknown.status_code == 401 and unknown.json()["code"] == "unauthorized"
    broken = httpx2.post(f"{url}/v1/i", content=b"{nope", headers={"Authorization": _basic(WRITE_KEY)})
    assert broken.status_code == 400 and broken.json()["code"] == "invalid_json"
    not_array = _ajs_post(f"{url}/v1/b", {"batch": {"a": 1}}, origin=None, key=WRITE_KEY)
    assert not_array.status_code == 400 and not_array.json()["code"] == "invalid_batch"
    big = {"userId": "u1", "event": "E", "properties": {"x": "y" * 40_000}}
    too_large = _ajs_post(f"{url}/v1/t", big, origin=None, key=WRITE_KEY)
    assert too_large.status_code == 413
    wrong_type = httpx2.post(f"{url}/v1/t", content=b"{}", headers={"Content-Type": "text/html"})
    assert wrong_type.status_code == 415
    get = httpx2.get(f"{url}/v1/t")
    assert get.status_code == 405 and get.headers["allow"] == "POST, OPTIONS"
    for path in ("/v1/x", "/v1/tt", "/v1/t/extra"):
        assert httpx2.post(f"{url}{path}", json={}).status_code == 404
    service.sorted()
    assert snapshot(service.store) == ((0, 0), {}, [])


# -- CORS, default (any origin) ---------------------------------------------------------------


def test_preflight_answers_204_with_methods_and_headers(service: Service) -> None:
    r = httpx2.options(f"{service.url}/v1/t", headers={
        "Origin": "http://localhost:3000",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type,x-retry-count,x-app",
    })
    assert r.status_code == 204 and r.content == b""
    assert r.headers["access-control-allow-origin"] == "*"
    assert "POST" in r.headers["access-control-allow-methods"]
    allowed = {h.strip() for h in r.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "x-retry-count", "x-app"} <= allowed
    assert "access-control-allow-credentials" not in r.headers
    batch = httpx2.options(f"{service.url}/v1/batch", headers={"Origin": "https://a.example"})
    assert batch.status_code == 204
    # Only the tracking paths and the settings route answer preflights.
    assert httpx2.options(f"{service.url}/v1/nope", headers={"Origin": SHOP}).status_code == 405
    assert httpx2.options(f"{service.url}/v1/t/x", headers={"Origin": SHOP}).status_code == 404
    # The webhook is for servers: no CORS there.
    assert httpx2.options(f"{service.url}/webhook/{WRITE_KEY}").status_code == 405


def test_cross_origin_event_from_analytics_js(service: Service) -> None:
    r = _ajs_post(f"{service.url}/v1/t", track("cors-1"), origin="https://any.example",
                  key=WRITE_KEY)
    assert r.status_code == 200, r.text
    assert r.headers["access-control-allow-origin"] == "*"
    # analytics.js reads Retry-After of a 429: a cross-origin page sees it only when exposed.
    assert r.headers["access-control-expose-headers"] == "Retry-After"
    service.sorted()
    assert service.store.get_message("web", "cors-1") is not None


def test_refusals_carry_cors_headers_so_the_page_can_read_them(service: Service) -> None:
    r = _ajs_post(f"{service.url}/v1/t", track("x"), origin=SHOP, key="not-a-key")
    assert r.status_code == 401
    assert r.headers["access-control-allow-origin"] == "*"


def test_send_beacon_and_keepalive_bodies(service: Service) -> None:
    """navigator.sendBeacon(url, string) posts text/plain;charset=UTF-8 with cookies and no
    Authorization header; fetch(keepalive) posts what the page gives it."""
    beacon = httpx2.post(
        f"{service.url}/v1/t",
        content=orjson.dumps({"writeKey": WRITE_KEY, **track("beacon-1")}),
        headers={"Content-Type": "text/plain;charset=UTF-8", "Origin": SHOP,
                 "Cookie": "ajs_anonymous_id=abc", "Sec-Fetch-Mode": "no-cors"},
    )
    assert beacon.status_code == 200, beacon.text
    keepalive = httpx2.post(
        f"{service.url}/v1/b",
        content=orjson.dumps({"writeKey": WRITE_KEY, "batch": [track("keepalive-1")]}),
        headers={"Content-Type": "application/json", "Origin": SHOP},
    )
    assert keepalive.status_code == 200, keepalive.text
    service.sorted()
    for message_id in ("beacon-1", "keepalive-1"):
        stored = service.store.get_message("web", message_id)
        assert stored is not None and stored.status == "pending"


# -- CORS, restricted origins -----------------------------------------------------------------


def test_preflight_allows_origins_any_source_allows(restricted: Service) -> None:
    def preflight(origin: str) -> httpx2.Response:
        return httpx2.options(f"{restricted.url}/v1/t", headers={
            "Origin": origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        })

    shop, blog, evil = preflight(SHOP), preflight(BLOG), preflight(EVIL)
    assert shop.status_code == 204 and shop.headers["access-control-allow-origin"] == SHOP
    assert blog.headers["access-control-allow-origin"] == BLOG  # configured with a slash
    assert "origin" in shop.headers["vary"].lower()
    # An origin no source allows: the browser gets no Allow-Origin and sends nothing.
    assert evil.status_code == 204 and "access-control-allow-origin" not in evil.headers


def test_actual_request_is_held_to_its_sources_origins(restricted: Service) -> None:
    url = f"{restricted.url}/v1/t"
    ok = _ajs_post(url, track("shop-1"), origin=SHOP, key=SHOP_KEY)
    assert ok.status_code == 200, ok.text
    assert ok.headers["access-control-allow-origin"] == SHOP
    assert "origin" in ok.headers["vary"].lower()
    restricted.sorted()
    before = snapshot(restricted.store)
    # The blog's origin passed the preflight (the blog source allows it), not the shop's key.
    for origin in (BLOG, EVIL, "null"):
        refused = _ajs_post(url, track("shop-2"), origin=origin, key=SHOP_KEY)
        assert refused.status_code == 403, origin
        assert refused.json()["code"] == "origin_not_allowed"
        assert "access-control-allow-origin" not in refused.headers
    batch = _ajs_post(f"{restricted.url}/v1/b", {"batch": [track("shop-3")]}, origin=BLOG,
                      key=SHOP_KEY)
    assert batch.status_code == 403
    restricted.sorted()
    assert snapshot(restricted.store) == before
    # Servers send no Origin: not a browser, not checked.
    server = _ajs_post(url, track("shop-4"), origin=None, key=SHOP_KEY)
    assert server.status_code == 200 and "access-control-allow-origin" not in server.headers
    restricted.sorted()
    assert restricted.store.get_message("shop", "shop-4") is not None


def test_invalid_allowed_origins_are_refused_at_start(tmp_path: Path) -> None:
    for bad in (["shop.example"], ["https://shop.example/path"], ["ftp://x"], ["https://bücher.de"]):
        with pytest.raises(ConfigError, match="allowed_origins"):
            _settings(tmp_path, [{"write_key": "k", "destination": "acme", "allowed_origins": bad}])


# -- the settings analytics.js loads ----------------------------------------------------------


def test_settings_point_analytics_js_back_here(service: Service) -> None:
    r = httpx2.get(f"{service.url}/v1/projects/{WRITE_KEY}/settings",
                   headers={"Origin": "https://any.example"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.headers["access-control-allow-origin"] == "*"
    body = r.json()
    segment = body["integrations"]["Segment.io"]
    host_port = service.url.removeprefix("http://")
    assert segment["apiKey"] == WRITE_KEY
    assert segment["apiHost"] == f"{host_port}/v1"  # no scheme, as Segment writes it
    assert segment["protocol"] == "http"
    assert list(body["integrations"]) == ["Segment.io"]  # nothing else for analytics.js to load
    assert body["metrics"]["sampleRate"] == 0  # no metrics sent to Segment
    assert body["remotePlugins"] == [] and body["edgeFunction"] == {}
    assert "plan" in body
    # The destination's API key, the admin token and webhook secrets never appear.
    for secret in ("fs-api-key", "adm-token", "s3cret-hook"):
        assert secret not in r.text
    # The URL it names takes events.
    posted = _ajs_post(f"{segment['protocol']}://{segment['apiHost']}/p",
                       {"userId": "u1", "messageId": "via-settings"}, origin=None, key=WRITE_KEY)
    assert posted.status_code == 200


def test_settings_of_an_unknown_key_is_404_json(service: Service) -> None:
    r = httpx2.get(f"{service.url}/v1/projects/not-a-key/settings", headers={"Origin": SHOP})
    assert r.status_code == 404
    assert r.json() == {"code": "not_found", "message": "no source has this write key"}
    assert r.headers["access-control-allow-origin"] == "*"  # the page can log why
    wrong = httpx2.post(f"{service.url}/v1/projects/{WRITE_KEY}/settings", json={})
    assert wrong.status_code == 405 and wrong.headers["allow"] == "GET, OPTIONS"
    assert httpx2.get(f"{service.url}/v1/projects/{WRITE_KEY}/other").status_code == 404


def test_settings_of_a_restricted_source(restricted: Service) -> None:
    url = f"{restricted.url}/v1/projects/{SHOP_KEY}/settings"
    shop = httpx2.get(url, headers={"Origin": SHOP})
    assert shop.headers["access-control-allow-origin"] == SHOP
    evil = httpx2.get(url, headers={"Origin": EVIL})
    assert evil.status_code == 200 and "access-control-allow-origin" not in evil.headers


FORWARDED = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "collect.example.com, inner"}
PREFIXED = {**FORWARDED, "X-Forwarded-Prefix": "/collect"}


def test_settings_ignore_forwarded_headers_without_trust_proxy(tmp_path: Path) -> None:
    settings = _settings(tmp_path, [{"write_key": OPEN_KEY, "destination": "acme"}])
    for service in _serve(settings, tmp_path):
        r = httpx2.get(f"{service.url}/v1/projects/{OPEN_KEY}/settings", headers=PREFIXED)
        segment = r.json()["integrations"]["Segment.io"]
        assert segment["apiHost"] == service.url.removeprefix("http://") + "/v1"
        assert segment["protocol"] == "http"


def test_settings_follow_the_proxy_with_trust_proxy(tmp_path: Path) -> None:
    settings = _settings(
        tmp_path, [{"write_key": OPEN_KEY, "destination": "acme"}], server={"trust_proxy": True}
    )
    # Mounted below /app (uvicorn --root-path), behind a proxy that strips its /collect.
    for service in _serve(settings, tmp_path, root_path="/app"):
        url = f"{service.url}/v1/projects/{OPEN_KEY}/settings"
        segment = httpx2.get(url, headers=FORWARDED).json()["integrations"]["Segment.io"]
        assert segment["apiHost"] == "collect.example.com/app/v1"
        assert segment["protocol"] == "https"
        prefixed = httpx2.get(url, headers={**FORWARDED, "X-Forwarded-Prefix": "/collect/"})
        assert prefixed.json()["integrations"]["Segment.io"]["apiHost"] == (
            "collect.example.com/collect/app/v1")
        odd = httpx2.get(url, headers={**FORWARDED, "X-Forwarded-Prefix": "collect"})
        assert odd.json()["integrations"]["Segment.io"]["apiHost"] == "collect.example.com/app/v1"
        # Without the headers (or with a host that is no host name): the request's own Host.
        plain = httpx2.get(url, headers={"X-Forwarded-Host": "a b/c"}).json()
        host_port = service.url.removeprefix("http://")
        assert plain["integrations"]["Segment.io"]["apiHost"] == f"{host_port}/app/v1"


# -- analytics.js -----------------------------------------------------------------------------


@pytest.fixture
def with_ajs(tmp_path: Path) -> Iterator[Service]:
    umd = tmp_path / "node_modules" / "@segment" / "analytics-next" / "dist" / "umd"
    umd.mkdir(parents=True)
    (umd / "standalone.js").write_bytes(FAKE_AJS)
    (umd / "auto-track.bundle.f131ce01a05e3a33a8c1.js").write_bytes(b"/* chunk */")
    (umd / "standalone.js.map").write_bytes(b"{}")
    settings = _settings(
        tmp_path, [{"write_key": OPEN_KEY, "destination": "acme"}],
        browser={"analytics_js_path": str(umd / "standalone.js")},
    )
    yield from _serve(settings, tmp_path)


def test_analytics_js_is_served_with_its_write_key(with_ajs: Service) -> None:
    r = httpx2.get(f"{with_ajs.url}/analytics.js/v1/{OPEN_KEY}/analytics.min.js")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/javascript")
    assert r.content == FAKE_AJS.replace(b'"__WRITE_KEY__"', f'"{OPEN_KEY}"'.encode())
    chunk = httpx2.get(
        f"{with_ajs.url}/analytics-next/bundles/auto-track.bundle.f131ce01a05e3a33a8c1.js"
    )
    assert chunk.status_code == 200 and chunk.content == b"/* chunk */"
    unknown = httpx2.get(f"{with_ajs.url}/analytics.js/v1/not-a-key/analytics.min.js")
    assert unknown.status_code == 404 and unknown.json()["code"] == "not_found"
    for name in ("standalone.js.map", "..%2Fstandalone.js", "missing.bundle.abc.js"):
        r = httpx2.get(f"{with_ajs.url}/analytics-next/bundles/{name}")
        assert r.status_code == 404 and set(r.json()) == {"code", "message"}, name


def test_analytics_js_is_404_json_when_not_installed(service: Service, tmp_path: Path) -> None:
    r = httpx2.get(f"{service.url}/analytics.js/v1/{WRITE_KEY}/analytics.min.js")
    assert r.status_code == 404
    assert r.json()["code"] == "not_found" and "analytics_js_path" in r.json()["message"]


def test_analytics_js_path_that_is_missing_is_404(tmp_path: Path) -> None:
    settings = _settings(
        tmp_path, [{"write_key": OPEN_KEY, "destination": "acme"}],
        browser={"analytics_js_path": str(tmp_path / "missing.js")},
    )
    for service in _serve(settings, tmp_path):
        r = httpx2.get(f"{service.url}/analytics.js/v1/{OPEN_KEY}/analytics.min.js")
        assert r.status_code == 404 and r.json()["code"] == "not_found"


@pytest.mark.slow
def test_serve_with_a_config_file(tmp_path: Path) -> None:
    """`serve` itself: X-Forwarded-* ignored without trust_proxy (uvicorn's reading of them
    from 127.0.0.1 included), analytics.js served from the configured file."""
    (tmp_path / "standalone.js").write_bytes(FAKE_AJS)
    port = free_port()
    config = tmp_path / "fsd.toml"
    config.write_text(
        f'[server]\nport = {port}\n[store]\nurl = "sqlite:///{tmp_path / "q.db"}"\n'
        f'[delivery]\nenabled = false\n[browser]\nanalytics_js_path = "{tmp_path / "standalone.js"}"\n'
        f'[[sources]]\nwrite_key = "{OPEN_KEY}"\ndestination = "acme"\n'
        '[destinations.acme]\ndomain = "acme"\napi_key = "fs-api-key"\n',
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FSD_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "freshsales_destination", "serve", "--config", str(config)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx2.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx2.TransportError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "serve did not start"
            time.sleep(0.1)
        r = httpx2.get(f"{base}/v1/projects/{OPEN_KEY}/settings", headers=PREFIXED)
        segment = r.json()["integrations"]["Segment.io"]
        assert (segment["protocol"], segment["apiHost"]) == ("http", f"127.0.0.1:{port}/v1")
        script = httpx2.get(f"{base}/analytics.js/v1/{OPEN_KEY}/analytics.min.js")
        assert script.status_code == 200 and OPEN_KEY.encode() in script.content
    finally:
        proc.terminate()
        proc.communicate(timeout=15)


def test_a_webhook_only_key_has_no_browser_settings(tmp_path: Path) -> None:
    """A source with a webhook_secret refuses /v1/ (unless accept_tracking_api), so its key
    gets no analytics.js settings either: the page would only meet 401s."""
    settings = settings_from_dict({
        "store": {"url": f"sqlite:///{tmp_path / 'q.db'}"},
        "delivery": {"enabled": False},
        "sources": [{"write_key": "wk_hook", "destination": "crm", "name": "hook",
                     "webhook_secret": "s3cret"}],
        "destinations": {"crm": {"domain": "acme", "api_key": "k"}},
    })
    store = SQLiteStore(tmp_path / "q.db")
    store.open()
    try:
        app = build_app(settings, store, deliver=False)
        with serve_in_thread(app) as url:
            answer = httpx2.get(f"{url}/v1/projects/wk_hook/settings")
        assert answer.status_code == 404
        assert answer.json()["code"] == "not_found"
    finally:
        store.close()
