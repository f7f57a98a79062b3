"""When the hour's budget runs low, record changes go before events."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.delivery.conftest import FakeClock, make_pipeline


@pytest.mark.parametrize("records_first", [True, False])
def test_identify_overtakes_queued_events_when_the_budget_is_scarce(
    tmp_path: Path, records_first: bool
) -> None:
    clock = FakeClock()
    pipelines = make_pipeline(
        tmp_path, "suite", clock=clock, records_first=records_first,
        destination={"rate_limit_per_hour": 20, "rate_limit_per_minute": 20},
    )
    pipeline = next(pipelines)
    try:
        # Many people's page views first, then one person's identify.
        batch = [
            {"type": "page", "userId": f"reader-{n}", "messageId": f"page-{n}",
             "properties": {"url": f"https://example.com/{n}"}}
            for n in range(30)
        ]
        batch.append({"type": "identify", "userId": "buyer", "messageId": "identify-buyer",
                      "traits": {"email": "buyer@example.com", "title": "CTO"}})
        pipeline.send("/v1/batch", {"batch": batch})
        pipeline.deliver(now=clock)
        identify = pipeline.store.get_message("web", "identify-buyer")
        assert identify is not None
        pages = [pipeline.store.get_message("web", f"page-{n}") for n in range(30)]
        delivered = sum(1 for p in pages if p is not None and p.status == "delivered")
        writes = [e for e in pipeline.sandbox.request_log() if e["method"] != "GET"]
        assert len(writes) <= 20 - 9  # the hour, less the 9 schema calls
        if records_first:
            # Events stop at the 20 % reserve; the identify still gets through.
            assert identify.status == "delivered"
            assert 0 < delivered < 30
        else:
            # Without the priority, the events spend the whole hour first.
            assert identify.status == "pending"
            assert delivered == 20 - 9
    finally:
        pipelines.close()
