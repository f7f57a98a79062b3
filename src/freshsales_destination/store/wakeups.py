"""Wake-ups: idle delivery workers sleep until there is work, instead of polling.

Work appears when sorting commits new messages, when a held lane's time comes
(`reschedule`'s `available_at`), when a lane is released with messages left (`release_lane`)
and when dead letters are put back (`requeue`). Each is work of one destination, and wakes a
worker of that destination.

* In one process (SQLite, or PostgreSQL with ingest and delivery together), whoever commits
  work tells the store's :class:`WorkSignal` (`signal_for(store)`): sorting after a chunk that
  stored new messages, a worker after holding a lane (a timer to its `available_at`) or
  releasing one with messages left.
* Across processes (PostgreSQL), the store sends ``NOTIFY fsd_work`` in the same transaction
  as the insert, the hold, the release or the requeue (`NOTIFY_SQL`), so it is delivered
  exactly when the work is visible; the payload is the epoch second the work becomes ready
  ("" for now) and its destination (`payload_for`). A :class:`PostgresListener` (a thread
  with its own connection) turns notifications into ``notify``/``notify_at`` on the same
  signal.
* What was set before a process started listening (a hold, another process's lease that will
  lapse): a worker that finds nothing to claim asks the store when its destination's next
  held or leased lane with messages becomes free (`Store.next_ready_at`) and sets a timer to
  it, so a retry or the lane of a worker that died is taken when its time comes, also on
  SQLite with several processes.

Neither is trusted alone: the delivery engine still polls slowly (``delivery.poll_interval``)
for what no signal announces (another SQLite process's new messages, a lost notification).
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
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CHANNEL = "fsd_work"
# Sent inside the transaction that makes work visible: PostgreSQL delivers it on commit only.
NOTIFY_SQL = "SELECT pg_notify('fsd_work', %s)"


class WorkSignal:
    """A thread-safe "there may be work" signal that asyncio waiters on any loop can await.

    Work is keyed by destination: a waiter waits for one (`key`, its worker's destination), a
    notification names the destination whose work it announces, and wakes a waiter of that
    destination only; a notification without a key (None: a payload from which no destination
    could be read) wakes one waiter of every destination.

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
        # Per key, an ordered set (dict keys): the longest sleeper is woken first.
        self._waiters: dict[
            str | None, dict[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]], None]
        ] = {}
        self._due: dict[str | None, list[float]] = {}  # epoch seconds held work becomes ready

    @property
    def generation(self) -> int:
        return self._generation

    def due(self, key: str | None = None) -> list[float]:
        """The wake-up times still to come for `key` (earliest first)."""
        with self._lock:
            return sorted(self._due.get(key, ()))

    def notify(self, key: str | None = None) -> None:
        """Wake one sleeping waiter for `key` now (from any thread); None: one of each key. A
        busy worker looks again anyway."""
        with self._lock:
            self._generation += 1
            keys = list(self._waiters) if key is None else [key]
            for k in keys:
                waiters = self._waiters.get(k, {})
                while waiters:
                    loop, future = entry = next(iter(waiters))
                    del waiters[entry]
                    try:
                        loop.call_soon_threadsafe(_resolve, future)
                    except RuntimeError:  # that loop is closed: nobody waits there
                        continue
                    break

    def notify_at(self, when: float, key: str | None = None) -> None:
        """Wake a waiter for `key` (None: of each key) when `when` (epoch seconds, the clock of
        `wait`'s `now`) comes."""
        with self._lock:
            due = self._due.setdefault(key, [])
            if when in due:
                return  # already set (every idle worker asks for the same earliest hold)
            heapq.heappush(due, when)
            if len(due) > 10_000:  # bounded: the slow poll covers anything forgotten
                self._due[key] = heapq.nsmallest(1_000, due)
            waiters = [w for k, ws in self._waiters.items() if key in (None, k) for w in ws]
        # Waiters shorten their sleep to the new time.
        for loop, future in waiters:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, future)

    def _take_due(self, now: float, key: str | None) -> tuple[bool, float | None]:
        """(a due time of `key` has passed, seconds until its next one); pops what passed."""
        passed = False
        nxt: float | None = None
        with self._lock:
            for k in {key, None}:
                due = self._due.get(k)
                if not due:
                    continue
                while due and due[0] <= now:
                    heapq.heappop(due)
                    passed = True
                if due:
                    nxt = due[0] - now if nxt is None else min(nxt, due[0] - now)
        return passed, nxt

    async def wait(
        self,
        timeout: float,
        *,
        since: int,
        now: Callable[[], float] = time.time,
        key: str | None = None,
    ) -> bool:
        """Sleep until notified after `since`, a due time of `key` passes, or `timeout`; True
        if woken."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            passed, nxt = self._take_due(now(), key)
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
                self._waiters.setdefault(key, {})[entry] = None
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(future, left)
            finally:
                with self._lock:
                    self._waiters.get(key, {}).pop(entry, None)


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


def payload_for(available_at: float | None, destination: str | None = None) -> str:
    """A NOTIFY payload: the epoch second the work becomes ready ("" for now), then, after a
    space, the destination whose work it is (PostgreSQL caps payloads near 8,000 bytes;
    destination names are short configuration keys)."""
    when = "" if available_at is None else repr(float(available_at))
    return when if destination is None else f"{when} {destination}"


def parse_payload(payload: str) -> tuple[float | None, str | None]:
    """(when, destination) of a payload; what cannot be read counts as "now", any
    destination (a spurious wake-up costs one lane claim; a lost one, the slow poll)."""
    when_text, _, destination = payload.partition(" ")
    when: float | None = None
    if when_text:
        try:
            when = float(when_text)
        except ValueError:
            when = None
    return when, destination or None


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
        when, destination = parse_payload(payload)
        if when is not None and when > time.time():
            self.signal.notify_at(when, destination)
        else:
            self.signal.notify(destination)


class SQLiteWatcher:
    """Wakes this process's workers for what other processes store in one SQLite file.

    SQLite has no NOTIFY. A thread with a read-only connection of its own asks the file every
    `check_every` seconds whether anything was committed since (``PRAGMA data_version``: a
    read of shared memory, no I/O); only then does it read the last message's seq (from the
    primary key) and, when messages were added, wakes a worker of every destination. Messages
    its own process sorted count too: a second worker woken for them finds the lanes taken
    and sleeps again. Retries and orphaned leases are announced by the workers' timers
    (`Store.next_ready_at`); a lane another process gave up with messages left (a worker that
    stopped) and dead letters it put back wait for the slow poll.
    """

    def __init__(self, path: Path, signal: WorkSignal, *, check_every: float = 0.05) -> None:
        self.path = path
        self.signal = signal
        self.check_every = check_every
        self.woken = 0
        self._stop = threading.Event()
        self._watching = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, *, wait: float = 0.0) -> None:
        self._thread = threading.Thread(target=self._run, name="fsd-sqlite-watch", daemon=True)
        self._thread.start()
        if wait > 0:
            self._watching.wait(wait)

    @property
    def listening(self) -> bool:
        return self._watching.is_set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        import sqlite3

        last: int | None = None
        version: int | None = None
        while not self._stop.is_set():
            try:
                with contextlib.closing(sqlite3.connect(
                    f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=5.0,
                    isolation_level=None,
                )) as conn:
                    self._watching.set()
                    while not self._stop.is_set():
                        now_version = int(conn.execute("PRAGMA data_version").fetchone()[0])
                        if now_version != version:
                            version = now_version
                            row = conn.execute(
                                "SELECT COALESCE(MAX(seq), 0) FROM messages"
                            ).fetchone()
                            seq = int(row[0])
                            if last is not None and seq > last:
                                self.woken += 1
                                self.signal.notify()
                            last = seq
                        self._stop.wait(self.check_every)
            except Exception as exc:  # noqa: BLE001 - retry; the slow poll covers the gap
                self._watching.clear()
                log.warning("watching %s for work failed (%s); retrying", self.path.name, exc)
                self._stop.wait(1.0)


Listener = PostgresListener | SQLiteWatcher


def listener_for(store: object) -> Listener | None:
    """What tells this process about other processes' work (not started): a NOTIFY listener
    for a PostgreSQL store, a watcher for a SQLite file; None for an in-memory store."""
    from freshsales_destination.store.sqlite import SQLiteStore

    if isinstance(store, SQLiteStore):
        return None if store.path is None else SQLiteWatcher(store.path, signal_for(store))
    from freshsales_destination.store.postgres import PostgresStore

    if isinstance(store, PostgresStore):
        return PostgresListener(store.dsn, signal_for(store))
    return None
