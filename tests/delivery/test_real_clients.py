"""The real SDKs, end to end: `@segment/analytics-node` (Node.js; Basic auth, /v1/batch) and
`rudder-sdk-python` (identify traits only in context.traits) each send identify, track and
page to the service over HTTP; delivery takes them into the sandbox as a contact, an event and
a page view."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from rudderstack.analytics.client import Client as RudderClient

from tests.delivery.conftest import WRITE_KEY, Pipeline
from tests.support.npm_cache import node_or_skip, npm_package

ANALYTICS_NODE = "@segment/analytics-node"
ANALYTICS_NODE_VERSION = "3.1.0"

NODE_SCRIPT = r"""
const [modules, host, writeKey] = process.argv.slice(2);
const { Analytics } = require(require.resolve("@segment/analytics-node", { paths: [modules] }));
const analytics = new Analytics({ writeKey, host, flushAt: 20, flushInterval: 100, maxRetries: 1 });
const requests = [];
const errors = [];
analytics.on("http_request", (r) => requests.push({
  url: r.url, method: r.method,
  auth: String(r.headers.Authorization || r.headers.authorization || "").split(" ")[0],
}));
analytics.on("error", (e) => errors.push(String((e && (e.code || e.message)) || e)));
const who = { userId: "node-user-1" };
analytics.identify({ ...who, messageId: "node-identify",
  traits: { email: "ada.node@example.com", firstName: "Ada", lastName: "Node" } });
analytics.track({ ...who, messageId: "node-track", event: "Plan Chosen",
  properties: { plan: "pro" } });
analytics.page({ ...who, messageId: "node-page", name: "Pricing",
  properties: { url: "https://example.com/pricing", title: "Pricing" } });
analytics.closeAndFlush({ timeout: 30000 }).then(() => {
  process.stdout.write(JSON.stringify({ requests, errors }));
});
"""


def _delivered(pipeline: Pipeline, *message_ids: str) -> dict[str, dict[str, Any]]:
    assert pipeline.app.state.sorting.wait_sorted(30), "the inbox was not sorted"
    pipeline.deliver()
    out = {}
    for message_id in message_ids:
        stored = pipeline.store.get_message("web", message_id)
        assert stored is not None, message_id
        assert stored.status == "delivered", (message_id, stored.status, stored.reason,
                                              stored.last_error)
        out[message_id] = stored.normalized()
    return out


def _contact_and_tracking(pipeline: Pipeline, email: str) -> tuple[dict[str, Any], list[Any]]:
    contacts = [c for c in pipeline.records("contacts")
                if email in json.dumps(c.get("emails")) or c.get("email") == email]
    assert len(contacts) == 1, pipeline.records("contacts")
    return contacts[0], pipeline.sandbox.state.snapshot()["tracking"]


def _tracked(tracking: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [t for t in tracking if t.get("type") == kind]


def test_segment_analytics_node_delivers_identify_track_and_page(
    suite: Pipeline, tmp_path: Path
) -> None:
    node = node_or_skip()
    modules = npm_package(ANALYTICS_NODE, ANALYTICS_NODE_VERSION)
    script = tmp_path / "send.cjs"
    script.write_text(NODE_SCRIPT)
    result = subprocess.run(
        [node, str(script), str(modules), suite.ingest_url, WRITE_KEY],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["errors"] == []
    assert report["requests"], "the client sent nothing"
    for request in report["requests"]:
        assert request == {"url": f"{suite.ingest_url}/v1/batch", "method": "POST",
                           "auth": "Basic"}
    messages = _delivered(suite, "node-identify", "node-track", "node-page")
    assert messages["node-identify"]["context"]["library"]["name"] == "@segment/analytics-node"
    contact, tracking = _contact_and_tracking(suite, "ada.node@example.com")
    assert contact["first_name"] == "Ada" and contact["last_name"] == "Node"
    assert contact["external_id"] == "node-user-1"
    (event,) = _tracked(tracking, "event")
    assert event["data"]["name"] == "Plan Chosen" and event["targetable_id"] == contact["id"]
    (page,) = _tracked(tracking, "page_view")
    assert page["data"]["url"] == "https://example.com/pricing"
    assert page["targetable_id"] == contact["id"]


def test_rudder_sdk_python_delivers_identify_track_and_page(suite: Pipeline) -> None:
    errors: list[Exception] = []

    def on_error(error: Exception, batch: object) -> None:
        errors.append(error)

    client = RudderClient(WRITE_KEY, host=suite.ingest_url, gzip=True, sync_mode=True,
                          on_error=on_error, max_retries=1)
    client.identify(user_id="rudder-user-1", message_id="rudder-identify",
                    traits={"email": "grace.rudder@example.com", "firstName": "Grace",
                            "lastName": "Rudder", "cfAlternateNumber": "42"})
    client.track(user_id="rudder-user-1", event="Plan Chosen", properties={"plan": "team"},
                 message_id="rudder-track")
    client.page(user_id="rudder-user-1", name="Pricing", message_id="rudder-page",
                properties={"url": "https://example.com/pricing", "title": "Pricing"})
    assert errors == []
    messages = _delivered(suite, "rudder-identify", "rudder-track", "rudder-page")
    identify = messages["rudder-identify"]
    assert "traits" not in identify  # RudderStack's SDK sends them in context.traits only
    assert identify["context"]["traits"]["firstName"] == "Grace"
    contact, tracking = _contact_and_tracking(suite, "grace.rudder@example.com")
    assert contact["first_name"] == "Grace" and contact["last_name"] == "Rudder"
    assert contact["external_id"] == "rudder-user-1"
    assert contact["custom_field"]["cf_alternate_number"] == "42"
    (event,) = _tracked(tracking, "event")
    assert event["data"]["name"] == "Plan Chosen" and event["targetable_id"] == contact["id"]
    (page,) = _tracked(tracking, "page_view")
    assert page["data"]["url"] == "https://example.com/pricing"
    assert page["targetable_id"] == contact["id"]


@pytest.mark.parametrize("gzip", [True, False])
def test_rudder_batches_keep_working(suite: Pipeline, gzip: bool) -> None:
    """Rudder's /v1/batch bodies (Basic auth, context.traits, its own sentAt) as they are."""
    client = RudderClient(WRITE_KEY, host=suite.ingest_url, gzip=gzip, upload_size=10,
                          upload_interval=0.05, max_retries=1)
    try:
        for index in range(25):
            client.identify(user_id=f"rb-{index % 5}", message_id=f"rb-{gzip}-{index}",
                            traits={"email": f"rb{index % 5}@example.com", "n": index})
        client.flush()
    finally:
        client.join()
    assert suite.app.state.sorting.wait_sorted(30)
    for index in range(25):
        stored = suite.store.get_message("web", f"rb-{gzip}-{index}")
        assert stored is not None and stored.status == "pending", index
