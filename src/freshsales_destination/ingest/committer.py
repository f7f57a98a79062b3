"""Group commit into the inbox, and sorting the inbox when requests leave time for it.

Each request hands its inbox entry over and waits; one writer thread takes everything waiting,
commits it in a single transaction, and then wakes every request whose entry was in it. A
request is answered 200 only after its entry is committed.

A second thread sorts the inbox (ingest/sorting.py) so that requests come first. Sorting runs
chunk after chunk once no request has arrived for `idle_after` seconds. While requests keep
arriving, it takes what they leave of one core (the GIL makes one core the budget of the
process) and at least `busy_share`: after each chunk it pauses long enough that its own CPU
time stays within that share. A burst is taken at full speed, a steady stream is sorted as it
comes, and even under saturation the queue behind the inbox never starves. Commits never
wait for a chunk's normalisation, only for its short final transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from freshsales_destination.errors import StoreError, StoreSaturated, StoreUnavailable
from freshsales_destination.ingest.sorting import Sorter
from freshsales_destination.store.base import InboxEntry, NewMessage, SortRaced, Store

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class _Ticket:
    entry: InboxEntry
    future: asyncio.Future[None]


@dataclass
class CommitStats:
    commits: int = 0
    entries: int = 0
    messages: int = 0
    largest_commit: int = 0
    failures: int = 0
    sort_chunks: int = 0
    sort_failures: int = 0


@dataclass(frozen=True)
class SortPolicy:
    idle_after: float = 0.02
    busy_share: float = 0.05  # of a core: about 2,000 events/s sorted under saturation
    headroom: float = 0.9  # sorting takes up to this much of a core, less what requests use
    chunk_messages: int = 1000
    slice_messages: int = 50  # at most this many messages expanded at once
    slice_seconds: float = 0.001  # CPU time of expansion between two pauses


class GroupCommitter:
    """Batches inbox appends from many coroutines into few transactions, and sorts the inbox."""

    def __init__(
        self,
        store: Store,
        *,
        sorter: Sorter | None = None,
        policy: SortPolicy = SortPolicy(),
        window: float = 0.0,
        max_pending: int = 50_000,
        max_batch: int = 20_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._sorter = sorter
        self._policy = policy
        self._window = window
        self._max_pending = max_pending
        self._max_batch = max_batch
        self._clock = clock
        self._queue: list[_Ticket] = []
        self._pending = 0
        self._wakeup: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._sort_task: asyncio.Task[None] | None = None
        self._sort_wakeup: asyncio.Event | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-writer")
        self._sort_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inbox-sorter")
        self._closed = False
        self._unsorted = sorter is not None  # the inbox may hold entries from before a start
        self._last_activity = 0.0  # a submit, or the end of a commit
        self._retry_at = 0.0  # after a failed chunk
        self._mark = (0.0, 0.0, 0.0)  # at the end of the last chunk: clock, process CPU, sort CPU
        self._sort_cpu = 0.0
        self._sorted = threading.Condition()
        self.stats = CommitStats()

    @property
    def pending(self) -> int:
        """Messages waiting for their commit (not the inbox's backlog)."""
        return self._pending

    async def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._run(), name="group-commit")
        if self._sorter is not None:
            self._sort_wakeup = asyncio.Event()
            self._sort_task = asyncio.create_task(self._sort_loop(), name="inbox-sort")

    async def stop(self) -> None:
        self._closed = True
        for event in (self._wakeup, self._sort_wakeup):
            if event is not None:
                event.set()
        for task in (self._task, self._sort_task):
            if task is not None:
                await task
        self._executor.shutdown(wait=True)
        self._sort_executor.shutdown(wait=True)

    async def submit(self, entry: InboxEntry) -> None:
        """Wait until `entry` is committed to the inbox."""
        if self._closed or self._wakeup is None:
            raise StoreUnavailable("the service is shutting down")
        if self._pending + entry.count > self._max_pending and self._pending > 0:
            raise StoreSaturated(retry_after=1.0)
        assert self._loop is not None
        future: asyncio.Future[None] = self._loop.create_future()
        self._queue.append(_Ticket(entry, future))
        self._pending += entry.count
        self._last_activity = self._clock()
        self._wakeup.set()
        # Not shielded: if the request is cancelled its future is, and the commit goes on
        # regardless (results are only set on futures that are not done).
        await future

    def wait_sorted(self, timeout: float) -> bool:
        """Block (a thread, not the event loop) until the inbox was found empty; for tests."""
        deadline = time.monotonic() + timeout
        with self._sorted:
            while self._unsorted or self._queue or self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._sorted.wait(min(left, 0.05))
        return True

    # -- the writer loop -----------------------------------------------------------------------

    async def _run(self) -> None:
        wakeup = self._wakeup
        assert wakeup is not None
        while True:
            await wakeup.wait()
            wakeup.clear()
            if not self._queue:
                if self._closed:
                    return
                continue
            if self._window > 0 and not self._closed:
                # Let requests arriving right now join this commit.
                await asyncio.sleep(self._window)
            while self._queue:
                await self._commit(self._take_batch())

    async def _sort_loop(self) -> None:
        wakeup = self._sort_wakeup
        assert wakeup is not None
        while not self._closed:
            delay = self._sort_delay()
            if delay is None or delay > 0:
                wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wakeup.wait(), delay)
                continue
            await self._sort_chunk()

    def _sort_delay(self) -> float | None:
        """Seconds until sorting is due; None when there is nothing to sort."""
        if not self._unsorted:
            return None
        return max(0.0, self._retry_at - self._clock())

    async def _commit(self, tickets: list[_Ticket]) -> None:
        loop = asyncio.get_running_loop()
        entries = [ticket.entry for ticket in tickets]
        count = sum(entry.count for entry in entries)
        try:
            await loop.run_in_executor(self._executor, self._store.inbox_append, entries)
        except StoreError as exc:
            self.stats.failures += 1
            self._fail(tickets, exc)
        except Exception as exc:  # noqa: BLE001 - any driver failure means "not committed"
            self.stats.failures += 1
            self._fail(tickets, StoreUnavailable(f"the store could not commit: {exc}"))
        else:
            self.stats.commits += 1
            self.stats.entries += len(entries)
            self.stats.messages += count
            self.stats.largest_commit = max(self.stats.largest_commit, count)
            if self._sort_wakeup is not None:
                self._unsorted = True
                self._sort_wakeup.set()
            for ticket in tickets:
                if not ticket.future.done():
                    ticket.future.set_result(None)
        finally:
            self._pending -= count
            self._last_activity = self._clock()

    async def _sort_chunk(self) -> None:
        """Sort the oldest entries: read and write in the sorting thread; expand here, on the
        event loop, a slice at a time, pausing after each slice as the share allows."""
        sorter = self._sorter
        assert sorter is not None
        policy = self._policy
        generation = self.stats.commits
        try:
            entries, cpu = await self._in_sort_thread(
                self._store.inbox_oldest, policy.chunk_messages
            )
            rows: list[NewMessage] = []
            slice_started = time.thread_time()
            for entry in entries:
                entry_rows: list[NewMessage] = []
                try:
                    for part in sorter.slices(entry, policy.slice_messages):
                        entry_rows += part
                        spent = time.thread_time() - slice_started
                        if spent >= policy.slice_seconds:
                            await self._pause(spent)
                            slice_started = time.thread_time()
                except Exception as exc:  # noqa: BLE001 - one entry never blocks the inbox
                    entry_rows = [sorter.unsortable(entry, exc)]
                rows += entry_rows
            if entries:
                fresh, write_cpu = await self._in_sort_thread(
                    self._store.inbox_sorted, entries, rows
                )
                cpu += write_cpu + time.thread_time() - slice_started
        except SortRaced:
            return  # another process sorted some of them: read again
        except Exception:  # noqa: BLE001 - the inbox keeps the entries; try again later
            self.stats.sort_failures += 1
            log.exception("sorting the inbox failed; it is retried in a second")
            self._retry_at = self._clock() + 1.0
            return
        self.stats.sort_chunks += 1
        if entries:
            sorter.record(len(entries), rows, fresh)
            await self._pause(cpu)
            return
        with self._sorted:
            if self.stats.commits == generation:  # nothing committed since the read
                self._unsorted = False
            self._sorted.notify_all()

    async def _in_sort_thread(self, call: Callable[..., T], *args: Any) -> tuple[T, float]:
        """`call(*args)` in the sorting thread, and the CPU time it took there."""

        def timed() -> tuple[T, float]:
            started = time.thread_time()
            return call(*args), time.thread_time() - started

        return await asyncio.get_running_loop().run_in_executor(self._sort_executor, timed)

    async def _pause(self, cpu: float) -> None:
        """After a slice that used `cpu` seconds: no pause when idle, else long enough for
        sorting to stay within its share of a core."""
        share = self._share(cpu)
        idle = self._clock() >= self._last_activity + self._policy.idle_after
        await asyncio.sleep(0 if idle or share >= 1 else cpu * (1 - share) / share)

    def _share(self, chunk_cpu: float) -> float:
        """The share of a core sorting may use now: what everything else left since the last
        chunk (process CPU time less sorting's own), within [busy_share, 1]."""
        now, process_cpu = self._clock(), time.process_time()
        self._sort_cpu += chunk_cpu
        last_at, last_process, last_sort = self._mark
        self._mark = (now, process_cpu, self._sort_cpu)
        wall = now - last_at
        if last_at == 0.0 or wall <= 0:
            return self._policy.busy_share
        others = (process_cpu - last_process - (self._sort_cpu - last_sort)) / wall
        return min(1.0, max(self._policy.busy_share, self._policy.headroom - others))

    def _take_batch(self) -> list[_Ticket]:
        taken: list[_Ticket] = []
        size = 0
        while self._queue and (not taken or size + self._queue[0].entry.count <= self._max_batch):
            ticket = self._queue.pop(0)
            taken.append(ticket)
            size += ticket.entry.count
        return taken

    @staticmethod
    def _fail(tickets: list[_Ticket], exc: Exception) -> None:
        for ticket in tickets:
            if not ticket.future.done():
                ticket.future.set_exception(exc)
