"""analytics.js (@segment/analytics-next) in real headless Chromium, through this service, into
the sandbox CRM.

A page served by the test on another port (another origin, so every request crosses CORS) loads
analytics.js both ways docs/browser.md shows: as an app bundles it, with ``cdnURL`` set to this
service; and with Segment's standard snippet, its CDN host replaced and ``analytics._cdn`` set,
analytics.js itself served by this service. Each way sends identify (with an email), page and
track with the default delivery and with batching (and the npm way with keepalive requests);
delivery then makes them a contact, a page view and an event in the sandbox. A page also sends
with navigator.sendBeacon and fetch(keepalive) directly.

Needs Debian's ``chromium`` (``.ci/run`` installs it) and ``npm`` (analytics-next is installed
once into a cache outside the repository); skipped, saying which, only when one is missing.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx2
import pytest

from freshsales_destination.config import Settings, settings_from_dict
from freshsales_destination.delivery.engine import DeliveryEngine
from freshsales_destination.sandbox import SandboxOptions
from freshsales_destination.sandbox.testing import RunningSandbox, running_sandbox
from freshsales_destination.service import build_app
from freshsales_destination.store.sqlite import SQLiteStore
from tests.browser.npm_cache import ANALYTICS_NEXT_VERSION, npm_install
from tests.support.server import free_port, serve_in_thread

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
OPEN_KEY = "wk_browser_open"  # allowed_origins = ["*"] (the default)
SITE_KEY = "wk_browser_site"  # allowed_origins = [the test page's origin]
API_KEY = "sandbox-key-for-browser"
APP_TOKEN = "sandbox-token-for-browser"
BATCH_SIZE = 3  # the three calls of a flow: the batch is sent when the third arrives
WAIT_SECONDS = 60  # a bound for a stuck run, never a measure of speed


def _analytics_next() -> Path:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (/usr/bin/chromium; .ci/run installs it)")
    if shutil.which("npm") is None:
        pytest.skip("npm is not installed: @segment/analytics-next cannot be installed")
    root = npm_install("@segment/analytics-next", ANALYTICS_NEXT_VERSION)
    return root / "node_modules" / "@segment" / "analytics-next"


# -- the test page's server (another origin) --------------------------------------------------


class _Pages(ThreadingHTTPServer):
    daemon_threads = True
    files: dict[str, tuple[str, bytes]]


class _PageHandler(BaseHTTPRequestHandler):
    server: _Pages

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        found = self.server.files.get(urlsplit(self.path).path)
        if found is None:
            self.send_response(404 if self.path != "/favicon.ico" else 204)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        content_type, body = found
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class PageSite:
    origin: str
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)

    def add(self, path: str, body: str | bytes, content_type: str = "text/html") -> str:
        data = body.encode() if isinstance(body, str) else body
        self.files[path] = (f"{content_type}; charset=utf-8", data)
        return self.origin + path


@pytest.fixture
def site() -> Iterator[PageSite]:
    port = free_port()
    server = _Pages(("127.0.0.1", port), _PageHandler)
    pages = PageSite(f"http://127.0.0.1:{port}")
    server.files = pages.files
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield pages
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


# -- this service and the sandbox -------------------------------------------------------------


@dataclass
class Stack:
    url: str
    store: SQLiteStore
    settings: Settings
    app: Any
    sandbox: RunningSandbox

    def messages(self, user_id: str) -> list[dict[str, Any]]:
        found = []
        for stored in self.store.list_messages(limit=100_000):
            message = stored.normalized()
            if message.get("userId") == user_id or message.get("anonymousId") == user_id:
                found.append({"type": stored.type, "status": stored.status, **message})
        return found

    def wait_for(self, user_id: str, count: int) -> list[dict[str, Any]]:
        """The messages of `user_id` once `count` of them are stored (sorted into the queue)."""
        import time

        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            assert self.app.state.sorting.wait_sorted(WAIT_SECONDS), "the inbox was not sorted"
            found = self.messages(user_id)
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def deliver(self) -> None:
        engine = DeliveryEngine.from_settings(self.settings, self.store)

        async def run() -> None:
            try:
                await engine.drain(timeout=WAIT_SECONDS)
            finally:
                await engine.stop()

        asyncio.run(run())


@pytest.fixture
def stack(tmp_path: Path, site: PageSite) -> Iterator[Stack]:
    package = _analytics_next()
    options = SandboxOptions(api_key=API_KEY, app_token=APP_TOKEN, product="suite")
    with running_sandbox(options) as sandbox:
        settings = settings_from_dict({
            "store": {"url": f"sqlite:///{tmp_path / 'q.db'}"},
            "delivery": {"workers": 1, "backoff_base_seconds": 1},
            "browser": {"analytics_js_path": str(package / "dist" / "umd" / "standalone.js")},
            "sources": [
                {"write_key": OPEN_KEY, "destination": "crm", "name": "open"},
                {"write_key": SITE_KEY, "destination": "crm", "name": "site",
                 "allowed_origins": [site.origin]},
            ],
            "destinations": {"crm": {
                "product": "suite", "base_url": sandbox.base_url, "allow_custom_base_url": True,
                "api_key": API_KEY, "app_token": APP_TOKEN,
                # Each person's identify as one call, so `deliver` (drain) ends with them in
                # the CRM; bulk jobs, which finish later, are tested in tests/delivery.
                "bulk": "off",
            }},
        })
        store = SQLiteStore(tmp_path / "q.db")
        store.open()
        app = build_app(settings, store, deliver=False)
        with serve_in_thread(app, proxy_headers=False) as url:
            # An app's own bundle of analytics-next, served from the page's origin.
            site.add("/vendor/analytics-next.js",
                     (package / "dist" / "umd" / "index.js").read_bytes(), "text/javascript")
            yield Stack(url, store, settings, app, sandbox)
        store.close()


# -- the pages --------------------------------------------------------------------------------


def _delivery(mode: str) -> dict[str, Any]:
    """analytics.js' load options for `mode`: "default" (one request per call), "batching"
    (one /v1/b request for the flow's three calls), "keepalive" (fetch keepalive, which lets
    a request outlive the page)."""
    if mode == "default":
        return {}
    if mode == "batching":
        strategy: dict[str, Any] = {
            "strategy": "batching", "config": {"size": BATCH_SIZE, "timeout": 60_000}}
    else:
        strategy = {"strategy": "standard", "config": {"keepalive": True}}
    return {"integrations": {"Segment.io": {"deliveryStrategy": strategy}}}


def _npm_page(service: str, key: str, user: str, mode: str) -> str:
    """analytics-next as an app bundles it, told to load its settings from this service."""
    config = json.dumps({"service": service, "key": key, "user": user,
                         "options": _delivery(mode)})
    return f"""<!doctype html><html><head><title>npm way</title>
<script src="/vendor/analytics-next.js"></script></head><body><script>
(async () => {{
  const c = {config};
  const [analytics] = await AnalyticsNext.AnalyticsBrowser.load(
    {{writeKey: c.key, cdnURL: c.service}}, c.options);
  const sent = [
    await analytics.identify(c.user, {{email: c.user + "@example.com", firstName: "Ada"}}),
    await analytics.page("Docs", "Pricing"),
    await analytics.track("Signed Up", {{plan: "pro"}}),
  ];
  window.result = {{failed: sent.filter((ctx) => ctx.failedDelivery()).length}};
}})().catch((e) => {{ window.result = {{error: String(e)}}; }});
</script></body></html>"""


def _snippet_page(service: str, key: str, user: str, mode: str) -> str:
    """Segment's standard snippet (5.x) with its CDN host replaced by this service and
    ``analytics._cdn`` set, as docs/browser.md shows it."""
    load_options = json.dumps(_delivery(mode))
    return f"""<!doctype html><html><head><title>snippet way</title><script>
!function(){{var i="analytics",analytics=window[i]=window[i]||[];if(!analytics.initialize)if(analytics.invoked)window.console&&console.error&&console.error("Segment snippet included twice.");else{{analytics.invoked=!0;analytics.methods=["trackSubmit","trackClick","trackLink","trackForm","pageview","identify","reset","group","track","ready","alias","debug","page","screen","once","off","on","addSourceMiddleware","addIntegrationMiddleware","setAnonymousId","addDestinationMiddleware","register"];analytics.factory=function(e){{return function(){{if(window[i].initialized)return window[i][e].apply(window[i],arguments);var n=Array.prototype.slice.call(arguments);if(["track","screen","alias","group","page","identify"].indexOf(e)>-1){{var c=document.querySelector("link[rel='canonical']");n.push({{__t:"bpc",c:c&&c.getAttribute("href")||void 0,p:location.pathname,u:location.href,s:location.search,t:document.title,r:document.referrer}})}}n.unshift(e);analytics.push(n);return analytics}}}};for(var n=0;n<analytics.methods.length;n++){{var key=analytics.methods[n];analytics[key]=analytics.factory(key)}}analytics.load=function(key,n){{var t=document.createElement("script");t.type="text/javascript";t.async=!0;t.setAttribute("data-global-segment-analytics-key",i);t.src="{service}/analytics.js/v1/" + key + "/analytics.min.js";var r=document.getElementsByTagName("script")[0];r.parentNode.insertBefore(t,r);analytics._loadOptions=n}};analytics._writeKey="{key}";analytics._cdn="{service}";analytics.SNIPPET_VERSION="5.2.1";
analytics.load("{key}", {load_options});
analytics.identify("{user}", {{email: "{user}@example.com", firstName: "Ada"}}, function() {{
  analytics.page("Docs", "Pricing", function() {{
    analytics.track("Signed Up", {{plan: "pro"}}, function() {{ window.result = {{failed: 0}}; }});
  }});
}});
}}}}();
</script></head><body>snippet</body></html>"""


def _beacon_page(service: str, key: str, user: str) -> str:
    """What a page sends without analytics.js when it unloads: navigator.sendBeacon (a string
    body: text/plain, cookies, no Authorization) and fetch with keepalive."""
    config = json.dumps({"service": service, "key": key, "user": user})
    return f"""<!doctype html><html><body><script>
const c = {config};
const beacon = navigator.sendBeacon(c.service + "/v1/t", JSON.stringify(
  {{writeKey: c.key, userId: c.user, event: "Left Page", messageId: c.user + "-beacon"}}));
fetch(c.service + "/v1/b", {{method: "POST", keepalive: true,
  headers: {{"Content-Type": "text/plain"}},
  body: JSON.stringify({{writeKey: c.key, batch: [
    {{type: "track", userId: c.user, event: "Kept Alive", messageId: c.user + "-keepalive"}}]}})}})
  .then((r) => {{ window.result = {{beacon, status: r.status}}; }},
        (e) => {{ window.result = {{error: String(e)}}; }});
</script></body></html>"""


# -- the test ---------------------------------------------------------------------------------

FLOWS = [
    # (way, write key, delivery mode)
    ("npm", OPEN_KEY, "default"),
    ("npm", SITE_KEY, "batching"),
    ("npm", SITE_KEY, "keepalive"),
    ("snippet", SITE_KEY, "default"),
    ("snippet", OPEN_KEY, "batching"),
]


def test_analytics_js_in_chromium_reaches_the_crm(stack: Stack, site: PageSite) -> None:
    from playwright.sync_api import sync_playwright

    users: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            for way, key, mode in FLOWS:
                user = f"{way}-{mode}-{key.rsplit('_', 1)[1]}"
                users.append(user)
                build = _npm_page if way == "npm" else _snippet_page
                url = site.add(f"/{user}.html", build(stack.url, key, user, mode))
                found: list[dict[str, Any]] = []
                paths = _run_page(browser, url, stack.url,
                                  lambda user=user, found=found: found.extend(stack.wait_for(user, 3)))
                assert sorted(m["type"] for m in found) == ["identify", "page", "track"], (
                    user, found)
                tracking = [p for p in paths if p.startswith("POST ")]
                if mode == "batching":
                    assert tracking == ["POST /v1/b"], (user, paths)
                else:
                    assert sorted(tracking) == ["POST /v1/i", "POST /v1/p", "POST /v1/t"], paths
                assert f"GET /v1/projects/{key}/settings" in paths
                if way == "snippet":
                    assert f"GET /analytics.js/v1/{key}/analytics.min.js" in paths
                    # As Segment's CDN: the real build with the write key of its URL in it.
                    script = httpx2.get(f"{stack.url}/analytics.js/v1/{key}/analytics.min.js")
                    assert f'window.analyticsWriteKey="{key}"' in script.text
            beacon_user = "beacon-user"
            url = site.add("/beacon.html", _beacon_page(stack.url, SITE_KEY, beacon_user))
            kept: list[dict[str, Any]] = []
            _run_page(browser, url, stack.url,
                      lambda: kept.extend(stack.wait_for(beacon_user, 2)))
            assert sorted(m["messageId"] for m in kept) == [
                "beacon-user-beacon", "beacon-user-keepalive"]
        finally:
            browser.close()

    for user in users:
        for message in stack.messages(user):
            assert message["status"] == "pending", message
            assert message["context"]["library"]["name"] == "analytics.js"
            assert "writeKey" not in message
    stack.deliver()
    state = stack.sandbox.state.snapshot()
    for user in users:
        email = f"{user}@example.com"
        contacts = [c for c in state["contacts"] if email in _emails(c)]
        assert len(contacts) == 1, (email, state["contacts"])
        assert contacts[0]["first_name"] == "Ada"
        kinds = sorted(t["type"] for t in state["tracking"] if t["identifier"] == email)
        assert kinds == ["event", "page_view"], (email, state["tracking"])
        page_view = next(t for t in state["tracking"]
                         if t["identifier"] == email and t["type"] == "page_view")
        assert site.origin in json.dumps(page_view["data"])  # the page's own URL
    for user in users:
        for message in stack.messages(user):
            assert message["status"] == "delivered", message


def _run_page(browser: Any, url: str, service: str, arrived: Callable[[], None]) -> list[str]:
    """Open `url` in a fresh context (its own storage), wait for its ``window.result`` and for
    `arrived` (the service has the events: the page stays open until then); the requests it
    made to the service (``METHOD /path``). Fails on a console error or a request that failed
    (a CORS refusal is one)."""
    context = browser.new_context()
    page = context.new_page()
    paths: list[str] = []
    problems: list[str] = []
    page.on("request", lambda r: paths.append(f"{r.method} {urlsplit(r.url).path}")
            if r.url.startswith(service) else None)
    page.on("requestfailed", lambda r: problems.append(f"failed: {r.method} {r.url} {r.failure}"))
    page.on("console", lambda m: problems.append(f"console: {m.text}")
            if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    try:
        page.goto(url)
        page.wait_for_function("() => window.result !== undefined", timeout=WAIT_SECONDS * 1000)
        result = page.evaluate("() => window.result")
        assert "error" not in result and result.get("failed", 0) == 0, (url, result, problems)
        arrived()
    finally:
        context.close()
    assert problems == [], problems
    return paths


def _emails(record: dict[str, Any]) -> set[str]:
    found: set[str] = set()
    if isinstance(record.get("email"), str):
        found.add(record["email"])
    for item in record.get("emails") or []:
        found.add(item["value"] if isinstance(item, dict) else item)
    return found
