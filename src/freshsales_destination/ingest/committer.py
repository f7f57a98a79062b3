"""Group commit into the inbox.

Each request hands its inbox entry over and waits; a writer thread takes everything waiting,
commits it in a single transaction, and then wakes every request whose entry was in it. A
request is answered 200 only after its entry is committed. Requests arriving while a commit is
in flight form the next one (an optional `window` makes a commit wait for more).

`writers` commits may be in flight at once (the store's `concurrent_commits`: 1 on SQLite,
whose writers exclude each other; 2 on PostgreSQL, where the next commit travels while the
last waits for its WAL flush). Only requests none of which was answered when the others were
sent share or overlap commits, so a client that waits for its 200 before sending again still
finds its requests in the inbox in the order it sent them.

A submit is refused with `StoreSaturated` (429 to the client) while too many messages wait for
a commit, or while the inbox is full (`InboxSorting.full`). Sorting the inbox into messages is
scheduled by ingest/sort_loop.py, which the committer tells about every submit and commit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from freshsales_destination.errors import StoreError, StoreSaturated, StoreUnavailable
from freshsales_destination.ingest.sort_loop import InboxSorting
from freshsales_destination.store.base import InboxEntry, Store


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


class GroupCommitter:
    """Batches inbox appends from many coroutines into few transactions."""

    def __init__(
        self,
        store: Store,
        *,
        window: float = 0.0,
        max_pending: int = 50_000,
        max_batch: int = 20_000,
        writers: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._window = window
        self._max_pending = max_pending
        self._max_batch = max_batch
        self._clock = clock
        self._queue: list[_Ticket] = []
        self._pending = 0
        self._wakeup: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._writers = writers
        self._in_flight: set[asyncio.Task[None]] = set()
        self._executor = ThreadPoolExecutor(
            max_workers=writers, thread_name_prefix="store-writer"
        )
        self._closed = False
        self._last_activity = 0.0  # a submit, or the end of a commit
        self.sorting: InboxSorting | None = None  # told about every submit and commit
        self.stats = CommitStats()

    @property
    def pending(self) -> int:
        """Messages waiting for their commit (not the inbox's backlog)."""
        return self._pending

    def last_activity(self) -> float:
        """When a request was last submitted, or a commit last answered its requests (on
        the committer's clock): while a commit is in flight, its clients cannot send more."""
        return self._last_activity

    async def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._run(), name="group-commit")

    async def stop(self) -> None:
        self._closed = True
        if self._wakeup is not None:
            self._wakeup.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    async def submit(self, entry: InboxEntry) -> None:
        """Wait until `entry` is committed to the inbox."""
        if self._closed or self._wakeup is None:
            raise StoreUnavailable("the service is shutting down")
        if self._pending + entry.count > self._max_pending and self._pending > 0:
            raise StoreSaturated(retry_after=1.0)
        if self.sorting is not None and self.sorting.full():
            raise StoreSaturated(retry_after=5.0)
        assert self._loop is not None
        future: asyncio.Future[None] = self._loop.create_future()
        self._queue.append(_Ticket(entry, future))
        self._pending += entry.count
        self._last_activity = self._clock()
        if self.sorting is not None:
            self.sorting.submitted()
        self._wakeup.set()
        # Not shielded: if the request is cancelled its future is, and the commit goes on
        # regardless (results are only set on futures that are not done).
        await future

    # -- the writer loop -----------------------------------------------------------------------

    async def _run(self) -> None:
        wakeup = self._wakeup
        assert wakeup is not None
        while True:
            await wakeup.wait()
            wakeup.clear()
            if not self._queue:
                if self._closed:
                    if self._in_flight:
                        await asyncio.wait(self._in_flight)
                    return
                continue
            if self._window > 0 and not self._closed:
                # Let requests arriving right now join this commit.
                await asyncio.sleep(self._window)
            while self._queue:
                if len(self._in_flight) >= self._writers:
                    await asyncio.wait(self._in_flight, return_when=asyncio.FIRST_COMPLETED)
                    continue
                task = asyncio.create_task(self._commit(self._take_batch()))
                self._in_flight.add(task)
                task.add_done_callback(self._in_flight.discard)

    async def _commit(self, tickets: list[_Ticket]) -> None:
        loop = asyncio.get_running_loop()
        entries = [ticket.entry for ticket in tickets]
        count = sum(entry.count for entry in entries)
        committed = False
        try:
            await loop.run_in_executor(self._executor, self._store.inbox_append, entries)
            committed = True
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
            for ticket in tickets:
                if not ticket.future.done():
                    ticket.future.set_result(None)
        finally:
            self._pending -= count
            self._last_activity = self._clock()
            if self.sorting is not None:
                self.sorting.committed(len(entries), count, committed)

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
