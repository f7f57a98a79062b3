"""Destination health lines carry the fields an operator filters on, as dead_letter lines do:
``kind="destination_health"``, ``destination``, ``state`` and ``previous_state``."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from freshsales_destination.delivery.health import DestinationHealth
from freshsales_destination.freshsales.client import Reply
from freshsales_destination.freshsales.errors import AuthenticationFailed
from freshsales_destination.freshsales.ratelimit_headers import RateLimitInfo
from freshsales_destination.store.sqlite import SQLiteStore


def test_health_changes_are_logged_with_structured_fields(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = SQLiteStore(tmp_path / "q.db")
    store.open()
    clock = [1_000_000.0]
    try:
        health = DestinationHealth(store, "acme", base_url="https://acme.example",
                                   now=lambda: clock[0])
        caplog.set_level(logging.INFO)
        health.observe(AuthenticationFailed("Login failed", status=401))
        clock[0] += 3600
        health.observe(Reply(status=200, data={}, rate=RateLimitInfo(observed_at=clock[0])))
    finally:
        store.close()
    lines = [r for r in caplog.records if getattr(r, "kind", None) == "destination_health"]
    assert [(r.__dict__["state"], r.__dict__["previous_state"]) for r in lines] == [
        ("auth_failed", "healthy"), ("healthy", "auth_failed")]
    assert all(r.__dict__["destination"] == "acme" for r in lines)
    assert lines[0].levelno == logging.ERROR and "acme" in lines[0].getMessage()
    assert "delivery resumed" in lines[1].getMessage()
