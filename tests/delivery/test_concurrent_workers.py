"""Several workers of one destination, running as `serve` runs them (engine.start)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from freshsales_destination.delivery.engine import DeliveryEngine
from tests.delivery.conftest import make_pipeline


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

        async def run() -> None:
            engine.start()
            try:
                for _ in range(400):
                    if pipeline.store.pending_count("crm") == 0:
                        break
                    await asyncio.sleep(0.05)
            finally:
                await engine.stop()

        asyncio.run(run())
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
    import time

    import httpx2

    pipelines = make_pipeline(tmp_path, "suite", workers=1, poll_interval=0.05)
    pipeline = next(pipelines)
    try:
        pipeline.send("/v1/track", {"userId": "slow@example.com", "messageId": "slow-1",
                                    "event": "Signed In"})
        admin = f"{pipeline.sandbox.root_url}/_sandbox/script"
        response = httpx2.post(
            admin, headers=pipeline.sandbox.auth_headers,
            json={"method": "POST", "path": "/crm/sales/track/events",
                  "responses": [{"action": "slow", "seconds": 1.0}]},
        )
        assert response.status_code == 200, response.text
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
    import httpx2

    pipelines = make_pipeline(tmp_path, "suite", workers=2, poll_interval=0.02)
    pipeline = next(pipelines)
    try:
        pipeline.send("/v1/batch", {"batch": [
            {"type": "track", "userId": "long@example.com", "messageId": f"long-{n}",
             "event": "Report Created"}
            for n in range(6)
        ]})
        response = httpx2.post(
            f"{pipeline.sandbox.root_url}/_sandbox/script", headers=pipeline.sandbox.auth_headers,
            json={"method": "POST", "path": "/crm/sales/track/events",
                  "responses": [{"action": "slow", "seconds": 0.4}] * 6},
        )
        assert response.status_code == 200, response.text
        engine = DeliveryEngine.from_settings(pipeline.settings, pipeline.store)
        for worker in engine.runtimes[0].workers:
            worker.lease_seconds = 1.0  # shorter than the lane takes (6 x 0.4 s)

        async def run() -> None:
            engine.start()
            try:
                for _ in range(300):
                    if pipeline.store.pending_count("crm") == 0:
                        break
                    await asyncio.sleep(0.05)
            finally:
                await engine.stop()

        asyncio.run(run())
        assert pipeline.store.count_by_status() == {"delivered": 6}
        assert len(pipeline.sandbox.state.snapshot()["tracking"]) == 6
    finally:
        pipelines.close()
