"""Assembles delivery for every configured destination and runs its workers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx2

from freshsales_destination.config import DestinationConfig, Settings
from freshsales_destination.core.mapping_settings import DestinationSettings
from freshsales_destination.core.retry import RetryPolicy
from freshsales_destination.delivery.budget import StoreBudget
from freshsales_destination.delivery.bulk import BulkSender, BulkSettings
from freshsales_destination.delivery.executor import Executor
from freshsales_destination.delivery.health import DestinationHealth, HealthObservingBudget
from freshsales_destination.delivery.memory import DeliveryMemory
from freshsales_destination.delivery.offloop import store_call
from freshsales_destination.delivery.schema_cache import SchemaCache
from freshsales_destination.delivery.worker import DestinationWorker
from freshsales_destination.freshsales.client import FreshsalesClient
from freshsales_destination.observe.metrics import call_observer
from freshsales_destination.store.base import Store
from freshsales_destination.store.wakeups import (
    Listener,
    WorkSignal,
    listener_for,
    signal_for,
)

log = logging.getLogger(__name__)

SUMMARY_SECONDS = 60.0
SUMMARY_FIELDS = ("delivered", "skipped", "discarded", "retried", "throttled", "dead")


@dataclass
class DestinationRuntime:
    name: str
    client: FreshsalesClient
    budget: StoreBudget
    executor: Executor
    schema: SchemaCache
    workers: list[DestinationWorker]
    health: DestinationHealth | None = None
    bulk: BulkSender | None = None


def budget_account_key(config: DestinationConfig) -> str:
    """Destinations sharing one Freshsales account (same base URL) share one budget."""
    return config.resolved_base_url()


def build_runtime(
    name: str,
    config: DestinationConfig,
    settings: Settings,
    store: Store,
    *,
    now: Callable[[], float] = time.time,
    transport: httpx2.AsyncBaseTransport | None = None,
    sleep: Callable[[float], Awaitable[object]] | None = None,
    rng: random.Random | None = None,
) -> DestinationRuntime:
    delivery = settings.delivery
    # The client turns absolute rate-limit times (X-RateLimit-Reset as an epoch) into delays:
    # it must read the same clock as the budget and the retry decisions.
    client = FreshsalesClient.from_config(config, transport=transport, clock=now)
    client.on_call = call_observer(name)  # counted in /metrics (observe/metrics.py)
    budget = StoreBudget(
        store=store,
        account=budget_account_key(config),
        per_hour=config.rate_limit_per_hour,
        per_minute=config.rate_limit_per_minute,
        now=now,
        records_first=delivery.records_first,
        sleep=sleep or asyncio.sleep,
        destination=name,
    )
    memory = DeliveryMemory(store, name)
    # Every call's outcome also tells the destination's health (delivery/health.py).
    health = DestinationHealth(store, name, base_url=client.base_url, now=now)
    executor = Executor(
        client=client, memory=memory, budget=HealthObservingBudget(budget, health),
        product=config.product, now=now,
    )
    schema = SchemaCache(
        store=store, destination=name, client=client,
        budget=HealthObservingBudget(budget, health, schema=True), product=config.product,
        now=now,
    )
    mapping = DestinationSettings.build(
        config.product, config.app_token is not None, config.mapping,
        events_via=config.events_via, events_activity_type=config.events_activity_type,
        event_max_age_days=config.event_max_age_days,
    )
    executor.keeper.company_becomes_primary = mapping.mapping.company_becomes_primary
    policy = RetryPolicy(
        base_seconds=delivery.backoff_base_seconds,
        cap_seconds=delivery.backoff_cap_seconds,
        error_window_seconds=delivery.retry_window_hours * 3600,
        throttle_window_seconds=delivery.throttle_window_hours * 3600,
    )
    bulk: BulkSender | None = None
    if config.product == "suite" and config.bulk == "auto":
        # One per destination, shared by its workers; its state (jobs, facts) is in the store.
        bulk = BulkSender(
            destination=name,
            settings=BulkSettings(
                min_records=config.bulk_min_records,
                job_timeout_seconds=config.bulk_job_timeout_seconds,
                poll_lease_seconds=delivery.lease_seconds,  # as a lane's: a dead poller's job
            ),
            facts=executor.keeper.facts, memory=memory,
            calls_per_hour=lambda: budget.effective().per_hour, now=now, sleep=sleep,
        )
    workers = [
        DestinationWorker(
            name=name, store=store, settings=mapping, executor=executor, memory=memory,
            schema=schema, policy=policy, records_first=budget.scarce, now=now, rng=rng,
            health=health, lease_seconds=delivery.lease_seconds, bulk=bulk,
        )
        for _ in range(delivery.workers)
    ]
    return DestinationRuntime(name, client, budget, executor, schema, workers, health, bulk)


class DeliveryEngine:
    """Runs every destination's workers until stopped.

    An idle worker sleeps until the store's work signal wakes it (store/wakeups.py: sorting
    stored messages, a held lane's time came, a PostgreSQL NOTIFY from another process), or
    `poll_interval` passes: the slow poll is only a safety net.
    """

    def __init__(
        self,
        runtimes: list[DestinationRuntime],
        *,
        poll_interval: float = 5.0,
        signal: WorkSignal | None = None,
        listener: Listener | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.runtimes = runtimes
        self.poll_interval = poll_interval
        if signal is None:  # the store's own, which its sorting in this process notifies
            stores = [w.store for r in runtimes for w in r.workers]
            signal = signal_for(stores[0]) if stores else WorkSignal()
        self.signal = signal
        self.listener = listener
        self.now = now
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._ready_asked: dict[str, float] = {}  # destination -> when next_ready_at was read
        # One log line per this many seconds in which something was delivered or failed.
        self.summary_every = SUMMARY_SECONDS
        self._summarised: dict[str, dict[str, int]] = {}

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        store: Store,
        *,
        now: Callable[[], float] = time.time,
        transport: httpx2.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[object]] | None = None,
    ) -> DeliveryEngine:
        runtimes = [
            build_runtime(name, config, settings, store, now=now, transport=transport, sleep=sleep)
            for name, config in sorted(settings.destinations.items())
        ]
        return cls(
            runtimes, poll_interval=settings.delivery.poll_interval, signal=signal_for(store),
            listener=listener_for(store), now=now,
        )

    def start(self) -> None:
        if self.listener is not None:
            self.listener.start()
        for runtime in self.runtimes:
            for index, worker in enumerate(runtime.workers):
                worker.should_stop = self._stop.is_set
                self._tasks.append(
                    asyncio.create_task(self._loop(worker), name=f"deliver-{runtime.name}-{index}")
                )
        self._tasks.append(asyncio.create_task(self._summaries(), name="delivery-summary"))

    async def _summaries(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=self.summary_every)
            self.log_summary()

    def log_summary(self) -> None:
        """One line per destination that did something since the last one (never when idle):
        what this process delivered, skipped, discarded, retried, throttled and dead-lettered."""
        for runtime in self.runtimes:
            totals = {name: 0 for name in SUMMARY_FIELDS}
            for worker in runtime.workers:
                for name in SUMMARY_FIELDS:
                    totals[name] += getattr(worker.stats, name)
            before = self._summarised.get(runtime.name, dict.fromkeys(SUMMARY_FIELDS, 0))
            delta = {name: totals[name] - before[name] for name in SUMMARY_FIELDS}
            self._summarised[runtime.name] = totals
            if not any(delta.values()):
                continue
            log.info(
                "delivery to %s in the last %.0f s: %s", runtime.name, self.summary_every,
                ", ".join(f"{value} {name}" for name, value in delta.items() if value),
                extra={"kind": "delivery_summary", "destination": runtime.name, **delta},
            )

    async def _loop(self, worker: DestinationWorker) -> None:
        worker.signal = self.signal
        while not self._stop.is_set():
            seen = self.signal.generation  # before looking: a later notification is not lost
            try:
                worked = await worker.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a worker must survive anything and retry later
                log.exception("delivery worker for %s failed; retrying shortly", worker.name)
                worked = False
            if not worked:
                budget_wait = worker.executor.budget.wait_hint()
                if budget_wait:
                    # Spent budget or a paused destination: new work changes nothing, so
                    # signals are not listened to (they would only make it claim and let go).
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(
                            self._stop.wait(), timeout=max(min(budget_wait, 30.0), 0.05)
                        )
                    continue
                await self._wake_when_ready(worker)
                await self._idle(seen, worker.name)

    async def _wake_when_ready(self, worker: DestinationWorker) -> None:
        """Set a wake-up for the end of the destination's first hold or lease over a lane with
        messages (a retry's time, a dead worker's lease), which no notification may announce
        (it was set before this process listened, or by another SQLite process). Asked at most
        once a second per destination: a burst's idle workers share the timer it sets (and a
        lease lasts far longer than that)."""
        asked = time.monotonic()
        if asked - self._ready_asked.get(worker.name, -math.inf) < 1.0:
            return
        self._ready_asked[worker.name] = asked
        try:
            when = await store_call(worker.store.next_ready_at, worker.name, now=self.now())
        except Exception:  # noqa: BLE001 - the store is failing: the slow poll still runs
            log.debug("could not read the next ready time of %s", worker.name, exc_info=True)
            return
        if when is not None:
            self.signal.notify_at(when, worker.name)

    async def _idle(self, seen: int, key: str) -> None:
        """Sleep until signalled for `key` (or the slow poll), or until stopped."""
        stopping = asyncio.ensure_future(self._stop.wait())
        woken = asyncio.ensure_future(
            self.signal.wait(self.poll_interval, since=seen, now=self.now, key=key)
        )
        try:
            await asyncio.wait({stopping, woken}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (stopping, woken):
                task.cancel()
            for task in (stopping, woken):
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def drain(self, *, timeout: float = 30.0) -> None:
        """Run until no destination has ready work (for tests and the CLI), then return."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            progressed = False
            for runtime in self.runtimes:
                for worker in runtime.workers[:1]:
                    progressed = await worker.run_once() or progressed
            if not progressed:
                return

    async def stop(self, *, grace: float = 10.0) -> None:
        """Stop taking lanes; let the units in flight finish (up to `grace` seconds).

        Cancelling a call in flight could leave a side effect in Freshsales without its
        ledger entry, so a restart would repeat it: workers get time to finish first.
        """
        self._stop.set()
        if self.listener is not None:
            await asyncio.to_thread(self.listener.stop)
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=grace)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for runtime in self.runtimes:
            await runtime.client.aclose()


class DeliveryThread:
    """Runs an engine on an event loop of its own, in a thread.

    Delivery writes small things to the store all the time (ledger, digests, identities,
    budget), synchronously and with a durable commit each; on its own loop these never stall
    the ingest API's loop, whose latency clients see.
    """

    def __init__(self, engine: DeliveryEngine) -> None:
        self.engine = engine
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._done: asyncio.Event | None = None
        self._ready = threading.Event()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="delivery", daemon=True)
        self._thread.start()
        self._ready.wait(timeout=10)

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._done = asyncio.Event()
            self.engine.start()
            self._ready.set()
            await self._done.wait()
            await self.engine.stop()

        try:
            asyncio.run(main())
        except Exception:  # noqa: BLE001 - report, never take the service down with it
            log.exception("the delivery thread stopped on an error")
        finally:
            self._ready.set()

    async def stop(self, *, timeout: float = 30.0) -> None:
        loop, done = self._loop, self._done
        if loop is not None and done is not None and not loop.is_closed():
            loop.call_soon_threadsafe(done.set)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, timeout)
