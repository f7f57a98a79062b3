"""The sandbox's live state: records, ids, timestamps, the request log and persistence."""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

from freshsales_destination.sandbox.bulk_jobs import BulkJobs
from freshsales_destination.sandbox.clock import Clock, iso_timestamp
from freshsales_destination.sandbox.faults import FaultInjector
from freshsales_destination.sandbox.fields import FieldRegistry, build_registry, load_seed
from freshsales_destination.sandbox.options import SandboxOptions
from freshsales_destination.sandbox.persistence import SqliteStore
from freshsales_destination.sandbox.ratelimit import SlidingWindowLimiter
from freshsales_destination.sandbox.selectors import default_selectors

KINDS = ("contacts", "leads", "sales_accounts", "deals", "sales_activities", "notes")
FIRST_ID = 70_000_000_001
EMAIL_KINDS = ("contacts", "leads")
"""Tables whose records are found by email (``SandboxState.with_email``)."""
NAME_KINDS = ("sales_accounts", "deals")
"""Tables whose records are found by name (``SandboxState.with_name``)."""
EMAIL, NAME, CONTACT = "email", "name", "contact"
"""The indexes a table may have: by email key, by name key, by linked contact id (deals)."""


def email_key_of(options: SandboxOptions, value: str) -> str:
    """How an address is compared: trimmed and, unless ``email_case_sensitive``, in lower case."""
    value = value.strip()
    return value if options.email_case_sensitive else value.lower()


def name_key(name: str) -> str:
    """How account and deal names are compared: trimmed, any case."""
    return name.strip().lower()


class KeyIndex:
    """Which records of one table carry each key (an email address, a name, a linked contact).

    The sandbox keeps these for the lookups it makes on every write (is this address taken,
    which contact has it, which account has this name), updated wherever a record of the table
    is saved, deleted or changed in place (``SandboxState.save``, ``delete``, ``refresh``), so a
    lookup costs the same however many records the table holds.
    """

    def __init__(self, keys_of: Callable[[dict[str, Any]], Iterable[Hashable]]) -> None:
        self.keys_of = keys_of
        self._ids: dict[Hashable, set[int]] = {}
        self._held: dict[int, frozenset[Hashable]] = {}

    def put(self, record: dict[str, Any]) -> None:
        """Index ``record`` under its current keys (and no longer under the keys it lost)."""
        record_id = int(record["id"])
        new = frozenset(self.keys_of(record))
        old = self._held.get(record_id, frozenset())
        if new == old:
            return
        for key in old - new:
            self._unlink(key, record_id)
        for key in new - old:
            self._ids.setdefault(key, set()).add(record_id)
        if new:
            self._held[record_id] = new
        else:
            self._held.pop(record_id, None)

    def drop(self, record_id: int) -> None:
        for key in self._held.pop(record_id, frozenset()):
            self._unlink(key, record_id)

    def ids(self, key: Hashable) -> frozenset[int]:
        return frozenset(self._ids.get(key, ()))

    def as_dict(self) -> dict[Hashable, frozenset[int]]:
        """Every key with the ids indexed under it (for checking the index against its table)."""
        return {key: frozenset(ids) for key, ids in self._ids.items()}

    def _unlink(self, key: Hashable, record_id: int) -> None:
        holders = self._ids.get(key)
        if holders is not None:
            holders.discard(record_id)
            if not holders:
                del self._ids[key]


@dataclass(frozen=True)
class LogEntry:
    """One request as the sandbox saw it. Never holds headers or bodies (no secrets)."""

    seq: int
    time: str
    epoch: float
    method: str
    path: str
    route: str
    query: str
    status: int
    kind: str
    """``api``, ``track``, ``admin`` or ``other``."""
    admin: bool
    outcome: str | None = None
    """``scripted``, ``rate_limited``, ``fault_error``, ``fault_slow``, ``fault_drop``, ``unauthorized``."""

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "time": self.time,
            "epoch": self.epoch,
            "method": self.method,
            "path": self.path,
            "route": self.route,
            "query": self.query,
            "status": self.status,
            "kind": self.kind,
            "admin": self.admin,
            "outcome": self.outcome,
        }

    @property
    def is_api_call(self) -> bool:
        return self.kind in ("api", "track")


@dataclass
class SandboxState:
    """Everything the emulator holds. Guard reads and writes from other threads with ``lock``."""

    options: SandboxOptions
    clock: Clock
    fields: FieldRegistry
    limiter: SlidingWindowLimiter
    faults: FaultInjector
    records: dict[str, dict[int, dict[str, Any]]] = field(default_factory=lambda: {k: {} for k in KINDS})
    tracking: list[dict[str, Any]] = field(default_factory=list)
    requests: list[LogEntry] = field(default_factory=list)
    selectors: dict[str, list[dict[str, Any]]] = field(default_factory=default_selectors)
    lock: threading.RLock = field(default_factory=threading.RLock)
    bulk: BulkJobs = field(default_factory=BulkJobs)
    store: SqliteStore | None = None
    next_id: int = FIRST_ID
    next_sub_id: int = 90_000_000_001
    indexes: dict[str, dict[str, KeyIndex]] = field(default_factory=dict)
    """Table -> its indexes by what they hold (``EMAIL`` for ``EMAIL_KINDS``, ``NAME`` for
    ``NAME_KINDS``, ``CONTACT`` for deals)."""

    def __post_init__(self) -> None:
        self._new_indexes()

    def _new_indexes(self) -> None:
        options = self.options

        def emails_of(record: dict[str, Any]) -> set[str]:
            return {email_key_of(options, e["value"]) for e in record.get("emails") or []}

        def name_of(record: dict[str, Any]) -> tuple[str]:
            return (name_key(str(record.get("name") or "")),)

        def contacts_of(record: dict[str, Any]) -> list[int]:
            return list(record.get("_contact_ids") or [])

        self.indexes = {kind: {EMAIL: KeyIndex(emails_of)} for kind in EMAIL_KINDS}
        for kind in NAME_KINDS:
            self.indexes[kind] = {NAME: KeyIndex(name_of)}
        self.indexes["deals"][CONTACT] = KeyIndex(contacts_of)
        for kind, indexes in self.indexes.items():
            for record in self.table(kind).values():
                for index in indexes.values():
                    index.put(record)

    @classmethod
    def create(cls, options: SandboxOptions, clock: Clock) -> SandboxState:
        registry = build_registry(load_seed(options.seed_path))
        limiter = SlidingWindowLimiter.hourly_and_minutely(
            options.rate_limit_per_hour, options.rate_limit_per_minute, clock
        )
        faults = FaultInjector.from_options(options)
        state = cls(options=options, clock=clock, fields=registry, limiter=limiter, faults=faults)
        if options.data_path is not None:
            state.store = SqliteStore(options.data_path)
            records, tracking, meta = state.store.load()
            for kind, rows in records.items():
                state.records.setdefault(kind, {}).update(rows)
            state._new_indexes()
            state.tracking = tracking
            state.next_id = int(meta.get("next_id", FIRST_ID))
            state.next_sub_id = int(meta.get("next_sub_id", state.next_sub_id))
        return state

    # ids and time -----------------------------------------------------------------------------

    def new_id(self) -> int:
        value = self.next_id
        self.next_id += 1
        if self.store is not None:
            self.store.set_meta("next_id", str(self.next_id))
        return value

    def new_sub_id(self) -> int:
        """Ids for embedded items (email entries)."""
        value = self.next_sub_id
        self.next_sub_id += 1
        if self.store is not None:
            self.store.set_meta("next_sub_id", str(self.next_sub_id))
        return value

    def now_iso(self) -> str:
        return iso_timestamp(self.clock(), self.options.utc_offset_minutes)

    # records ----------------------------------------------------------------------------------

    def table(self, kind: str) -> dict[int, dict[str, Any]]:
        return self.records.setdefault(kind, {})

    def get(self, kind: str, record_id: int) -> dict[str, Any] | None:
        return self.table(kind).get(record_id)

    def save(self, kind: str, record: dict[str, Any]) -> dict[str, Any]:
        self.table(kind)[int(record["id"])] = record
        for index in self.indexes.get(kind, {}).values():
            index.put(record)
        if self.store is not None:
            self.store.save_record(kind, record)
        return record

    def delete(self, kind: str, record_id: int) -> dict[str, Any] | None:
        gone = self.table(kind).pop(record_id, None)
        if gone is not None:
            for index in self.indexes.get(kind, {}).values():
                index.drop(record_id)
        if gone is not None and self.store is not None:
            self.store.delete_record(kind, record_id)
        return gone

    def refresh(self, record: dict[str, Any]) -> None:
        """``record`` was changed in place: if it is in an indexed table, index its keys again
        (it may not be saved afterwards: a lead conversion can fail after changing the lead)."""
        record_id = record.get("id")
        if not isinstance(record_id, int):
            return
        for kind, indexes in self.indexes.items():
            if self.table(kind).get(record_id) is record:
                for index in indexes.values():
                    index.put(record)

    def _indexed(self, kind: str, by: str, key: Hashable) -> list[dict[str, Any]]:
        """The records of ``kind`` indexed ``by`` under ``key``, in table order, as a scan finds
        them: a table's order is its ids' (records enter it when created, with rising ids; a
        data file is loaded in id order)."""
        table = self.table(kind)
        return [table[i] for i in sorted(self.indexes[kind][by].ids(key)) if i in table]

    def with_email(self, kind: str, email: str) -> list[dict[str, Any]]:
        """The contacts or leads holding ``email`` (compared as ``email_key_of`` does), in table order."""
        return self._indexed(kind, EMAIL, email_key_of(self.options, email))

    def with_name(self, kind: str, name: str) -> list[dict[str, Any]]:
        """The accounts or deals named ``name`` (trimmed, any case), in table order."""
        return self._indexed(kind, NAME, name_key(name))

    def deals_of(self, contact_id: int) -> list[dict[str, Any]]:
        """The deals linked to the contact ``contact_id`` (its ``_contact_ids``), in table order."""
        return self._indexed("deals", CONTACT, contact_id)

    def add_tracking(self, entry: dict[str, Any]) -> None:
        self.tracking.append(entry)
        if self.store is not None:
            self.store.add_tracking(entry)

    def replace_tracking(self, entries: list[dict[str, Any]]) -> None:
        self.tracking = entries
        if self.store is not None:
            self.store.replace_tracking(entries)

    # log --------------------------------------------------------------------------------------

    def log(self, **values: Any) -> LogEntry:
        with self.lock:
            epoch = self.clock()
            entry = LogEntry(
                seq=len(self.requests) + 1,
                time=iso_timestamp(epoch, self.options.utc_offset_minutes),
                epoch=epoch,
                **values,
            )
            self.requests.append(entry)
            return entry

    def api_call_count(self) -> int:
        with self.lock:
            return sum(1 for e in self.requests if e.is_api_call)

    # admin ------------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """A deep copy of all records, with ids as JSON-friendly lists."""
        with self.lock:
            out: dict[str, Any] = {kind: [copy.deepcopy(r) for r in rows.values()]
                                   for kind, rows in self.records.items()}
            out["tracking"] = copy.deepcopy(self.tracking)
            return out

    def reset(self, *, keep_log: bool = False) -> None:
        with self.lock:
            self.records = {k: {} for k in KINDS}
            self._new_indexes()
            self.tracking = []
            if not keep_log:
                self.requests = []
            self.next_id = FIRST_ID
            self.next_sub_id = 90_000_000_001
            self.limiter.reset()
            self.faults.clear_scripts()
            self.bulk.clear()
            self.selectors = default_selectors()
            if self.store is not None:
                self.store.clear()
