"""The sorting lease: which of several processes on one store sorts the inbox.

A row in the store's key-value table holds the holder (`owner`), a generation that every take
or renewal raises, and whether it is `active`. The holder renews it before each chunk and during
long ones (`renewal_due`) and gives it back when the inbox is empty; another process counts it
expired once its generation has not moved for `lease_seconds` on *that process's own*
monotonic clock, so a process that dies hands over and clocks that disagree between machines do
not matter. Reading first keeps a waiting process from writing. When to take, renew or give it
back is ingest/sort_loop.py's; every call here runs in its sorting thread.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable

import orjson

from freshsales_destination.store.base import Store

LEASE_NAMESPACE = "ingest"
LEASE_KEY = "sorting-lease"


class SortLease:
    """This process's side of the sorting lease."""

    def __init__(
        self,
        store: Store,
        *,
        lease_seconds: float,
        clock: Callable[[], float],
        wall: Callable[[], float],
    ) -> None:
        self._store = store
        self._lease_seconds = lease_seconds
        self._clock = clock
        self._wall = wall
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._renewed = 0.0  # when this process last took or renewed it (0: not held)
        self._seen: tuple[tuple[str, int], float] | None = None  # another holder, seen when

    @property
    def held(self) -> bool:
        """Whether this process took or renewed the lease last time it tried."""
        return bool(self._renewed)

    def renewal_due(self) -> bool:
        """Held, and a third of `lease_seconds` since the last renewal: renew well before others
        may count it expired."""
        return bool(self._renewed) and self._clock() - self._renewed > self._lease_seconds / 3

    def update(self, take: bool) -> bool:
        """Take or renew the lease (`take`), or give it back; True if held now."""
        now = self._clock()
        if take and not self._free(self._store.kv_get(LEASE_NAMESPACE, LEASE_KEY), now):
            return False

        def update(current: bytes | None) -> tuple[bool, bytes]:
            holder = orjson.loads(current) if current else {}
            if take and not self._free(current, now):
                return False, current or b""
            if not take and holder.get("owner") not in (None, self.owner):
                return False, current or b""  # not ours to give back
            generation = int(holder.get("generation", 0)) + 1
            value = {"owner": self.owner, "generation": generation, "active": take}
            return take, orjson.dumps(value)

        held = self._store.kv_update(LEASE_NAMESPACE, LEASE_KEY, update, now=self._wall())
        self._renewed = now if held else 0.0
        return held

    def _free(self, current: bytes | None, now: float) -> bool:
        if not current:
            return True
        holder = orjson.loads(current)
        if holder.get("owner") == self.owner or not holder.get("active"):
            return True
        seen = (str(holder.get("owner")), int(holder.get("generation", 0)))
        if self._seen is None or self._seen[0] != seen:
            self._seen = (seen, now)  # a new holder or a renewal: wait a full lease from now
            return False
        return now - self._seen[1] >= self._lease_seconds
