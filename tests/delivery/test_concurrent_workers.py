"""Several workers of one destination, running as `serve` runs them (engine.start)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx2

from freshsales_destination.delivery.engine import DeliveryEngine
from tests.delivery.conftest import Pipeline, make_pipeline

EVENTS_PATH = "/crm/sales/track/events"


def _run_until_drained(engine: DeliveryEngine, pipeline: Pipeline, *, seconds: float) -> None:
    """Run the engine as `serve` does until nothing is pending (or `seconds` pass), then stop."""

    async def run() -> None:
        engine.start()
        try:
            deadline = time.monotonic() + seconds
            while pipeline.store.pending_count("crm") and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        finally:
            await engine.stop()

    asyncio.run(run())


def _slow_events(pipeline: Pipeline, seconds: float, count: int) -> str:
    """Script the sandbox's next `count` tracked events to answer after `seconds`."""
    admin = f"{pipeline.sandbox.root_url}/_sandbox/script"
    response = httpx2.post(
        admin, headers=pipeline.sandbox.auth_headers,
        json={"method": "POST", "path": EVENTS_PATH,
              "responses": [{"action": "slow", "seconds": seconds}] * count},
    )
    assert response.status_code == 200, response.text
    return admin


def test_four_workers_fetch_the_schema_once_and_deliver_each_person_once(
    tmp_path: Path,
) -> None:
    pipelines = make_pipeline(tmp_path, "suite", workers=4, poll_interval=0.05)
    pipeline = next(pipelines)
    try:
        batch = [
            {"type": "identify", "userId": f"w-{n}", "messageId": f"w-{n}",
             "traits": {"email": f"w{n}@example.com", "title": "T"}}
            for n in range(40)
        ]
        pipeline.send("/v1/batch", {"batch": batch})
        engine = DeliveryEngine.from_settings(pipeline.settings, pipeline.store)
        assert len(engine.runtimes[0].workers) == 4
        _run_until_drained(engine, pipeline, seconds=20)
        assert pipeline.store.count_by_status() == {"delivered": 40}
        log = pipeline.sandbox.request_log()
        schema_reads = [e for e in log if e["method"] == "GET"]
        assert len(schema_reads) == 9  # 3 field settings + 6 selectors, fetched once
        upserts = [e for e in log if e["path"].endswith("/contacts/upsert")]
        assert len(upserts) == 40
        assert len(pipeline.records("contacts")) == 40
    finally:
        pipelines.close()


def test_stopping_lets_the_call_in_flight_finish_and_record_it(tmp_path: Path) -> None:
    """A stop must not cut a call in flight: its side effect would have no ledger entry."""
    pipelines = make_pipeline(tmp_path, "suite", workers=1, poll_interval=0.05)
    pipeline = next(pipelines)
    try:
        pipeline.send("/v1/track", {"userId": "slow@example.com", "messageId": "slow-1",
                                    "event": "Signed In"})
        admin = _slow_events(pipeline, 1.0, 1)
        engine = DeliveryEngine.from_settings(pipeline.settings, pipeline.store)

        async def run() -> None:
            engine.start()
            # Wait until the sandbox has taken the scripted answer: the call is in flight.
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                queued = (await asyncio.to_thread(
                    httpx2.get, admin, headers=pipeline.sandbox.auth_headers)).json()
                if not queued.get("scripts"):
                    break
                await asyncio.sleep(0.02)
            await engine.stop()

        asyncio.run(run())
        stored = pipeline.store.get_message("web", "slow-1")
        assert stored is not None and stored.status == "delivered"
        assert len(pipeline.sandbox.state.snapshot()["tracking"]) == 1
    finally:
        pipelines.close()


def test_a_long_lane_keeps_its_lease_so_no_event_is_sent_twice(tmp_path: Path) -> None:
    """Units renew the lane's lease: another worker never takes a lane still being delivered."""
    pipelines = make_pipeline(tmp_path, "suite", workers=2, poll_interval=0.02)
    pipeline = next(pipelines)
    try:
        pipeline.send("/v1/batch", {"batch": [
            {"type": "track", "userId": "long@example.com", "messageId": f"long-{n}",
             "event": "Report Created"}
            for n in range(6)
        ]})
        _slow_events(pipeline, 0.4, 6)
        engine = DeliveryEngine.from_settings(pipeline.settings, pipeline.store)
        for worker in engine.runtimes[0].workers:
            worker.lease_seconds = 1.0  # shorter than the lane takes (6 x 0.4 s)
        _run_until_drained(engine, pipeline, seconds=15)
        assert pipeline.store.count_by_status() == {"delivered": 6}
        assert len(pipeline.sandbox.state.snapshot()["tracking"]) == 6
    finally:
        pipelines.close()
