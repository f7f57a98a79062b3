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
