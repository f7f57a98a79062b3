"""Wake-ups: idle delivery workers sleep until there is work, instead of polling.

Work appears when sorting commits new messages, when a held lane's time comes
(`reschedule`'s `available_at`) and when dead letters are put back (`requeue`).

* In one process (SQLite, or PostgreSQL with ingest and delivery together), whoever commits
  work tells the store's :class:`WorkSignal` (`signal_for(store)`): sorting after a chunk that
  stored new messages, a worker after holding a lane (a timer to its `available_at`).
* Across processes (PostgreSQL), the store sends ``NOTIFY fsd_work`` in the same transaction
  as the insert, the hold or the requeue (`NOTIFY_SQL`), so it is delivered exactly when the
  work is visible; the payload is the epoch second the work becomes ready ("" for now). A
  :class:`PostgresListener` (a thread with its own connection) turns notifications into
  ``notify``/``notify_at`` on the same signal.

Neither is trusted alone: the delivery engine still polls slowly (``delivery.poll_interval``)
for what no signal announces (a lease that expired, another SQLite process's messages).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

CHANNEL = "fsd_work"
# Sent inside the transaction that makes work visible: PostgreSQL delivers it on commit only.
NOTIFY_SQL = "SELECT pg_notify('fsd_work', %s)"


class WorkSignal:
    """A thread-safe "there may be work" signal that asyncio waiters on any loop can await.

    `generation` counts notifications: a waiter reads it before looking for work and passes it
    to `wait`, which returns at once if anything was notified since, so a notification that
    lands between "found nothing" and "wait" is never lost.

    `notify` wakes one sleeping waiter, not all: a new message needs one worker, and every
    worker woken for nothing costs a lane claim (a store transaction) on a 2-core machine. A
    worker that claims a lane notifies again (the baton), so a burst over many lanes still
    wakes every worker, one after another.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._generation = 0
        # An ordered set (dict keys): the longest sleeper is woken first.
        self._waiters: dict[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]], None] = {}
        self._due: list[float] = []  # epoch seconds at which held work becomes ready

    @property
    def generation(self) -> int:
        return self._generation

    def notify(self) -> None:
        """Wake one sleeping waiter now (from any thread); a busy one looks again anyway."""
        with self._lock:
            self._generation += 1
            while self._waiters:
                loop, future = entry = next(iter(self._waiters))
                del self._waiters[entry]
                try:
                    loop.call_soon_threadsafe(_resolve, future)
                except RuntimeError:  # that loop is closed: nobody waits there
                    continue
                return

    def notify_at(self, when: float) -> None:
        """Wake a waiter when `when` (epoch seconds, the clock of `wait`'s `now`) comes."""
        with self._lock:
            heapq.heappush(self._due, when)
            if len(self._due) > 10_000:  # bounded: the slow poll covers anything forgotten
                self._due = heapq.nsmallest(1_000, self._due)
            waiters = list(self._waiters)
        # Waiters shorten their sleep to the new time.
        for loop, future in waiters:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, future)

    def _take_due(self, now: float) -> tuple[bool, float | None]:
        """(a due time has passed, seconds until the next one); pops what has passed."""
        passed = False
        with self._lock:
            while self._due and self._due[0] <= now:
                heapq.heappop(self._due)
                passed = True
            nxt = self._due[0] - now if self._due else None
        return passed, nxt

    async def wait(
        self, timeout: float, *, since: int, now: Callable[[], float] = time.time
    ) -> bool:
        """Sleep until notified after `since`, a due time passes, or `timeout`; True if woken."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            passed, nxt = self._take_due(now())
            if passed or self._generation != since:
                return True
            left = deadline - loop.time()
            if left <= 0:
                return False
            if nxt is not None:
                left = min(left, nxt + 0.001)  # just after, so the store's `<= now` holds
            future: asyncio.Future[None] = loop.create_future()
            entry = (loop, future)
            with self._lock:
                if self._generation != since:
                    return True
                self._waiters[entry] = None
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(future, left)
            finally:
                with self._lock:
                    self._waiters.pop(entry, None)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


_SIGNALS: weakref.WeakKeyDictionary[Any, WorkSignal] = weakref.WeakKeyDictionary()
_SIGNALS_LOCK = threading.Lock()


def signal_for(store: object) -> WorkSignal:
    """The work signal of one open store object, shared by everything in this process."""
    with _SIGNALS_LOCK:
        signal = _SIGNALS.get(store)
        if signal is None:
            signal = _SIGNALS[store] = WorkSignal()
        return signal


def payload_for(available_at: float | None) -> str:
    return "" if available_at is None else repr(float(available_at))


class PostgresListener:
    """``LISTEN fsd_work`` on a connection of its own, in a thread; wakes the signal.

    Reconnects by itself (1 s, doubling to 30 s) and wakes everyone after a reconnect, since
    notifications sent while it was away are lost.
    """

    def __init__(self, dsn: str, signal: WorkSignal, *, check_every: float = 1.0) -> None:
        self.dsn = dsn
        self.signal = signal
        self.check_every = check_every
        self.received = 0
        self._stop = threading.Event()
        self._listening = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, *, wait: float = 0.0) -> None:
        """Start listening; `wait` seconds at most for LISTEN to be in place. Not waiting loses
        nothing: once it listens, it wakes a worker to look for what came before."""
        self._thread = threading.Thread(target=self._run, name="fsd-listen", daemon=True)
        self._thread.start()
        if wait > 0:
            self._listening.wait(wait)

    @property
    def listening(self) -> bool:
        return self._listening.is_set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        import psycopg  # only PostgreSQL deployments need it

        backoff = 1.0
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.dsn, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._listening.set()
                    self.signal.notify()  # anything sent while nobody listened
                    backoff = 1.0
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=self.check_every):
                            self.received += 1
                            self._deliver(note.payload)
            except Exception as exc:  # noqa: BLE001 - reconnect; the slow poll covers the gap
                self._listening.clear()
                if self._stop.is_set():
                    return
                log.warning("listening for work on PostgreSQL failed (%s); retrying in %.0f s",
                            exc, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    def _deliver(self, payload: str) -> None:
        if payload:
            try:
                when = float(payload)
            except ValueError:
                when = 0.0
            if when > time.time():
                self.signal.notify_at(when)
                return
        self.signal.notify()


def listener_for(store: object) -> PostgresListener | None:
    """A listener for a PostgreSQL store (not started); None for stores without NOTIFY."""
    from freshsales_destination.store.postgres import PostgresStore

    if isinstance(store, PostgresStore):
        return PostgresListener(store.dsn, signal_for(store))
    return None
