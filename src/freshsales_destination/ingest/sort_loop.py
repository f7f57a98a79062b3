"""When and how much the serving process sorts its inbox into messages, and which process does.

Turning entries into messages and writing them back (one transaction per chunk, an entry the
store refuses kept as one discarded message, duplicates skipped, the counters of all that) is
ingest/sorting.py's; this loop decides when, and how much at a time. It runs on the event loop,
expanding a slice of about a millisecond of CPU at a time, with its store reads and writes in a
thread of its own. Requests come first:

* once no request has arrived for `idle_after` seconds, chunks follow each other at once;
* while requests keep arriving, sorting takes what they leave of one core (the GIL makes one
  core the budget of the process) and at least `busy_share`: after each slice it pauses long
  enough that its own CPU time stays within that share.

A burst is taken at full speed and sorted when it ends, a steady stream is sorted as it comes,
and even under saturation the queue behind the inbox never starves. Running the expansion in a
thread instead costs the event loop far more than its share: the loop waits for the GIL after
each of its many short system calls (docs/benchmarks.md).

Several processes on one store sort one at a time: the lease (ingest/sort_lease.py) says
which. This loop takes or renews it before each chunk and during long ones and gives it back
when the inbox is empty (or on stop), so a process that dies hands over after `lease_seconds`.
Without it they would all expand the same oldest entries and all but one would throw their work
away (`SortRaced` keeps that correct anyway).

A chunk whose transaction fails is retried entry by entry, so that one entry the store refuses
(whatever the reason) is kept as a single discarded message instead of blocking the inbox;
when the store itself is unavailable, sorting waits `retry_after` and tries again. After
committed messages the loop wakes this process's idle delivery workers (store/wakeups.py) and
keeps the inbox's backlog, past `max_unsorted` of which the committer answers 429.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from freshsales_destination.errors import StoreRefused
from freshsales_destination.ingest.sort_lease import LEASE_KEY, LEASE_NAMESPACE, SortLease
from freshsales_destination.ingest.sorting import Sorter
from freshsales_destination.store.base import InboxEntry, NewMessage, Store
from freshsales_destination.store.wakeups import signal_for

log = logging.getLogger(__name__)

T = TypeVar("T")

__all__ = ["LEASE_KEY", "LEASE_NAMESPACE", "InboxSorting", "SortPolicy", "SortStats"]


@dataclass(frozen=True)
class SortPolicy:
    idle_after: float = 0.02
    busy_share: float = 0.05  # of a core: about 2,000 events/s sorted under saturation
    headroom: float = 0.9  # sorting takes up to this much of a core, less what requests use
    chunk_messages: int = 1000
    chunk_bytes: int = 8 * 1024 * 1024  # inbox bodies read at once (at least one entry)
    slice_messages: int = 50  # at most this many messages expanded at once
    slice_seconds: float = 0.001  # CPU time of expansion between two pauses
    poll_interval: float = 5.0  # look for entries another process left, when idle
    retry_after: float = 1.0  # after the store failed, or while another process sorts
    lease_seconds: float = 10.0
    max_unsorted: int = 5_000_000  # messages in the inbox past which requests get 429


@dataclass(frozen=True)
class SortStats:
    """A snapshot: what sorting did (ingest/sorting.py's `SortCounts`) and rounds that failed."""

    chunks: int = 0
    failures: int = 0  # rounds that failed (the store, or a defect); each is retried
    isolated: int = 0  # entries the store refused, kept as one discarded message each
    raced: int = 0  # chunks another process sorted first (work thrown away)


class InboxSorting:
    """Schedules sorting; `activity()` says when a request last arrived or was answered."""

    def __init__(
        self,
        store: Store,
        sorter: Sorter,
        *,
        policy: SortPolicy = SortPolicy(),
        activity: Callable[[], float] = lambda: 0.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._lease_state = SortLease(
            store, lease_seconds=policy.lease_seconds, clock=clock, wall=wall
        )
        self._sorter = sorter
        self._policy = policy
        self._activity = activity
        self._clock = clock
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inbox-sorter")
        self._wakeup: asyncio.Event | None = None
        self._stopping: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._unsorted = True  # the inbox may hold entries from before a start
        self._commits = 0  # commits seen: an empty read counts only if none came meanwhile
        self._in_flight = 0  # entries submitted whose commit has not ended yet
        self._retry_at = 0.0
        self._mark = (0.0, 0.0, 0.0)  # at the last slice: clock, process CPU, sorting CPU
        self._sort_cpu = 0.0
        self._sorted = threading.Condition()
        self._backlog: int | None = None  # unsorted messages (the store's count, kept
        # up to date between two reads with this process's own commits and sorts)
        self._failures = 0

    @property
    def stats(self) -> SortStats:
        counts = self._sorter.counts
        return SortStats(chunks=counts.chunks, failures=self._failures,
                         isolated=counts.isolated, raced=counts.raced)

    async def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="inbox-sort")

    async def stop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()
        if self._wakeup is not None:
            self._wakeup.set()
        if self._task is not None:
            await self._task
            with contextlib.suppress(Exception):  # hand over at once; else it expires
                await self._in_thread(self._lease, False)
        self._executor.shutdown(wait=True)

    # -- what the committer tells -------------------------------------------------------------

    def submitted(self) -> None:
        self._in_flight += 1

    def full(self) -> bool:
        """Whether the inbox holds more than `max_unsorted` messages (so requests get 429:
        sorting fell far behind, and the disk is not to fill up unnoticed). The figure is the
        store's exact count as of this process's last look (at most `retry_after` old while
        anything waits), plus its own commits since."""
        return self._backlog is not None and self._backlog > self._policy.max_unsorted

    def committed(self, entries: int, messages: int, ok: bool) -> None:
        """A commit of `entries` holding `messages` ended (`ok`: they are in the inbox)."""
        self._in_flight -= entries
        if ok:
            if self._backlog is not None:
                self._backlog += messages
            self._commits += 1
            self._unsorted = True
            if self._wakeup is not None:
                self._wakeup.set()

    def wait_sorted(self, timeout: float) -> bool:
        """Block (a thread, not the event loop) until this process has seen the inbox empty
        after its last commit, with no request in flight; for tests and benchmarks."""
        deadline = time.monotonic() + timeout
        with self._sorted:
            while self._unsorted or self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._sorted.wait(min(left, 0.05))
        return True

    # -- the loop ------------------------------------------------------------------------------

    async def _run(self) -> None:
        wakeup, stopping = self._wakeup, self._stopping
        assert wakeup is not None and stopping is not None
        while not stopping.is_set():
            try:
                delay = self._delay()
                if delay > 0:
                    wakeup.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wakeup.wait(), delay)
                    if not self._unsorted and not stopping.is_set():
                        self._unsorted = True  # poll: another process may have left entries
                    continue
                await self._chunk()
            except Exception:  # noqa: BLE001 - the loop must outlive any defect of one round
                self._failures += 1
                log.exception("sorting the inbox failed; it is retried")
                self._retry_at = self._clock() + self._policy.retry_after

    def _delay(self) -> float:
        """Seconds until sorting is due (a poll interval when nothing is known to wait)."""
        if not self._unsorted:
            return self._policy.poll_interval
        return max(0.0, self._retry_at - self._clock())

    async def _chunk(self) -> None:
        """Read the oldest entries, expand them here a slice at a time, write them back."""
        policy, sorter = self._policy, self._sorter
        commits = self._commits
        try:
            # The inbox's size is kept by the store (exact, O(1)), so every process knows the
            # backlog, and an empty inbox is seen without touching the lease.
            (waiting, self._backlog), cpu = await self._in_thread(self._store.inbox_count)
            if waiting == 0:
                await self._empty(commits)
                return
            held, lease_cpu = await self._in_thread(self._lease, True)
            if not held:  # another process sorts: look again later
                self._retry_at = self._clock() + policy.retry_after
                return
            entries, read_cpu = await self._in_thread(
                self._store.inbox_oldest, policy.chunk_messages, policy.chunk_bytes
            )
            cpu += lease_cpu + read_cpu
        except Exception:  # noqa: BLE001 - the store is unavailable: wait
            self._store_failed("reading the inbox")
            return
        if not entries:
            await self._empty(commits)
            return
        expanded: list[list[NewMessage]] = []
        started = time.thread_time()
        for entry in entries:
            rows: list[NewMessage] = []
            try:
                for part in sorter.slices(entry, policy.slice_messages):
                    rows += part
                    spent = time.thread_time() - started
                    if spent >= policy.slice_seconds:
                        await self._pause(spent)
                        started = time.thread_time()
            except Exception as exc:  # noqa: BLE001 - one entry never blocks the inbox
                rows = [sorter.unsortable(entry, exc)]
            expanded.append(rows)
        cpu += time.thread_time() - started  # measured before the write lets requests run
        messages = [row for rows in expanded for row in rows]
        try:
            written, write_cpu = await self._in_thread(
                sorter.write_chunk, self._store, entries, messages
            )
        except Exception:  # noqa: BLE001 - find out whether one entry is the cause
            await self._one_by_one(entries, expanded)
            return
        if written is None:
            return  # another process sorted some of them: read again
        self._sorted_out(entries, messages, written)
        await self._pause(cpu + write_cpu)

    async def _one_by_one(
        self, entries: Sequence[InboxEntry], expanded: Sequence[list[NewMessage]]
    ) -> None:
        """After a failed chunk: each entry alone. One the store refuses (`StoreRefused`: the
        data, not the store, is the cause) is kept as a single discarded message holding its
        body; any other failure means the store is unavailable: wait, discard nothing."""
        stopping = self._stopping
        for entry, rows in zip(entries, expanded, strict=True):
            if stopping is not None and stopping.is_set():
                return
            await self._renew_lease_if_due()
            try:
                written, _ = await self._in_thread(
                    self._sorter.write_entry, self._store, entry, rows
                )
            except StoreRefused as exc:
                try:
                    discarded, _ = await self._in_thread(
                        self._sorter.discard, self._store, entry, exc
                    )
                except Exception:  # noqa: BLE001
                    self._store_failed("writing a discarded entry")
                    return
                if discarded is None:
                    continue
                rows, written = discarded
            except Exception:  # noqa: BLE001 - the store, not the entry, is failing
                self._store_failed("writing sorted messages")
                return
            if written is None:
                continue
            self._sorted_out([entry], rows, written)

    async def _empty(self, commits: int) -> None:
        """The inbox was found empty: give the lease back if held (another process's entries
        then wait at most `retry_after` for its own sorter), and say so to wait_sorted."""
        if self._lease_state.held:
            with contextlib.suppress(Exception):
                await self._in_thread(self._lease, False)
        with self._sorted:
            if self._commits == commits:  # nothing committed since the read
                self._unsorted = False
                self._backlog = 0
            self._sorted.notify_all()

    def _sorted_out(
        self, entries: Sequence[InboxEntry], messages: Sequence[NewMessage], fresh: list[bool]
    ) -> None:
        """A committed sorting transaction: count it and its messages (ingest/sorting.py), wake
        delivery, and keep the smaller backlog."""
        self._sorter.record(len(entries), messages, fresh)
        # Idle delivery workers of this process, of each destination with new messages, look
        # now (store/wakeups.py).
        signal = signal_for(self._store)
        stored = {m.destination for m, new in zip(messages, fresh, strict=False) if new}
        for destination in sorted(stored):
            signal.notify(destination)
        if self._backlog is not None:
            self._backlog = max(0, self._backlog - sum(entry.count for entry in entries))

    def _lease(self, take: bool) -> bool:
        """Take or renew the sorting lease (`take`), or give it back; True if held now
        (ingest/sort_lease.py). Runs in the sorting thread."""
        return self._lease_state.update(take)

    async def _renew_lease_if_due(self) -> None:
        """During a long chunk, renew the lease well before others may count it expired."""
        if self._lease_state.renewal_due():
            with contextlib.suppress(Exception):
                await self._in_thread(self._lease, True)

    def _store_failed(self, doing: str) -> None:
        self._failures += 1
        log.warning("sorting the inbox: the store failed while %s; retried in %.0f s",
                    doing, self._policy.retry_after, exc_info=True)
        self._retry_at = self._clock() + self._policy.retry_after

    async def _in_thread(self, call: Callable[..., T], *args: Any) -> tuple[T, float]:
        """`call(*args)` in the sorting thread, and the CPU time it took there."""

        def timed() -> tuple[T, float]:
            started = time.thread_time()
            return call(*args), time.thread_time() - started

        return await asyncio.get_running_loop().run_in_executor(self._executor, timed)

    async def _pause(self, cpu: float) -> None:
        """After sorting used `cpu` seconds: no pause when idle, else long enough to stay
        within its share of a core (cut short by stop())."""
        await self._renew_lease_if_due()
        share = self._share(cpu)
        idle = self._clock() >= self._activity() + self._policy.idle_after
        if idle or share >= 1:
            await asyncio.sleep(0)
            return
        stopping = self._stopping
        assert stopping is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), cpu * (1 - share) / share)

    def _share(self, cpu: float) -> float:
        """The share of a core sorting may use now: what everything else left since the last
        slice (process CPU time less sorting's own), within [busy_share, 1]."""
        now, process_cpu = self._clock(), time.process_time()
        self._sort_cpu += cpu
        last_at, last_process, last_sort = self._mark
        self._mark = (now, process_cpu, self._sort_cpu)
        wall = now - last_at
        floor = max(self._policy.busy_share, 1e-3)
        if last_at == 0.0 or wall <= 0:
            return floor
        others = (process_cpu - last_process - (self._sort_cpu - last_sort)) / wall
        return min(1.0, max(floor, self._policy.headroom - others))
