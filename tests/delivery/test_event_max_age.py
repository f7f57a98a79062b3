"""`event_max_age_days` end to end: a backfill imported from a file (ingest/importer.py) and a
batch over HTTP, delivered into the sandbox; old events are filtered with the reason when
delivery plans them, records and recent events are delivered."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from freshsales_destination.core.segment import format_time
from freshsales_destination.ingest.import_reader import MessageFile
from freshsales_destination.ingest.importer import Importer, resolve_source
from tests.delivery.conftest import Pipeline, make_pipeline

DAY = 86_400.0


def _at(days_ago: float) -> str:
    return format_time(datetime.fromtimestamp(time.time() - days_ago * DAY, UTC))


def _history() -> list[dict[str, Any]]:
    return [
        {"type": "identify", "userId": "ann", "messageId": "id-old", "timestamp": _at(90),
         "traits": {"email": "ann@example.com", "firstName": "Ann"}},
        {"type": "track", "userId": "ann", "messageId": "tr-old", "event": "Old Event",
         "timestamp": _at(90)},
        {"type": "page", "userId": "ann", "messageId": "pg-old", "name": "Old Page",
         "timestamp": _at(45)},
        {"type": "track", "userId": "ann", "messageId": "tr-new", "event": "New Event",
         "timestamp": _at(2)},
    ]


@pytest.fixture
def aged(tmp_path: Path) -> Iterator[Pipeline]:
    yield from make_pipeline(tmp_path, "suite", destination={"event_max_age_days": 30})


def _check(pipeline: Pipeline) -> None:
    def message(message_id: str) -> Any:
        stored = pipeline.store.get_message("web", message_id)
        assert stored is not None
        return stored

    assert message("id-old").status == "delivered"  # records are never too old
    assert message("tr-new").status == "delivered"
    for message_id, kind, days in [("tr-old", "track", "90.0"), ("pg-old", "page", "45.0")]:
        old = message(message_id)
        assert old.status == "filtered"
        assert old.reason == (
            f"{kind} event is {days} days old, older than event_max_age_days = 30 of this destination"
        )
    contacts = pipeline.records("contacts")
    assert len(contacts) == 1 and contacts[0]["first_name"] == "Ann"
    tracked = [orjson.dumps(entry).decode() for entry in pipeline.sandbox.state.snapshot()["tracking"]]
    assert len(tracked) == 1 and "New Event" in tracked[0], tracked  # no call on the old ones
    notes = pipeline.records("notes")
    assert not any("Old" in note.get("description", "") for note in notes)


def test_imported_backfill_filters_old_events(aged: Pipeline) -> None:
    importer = Importer(
        aged.store, resolve_source(aged.settings, name="web", write_key=None),
        max_message_bytes=32 * 1024,
    )
    data = b"".join(orjson.dumps(m) + b"\n" for m in _history())
    importer.run_file("history.jsonl", MessageFile(io.BytesIO(data)))
    assert importer.summary.stored == 4  # stored: the age is judged when delivery plans
    aged.deliver()
    _check(aged)


def test_http_batch_filters_old_events(aged: Pipeline) -> None:
    aged.send("/v1/batch", {"batch": _history()})
    aged.deliver()
    _check(aged)


def test_without_the_setting_old_events_are_delivered(suite: Pipeline) -> None:
    suite.send("/v1/batch", {"batch": _history()})
    suite.deliver()
    assert suite.store.get_message("web", "tr-old").status == "delivered"  # type: ignore[union-attr]
    tracking = suite.sandbox.state.snapshot()["tracking"]
    names = orjson.dumps(tracking).decode()
    # Both tracks; the page is not delivered by the default mapping, for another reason.
    assert len(tracking) == 2 and "New Event" in names and "Old Event" in names
    page = suite.store.get_message("web", "pg-old")
    assert page is not None and "event_max_age_days" not in (page.reason or "")
