"""Through ingest, delivery and the sandbox: what a clumsy client sends reaches Freshsales
clean (no control characters) and as one person (Unicode-normalised ids)."""

from __future__ import annotations

import json
import unicodedata

from tests.delivery.conftest import Pipeline

NFC = unicodedata.normalize("NFC", "café-ü")
NFD = unicodedata.normalize("NFD", "café-ü")


def test_control_characters_never_reach_freshsales(suite: Pipeline) -> None:
    suite.send("/v1/identify", {
        "userId": "ctl-1", "messageId": "ctl-identify",
        "traits": {"email": "ada@example.com", "firstName": "Ada\x00", "lastName": "Love\x07lace",
                   "title": "Count\x1bess\x7f\u0085", "cfAlternateNumber": "98\x00765",
                   "address": "1 Main St\nFloor 2\tBack"},
    })
    suite.send("/v1/track", {
        "userId": "ctl-1", "messageId": "ctl-track", "event": "Signed Up",
        "properties": {"plan": "pro\x00", "note\x00": "x\x01y"},
    })
    suite.deliver()
    for message_id in ("ctl-identify", "ctl-track"):
        stored = suite.store.get_message("web", message_id)
        assert stored is not None and stored.status == "delivered", stored
    (contact,) = suite.records("contacts")
    assert contact["first_name"] == "Ada" and contact["last_name"] == "Lovelace"
    assert contact["job_title"] == "Countess"
    assert contact["address"] == "1 Main St\nFloor 2\tBack"  # lines and tabs are kept
    assert contact["custom_field"]["cf_alternate_number"] == "98765"
    everything = json.dumps(suite.sandbox.state.snapshot())
    for escaped in ("\\u0000", "\\u0001", "\\u0007", "\\u001b", "\\u007f", "\\u0085"):
        assert escaped not in everything, escaped
    (tracked,) = suite.sandbox.state.snapshot()["tracking"]
    assert "pro" in json.dumps(tracked)
    # The queue keeps what the client sent: nothing is lost, only Freshsales gets it clean.
    stored = suite.store.get_message("web", "ctl-identify")
    assert stored is not None and stored.normalized()["traits"]["firstName"] == "Ada\x00"


def test_one_id_typed_two_ways_is_one_person_in_one_lane(suite: Pipeline) -> None:
    assert NFC != NFD
    suite.send("/v1/batch", {"batch": [
        {"type": "identify", "userId": NFC, "messageId": "nfc-1",
         "timestamp": "2026-01-01T00:00:00.000Z",
         "traits": {"email": "cafe@example.com", "title": "Barista"}},
        {"type": "identify", "userId": NFD, "messageId": "nfd-2",
         "timestamp": "2026-01-01T00:00:01.000Z", "traits": {"title": "Owner",
                                                             "email": "cafe@example.com"}},
        {"type": "track", "anonymousId": NFD, "messageId": "nfd-3", "event": "Visited"},
    ]})
    first = suite.store.get_message("web", "nfc-1")
    second = suite.store.get_message("web", "nfd-2")
    anonymous = suite.store.get_message("web", "nfd-3")
    assert first is not None and second is not None and anonymous is not None
    assert first.lane == second.lane == f"u:{NFC}"
    assert second.normalized()["userId"] == NFC
    assert anonymous.lane == f"a:{NFC}"
    suite.deliver()
    (contact,) = suite.records("contacts")
    assert contact["external_id"] == NFC
    assert contact["job_title"] == "Owner"  # the later message, in order
