"""The store interface every backend implements, and the records that cross it.

The store is the only shared state of the service: several processes (and later several
machines, with PostgreSQL) may use one store at once, so nothing here assumes one process.
Methods are synchronous and short; async callers run them in a worker thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message as ingest hands it to the store."""

    source: str  # the source's id (never its write key)
    destination: str
    message_id: str
    type: str
    status: str  # pending | discarded | filtered
    reason: str | None
    lane: str | None
    received_at: float
    event_at: float
    raw: bytes  # the message as the client sent it (JSON)
    message: bytes  # the normalised message (JSON)


@dataclass(frozen=True, slots=True)
class StoredMessage:
    seq: int
    source: str
    destination: str
    message_id: str
    type: str
    status: str
    reason: str | None
    lane: str | None
    received_at: float
    event_at: float
    attempts: int
    available_at: float
    last_error: str | None
    raw: bytes
    message: bytes

    def normalized(self) -> dict[str, Any]:
        import orjson

        value = orjson.loads(self.message)
        assert isinstance(value, dict)
        return value


class Store(Protocol):
    """What ingest and delivery need from durable storage."""

    def open(self) -> None:
        """Create or migrate the schema; idempotent."""

    def close(self) -> None: ...

    def append(self, messages: Sequence[NewMessage]) -> list[bool]:
        """Commit messages durably in one transaction.

        Returns, per message, True when it was stored and False when (source, message_id) was
        already there (a duplicate within the dedup window). Either all are committed or none.
        """
        ...

    def ping(self) -> None:
        """Raise StoreUnavailable unless the store can commit a write now."""

    def get_message(self, source: str, message_id: str) -> StoredMessage | None: ...

    def count_by_status(self) -> dict[str, int]: ...

    def prune(self, *, older_than: float) -> int:
        """Forget finished messages received before `older_than` (epoch seconds)."""
        ...
