"""`status` splits each destination's backlog into records and events, with a time to drain
for each (admin/destinations.py `backlog_drain`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from freshsales_destination.admin.destinations import backlog_drain

SCRIPT = Path(sys.executable).with_name("freshsales-destination")
BUDGET: dict[str, Any] = {"left_this_hour": 100, "per_minute": 400, "per_hour": 1000}


def test_records_and_events_drain_separately() -> None:
    counts = {"identify": 50, "group": 10, "track": 200, "page": 40}
    out = backlog_drain(counts, counts, BUDGET)
    assert (out["backlog_records"], out["backlog_events"]) == (60, 240)
    # 60 records within what is left of the hour, at the minute's pace: 9 s.
    assert out["drain_records_seconds"] == 9 and out["drain_records"] == "about 9 s"
    # Events wait for everything: 100 calls this hour (15 s), 200 more at 1,000 an hour.
    assert out["drain_events_seconds"] == 15 + 720
    assert out["drain_events"] == "about 12 min"


def test_an_account_shared_by_two_destinations_drains_both() -> None:
    own = {"identify": 10, "track": 5}
    shared = {"identify": 2010, "track": 5, "screen": 1000}
    out = backlog_drain(own, shared, BUDGET)
    assert (out["backlog_records"], out["backlog_events"]) == (10, 5)
    assert out["drain_records_seconds"] == round(100 / 400 * 60 + 1910 / 1000 * 3600)
    assert out["drain_events_seconds"] == round(100 / 400 * 60 + 2915 / 1000 * 3600)


def test_with_bulk_upsert_records_drain_at_a_few_calls_per_hundred() -> None:
    """20,000 people's identifies: one call each would take 100 hours at 1,000 an hour; in
    bulk jobs about four calls per 100 (800 calls), within the hour; events follow them."""
    counts = {"identify": 20_000, "track": 200}
    single = backlog_drain(counts, counts, BUDGET)
    bulk = backlog_drain(counts, counts, BUDGET, bulk=True)
    assert single["drain_records_seconds"] == round(100 / 400 * 60 + 19_900 / 1000 * 3600)
    assert bulk["drain_records_seconds"] == round(100 / 400 * 60 + 700 / 1000 * 3600)
    assert bulk["drain_events_seconds"] == round(100 / 400 * 60 + 900 / 1000 * 3600)


def test_no_events_nothing_to_drain_for_them() -> None:
    out = backlog_drain({"identify": 4}, {"identify": 4}, BUDGET)
    assert out["drain_events_seconds"] == 0 and out["drain_events"] == "nothing to deliver"
    empty = backlog_drain({}, {}, BUDGET)
    assert empty["drain_records"] == "nothing to deliver"


def test_status_command_shows_the_split(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        f'[store]\nurl = "sqlite:///{tmp_path / "queue.db"}"\n'
        '[[sources]]\nwrite_key = "wk_status_1"\ndestination = "acme"\nname = "web"\n'
        '[destinations.acme]\ndomain = "acme"\napi_key = "fs-key-status"\n'
    )
    config.chmod(0o600)
    history = tmp_path / "history.jsonl"
    history.write_bytes(b"".join(
        orjson.dumps(m) + b"\n" for i in range(30) for m in (
            {"type": "identify", "userId": f"u{i}", "messageId": f"i{i}", "traits": {"email": f"{i}@x.io"}},
            {"type": "track", "userId": f"u{i}", "messageId": f"t{i}", "event": "Paid"},
            {"type": "page", "userId": f"u{i}", "messageId": f"p{i}", "name": "Home"},
        )
    ))
    imported = subprocess.run([str(SCRIPT), "import", str(history), "-c", str(config)],
                              capture_output=True, timeout=120)
    assert imported.returncode == 0, imported.stderr
    status = subprocess.run([str(SCRIPT), "status", "--json", "-c", str(config)], capture_output=True,
                            timeout=120)
    assert status.returncode == 0, status.stderr
    acme = json.loads(status.stdout)["destinations"]["acme"]
    assert acme["backlog"] == 90
    assert (acme["backlog_records"], acme["backlog_events"]) == (30, 60)
    assert 0 < acme["drain_records_seconds"] < acme["drain_events_seconds"]
    assert acme["drain_events_seconds"] == acme["drain_estimate_seconds"]
