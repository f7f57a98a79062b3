"""Sales activity dates from event properties, from ingest through delivery into the sandbox."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.delivery.conftest import Pipeline, make_pipeline

MAPPING: dict[str, Any] = {
    "track_events": {
        "Demo Booked": {
            "action": "sales_activity",
            "activity_type": "Meeting",
            "start_date_property": "properties.startDate",
            "end_date_property": "properties.endDate",
        }
    }
}


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[Pipeline]:
    yield from make_pipeline(tmp_path, "suite", mapping=MAPPING)


def _track(mid: str, **properties: Any) -> dict[str, Any]:
    return {
        "userId": "ada", "messageId": mid, "event": "Demo Booked",
        "timestamp": "2024-05-01T12:00:00.000Z", "properties": properties,
        "context": {"traits": {"email": "ada@example.com"}},
    }


def _instant(text: str) -> str:
    # The sandbox answers in the account's offset (+00:00); compare instants to the second.
    return text.replace("+00:00", "Z").replace(".000Z", "Z")


def test_activities_take_their_dates_from_properties_or_fall_back(pipeline: Pipeline) -> None:
    pipeline.send("/v1/track", _track("demo-1", startDate="2024-06-03T09:00:00+02:00",
                                      endDate="2024-06-03T10:30:00+02:00"))
    pipeline.send("/v1/track", _track("demo-2", startDate="2024-06-04T09:00:00Z", endDate="whenever"))
    pipeline.send("/v1/track", _track("demo-3", startDate="not a date"))
    pipeline.deliver()
    for mid in ("demo-1", "demo-2", "demo-3"):
        stored = pipeline.store.get_message("web", mid)
        assert stored is not None and stored.status == "delivered", (mid, stored)
    activities = sorted(pipeline.records("sales_activities"), key=lambda a: a["id"])
    dates = [(_instant(a["start_date"]), _instant(a["end_date"])) for a in activities]
    assert dates == [
        ("2024-06-03T07:00:00Z", "2024-06-03T08:30:00Z"),
        ("2024-06-04T09:00:00Z", "2024-06-04T09:00:00Z"),  # an end that is no date: its start
        ("2024-05-01T12:00:00Z", "2024-05-01T12:00:00Z"),  # a start that is no date: the event's time
    ]
