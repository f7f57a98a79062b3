"""Group commit: concurrent requests share one durable transaction.

Each request hands its messages over and waits; one writer thread takes everything waiting,
commits it in a single transaction, and then wakes every request whose messages were in it.
A request is answered 200 only after its messages are committed.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from freshsales_destination.errors import StoreError, StoreSaturated, StoreUnavailable
from freshsales_destination.store.base import NewMessage, Store


@dataclass
class _Ticket:
    messages: Sequence[NewMessage]
    future: asyncio.Future[list[bool]]


@dataclass
class CommitStats:
    commits: int = 0
    messages: int = 0
    largest_commit: int = 0
    failures: int = 0
    per_commit: list[int] = field(default_factory=list)


class GroupCommitter:
    """Batches `Store.append` calls from many coroutines into few transactions."""

    def __init__(
        self,
        store: Store,
        *,
        window: float = 0.002,
        max_pending: int = 50_000,
        max_batch: int = 20_000,
    ) -> None:
        self._store = store
        self._window = window
        self._max_pending = max_pending
        self._max_batch = max_batch
        self._queue: list[_Ticket] = []
        self._pending = 0
        self._wakeup: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-writer")
        self._closed = False
        self.stats = CommitStats()
        self._stats_lock = threading.Lock()

    @property
    def pending(self) -> int:
        return self._pending

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

    async def submit(self, messages: Sequence[NewMessage]) -> list[bool]:
        """Wait until `messages` are committed; per message, True if new, False if duplicate."""
        if not messages:
            return []
        if self._closed or self._wakeup is None:
            raise StoreUnavailable("the service is shutting down")
        if self._pending + len(messages) > self._max_pending and self._pending > 0:
            raise StoreSaturated(retry_after=1.0)
        assert self._loop is not None
        future: asyncio.Future[list[bool]] = self._loop.create_future()
        self._queue.append(_Ticket(messages, future))
        self._pending += len(messages)
        self._wakeup.set()
        # Not shielded: if the request is cancelled its future is, and the commit goes on
        # regardless (results are only set on futures that are not done).
        return await future

    async def _run(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if not self._queue:
                if self._closed:
                    return
                continue
            if self._window > 0 and not self._closed:
                # Let requests arriving right now join this commit.
                await asyncio.sleep(self._window)
            while self._queue:
                tickets = self._take_batch()
                rows = [message for ticket in tickets for message in ticket.messages]
                try:
                    results = await loop.run_in_executor(self._executor, self._store.append, rows)
                except StoreError as exc:
                    self.stats.failures += 1
                    self._fail(tickets, exc)
                except Exception as exc:  # noqa: BLE001 - any driver failure means "not committed"
                    self.stats.failures += 1
                    self._fail(tickets, StoreUnavailable(f"the store could not commit: {exc}"))
                else:
                    self.stats.commits += 1
                    self.stats.messages += len(rows)
                    self.stats.largest_commit = max(self.stats.largest_commit, len(rows))
                    offset = 0
                    for ticket in tickets:
                        count = len(ticket.messages)
                        if not ticket.future.done():
                            ticket.future.set_result(results[offset : offset + count])
                        offset += count
                finally:
                    self._pending -= len(rows)

    def _take_batch(self) -> list[_Ticket]:
        taken: list[_Ticket] = []
        size = 0
        while self._queue and (not taken or size + len(self._queue[0].messages) <= self._max_batch):
            ticket = self._queue.pop(0)
            taken.append(ticket)
            size += len(ticket.messages)
        return taken

    @staticmethod
    def _fail(tickets: list[_Ticket], exc: Exception) -> None:
        for ticket in tickets:
            if not ticket.future.done():
                ticket.future.set_exception(exc)
