"""Ingest CPU per event, in process: requests through the ASGI app, then sorting, no sockets.

Not a test (pytest does not collect ``bench/``). It measures the tree on ``sys.path``, so two
trees compare side by side by alternating runs with ``PYTHONPATH``:

    git archive BASE src | tar -x -C /tmp/base   # and the same of HEAD into /tmp/head
    for i in 1 2 3 4 5 6; do
      for t in base head; do PYTHONPATH=/tmp/$t/src .venv/bin/python bench/ingest_cpu.py; done
    done

Each run builds the service (`build_app`, SQLite in a temporary directory, delivery off),
posts ``--requests`` batches of 100 new track events (8 at a time) and waits until sorting has
emptied the inbox; it prints the process CPU time (user + system, all threads) per event.
Process CPU is less sensitive to other processes on the machine than throughput is, though
not immune (caches, frequency): quote the median of several alternating runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid

import httpx2

from freshsales_destination.config import settings_from_dict
from freshsales_destination.service import build_app
from freshsales_destination.store.factory import open_store

BATCH = 100


async def run(requests: int) -> float:
    with tempfile.TemporaryDirectory(prefix="fsd-bench-cpu-") as tmp:
        settings = settings_from_dict({
            "store": {"url": f"sqlite:///{tmp}/queue.db"},
            "delivery": {"enabled": False},
            "sources": [{"write_key": "wk", "destination": "crm", "name": "web"}],
            "destinations": {"crm": {"domain": "acme", "api_key": "k"}},
        })
        store = open_store(settings.store.url)
        app = build_app(settings, store, deliver=False)
        bodies = [
            json.dumps({"batch": [
                {"type": "track", "event": "Order Completed", "userId": f"user-{j}",
                 "messageId": str(uuid.uuid4()), "properties": {"revenue": j, "sku": "A-1"}}
                for j in range(BATCH)
            ]})
            for _ in range(requests)
        ]
        try:
            async with app.router.lifespan_context(app):
                transport = httpx2.ASGITransport(app=app)
                async with httpx2.AsyncClient(transport=transport, base_url="http://bench") as client:
                    gate = asyncio.Semaphore(8)

                    async def post(body: str) -> None:
                        async with gate:
                            response = await client.post(
                                "/v1/batch", content=body, auth=("wk", ""),
                                headers={"Content-Type": "application/json"},
                            )
                            assert response.status_code == 200, response.text

                    start = time.process_time()
                    await asyncio.gather(*(post(body) for body in bodies))
                    while store.inbox_count()[1]:
                        await asyncio.sleep(0.01)
                    return (time.process_time() - start) / (requests * BATCH)
        finally:
            store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    print(f"{asyncio.run(run(args.requests)) * 1e6:.2f} us of CPU per event")


if __name__ == "__main__":
    main()
