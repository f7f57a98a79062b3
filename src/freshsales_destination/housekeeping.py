"""Periodic store housekeeping: forget what is older than the dedup window.

Finished messages (delivered, discarded, filtered, dropped...) and the delivery ledger are kept
for `store.dedup_days`, so a resent batch or a replay within that window is still recognised;
after it they are removed so the store does not grow forever, each with its journey (the
calls and retries delivery recorded for it, in the same transaction). Pending and dead messages
are never removed here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from freshsales_destination.delivery.bulk import BULK_SINGLE, LANES_NAMESPACE
from freshsales_destination.store.base import Store

log = logging.getLogger(__name__)

DAY = 86400.0


def prune_once(store: Store, *, dedup_days: int, now: float) -> tuple[int, int]:
    cutoff = now - dedup_days * DAY
    messages = store.prune(older_than=cutoff)
    ledger = store.kv_prune("ledger:", older_than=cutoff)
    store.kv_prune("create-claim:", older_than=now - DAY)  # claims last minutes at most
    store.kv_prune(f"{BULK_SINGLE}:", older_than=cutoff)  # messages handed back by bulk jobs
    # The lanes of bulk jobs: a job is given up after 30 min, so two days is long past them.
    store.kv_prune(f"{LANES_NAMESPACE}:", older_than=now - 2 * DAY)
    return messages, ledger


class Housekeeper:
    def __init__(
        self,
        store: Store,
        *,
        dedup_days: int,
        interval: float = 3600.0,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.dedup_days = dedup_days
        self.interval = interval
        self.now = now
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="housekeeping")

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                removed = await asyncio.to_thread(
                    prune_once, self.store, dedup_days=self.dedup_days, now=self.now()
                )
                if any(removed):
                    log.info("housekeeping removed %d messages and %d ledger entries", *removed)
            except Exception:  # noqa: BLE001 - housekeeping must never stop the service
                log.exception("housekeeping failed; will try again")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=self.interval)

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
