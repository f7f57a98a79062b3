"""The sandbox's live state: records, ids, timestamps, the request log and persistence."""

from __future__ import annotations

import copy
import threading
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
        if self.store is not None:
            self.store.save_record(kind, record)
        return record

    def delete(self, kind: str, record_id: int) -> dict[str, Any] | None:
        gone = self.table(kind).pop(record_id, None)
        if gone is not None and self.store is not None:
            self.store.delete_record(kind, record_id)
        return gone

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
