"""Record writes as Freshsales bulk upsert jobs (Suite; reference §13.1, issue 12).

When a destination has enough record writes ready (``core/bulk.py`` ``should_bulk``), a worker
takes up to 100 lanes whose next message is an identify, plans each lane's identifies as the
single path would (one merged write per person, run at the place of the first), and sends the
eligible ones as jobs: a lane whose write is one contact upsert by email (or by the id delivery
knows), with the accounts it names and at most its deals. The ids of records written in bulk are
never in an answer: later writes upsert by email or name, and where ids are needed they are
found by one filtered search (``is_in`` over up to 100 values) per job.

Per batch of lanes (docs/freshsales-behaviours.md, "Bulk upsert"):

1. accounts not yet written (or changed) go as one accounts job; ~30 s after it succeeds one
   search by name finds their ids (remembered); the lanes are collected again;
2. when contacts link accounts, one search by email shows which contacts exist: an existing
   contact may hold links this service cannot see and ``sales_accounts`` replaces them, so
   those lanes go single (read, union, write); new contacts carry their links in the item;
3. the contacts job;
4. when it held deals, or links not yet known to stick, one search by email finds the ids of
   the contacts that need one (remembered), one contact is read back to learn whether links
   stick (fact ``bulk_links``), and the deals go as one deals job; contact jobs finishing within
   ``IDS_GATHER_SECONDS`` of each other share the search and the deals job.

Order and safety:

* **Lanes are held while their job is pending.** The job is kept in the store's key-value table
  (namespace ``bulk_jobs``, one entry per destination) *before* the lanes are held, and each
  lane's head message is held until past the job's deadline, so a person's later messages never
  overtake a write waiting in a job, and a restarted process resumes polling the job rather
  than writing again. A crash after the POST but before the job is kept leaves the lanes to
  lapse and be written again by the same upserts: the same final state.
* **Custom fields.** Until the destination is known to merge partial ``custom_field`` writes
  (``delivery/preserve.py``), a lane whose writes carry custom fields goes as single calls,
  which send a complete object and learn the behaviour.
* **Creates cannot race.** Each email sent in a job is claimed as the single path claims it
  (``DeliveryMemory.claim_create``) until the job's result is known; a lane whose email another
  lane is creating is left to the single path.

Results: a record the job reports as written delivers its messages; a record in
``detailed_failure_report`` (or one the answer does not account for) is handed back to its lane,
remembered as such (``BULK_SINGLE``), and the lane writes it as a single call, whose own error
dead-letters it with Freshsales' message. A job that has not finished by its deadline
(``bulk_job_timeout_seconds``) is given up the same way.

Capability (learned fact ``bulk_api``, ``delivery/learned.py``): a 404 means the account has
no bulk API (single calls; re-checked after a day); a 405 is sent again after a pause, up to
``REFUSALS_BEFORE_FALLBACK`` times, then single calls for an hour; an accepted POST records
``present``. ``check`` and the admin API show the facts.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from freshsales_destination.core.bulk import (
    ABSENT_RECHECK_SECONDS,
    REFUSAL_PAUSE_SECONDS,
    REFUSALS_BEFORE_FALLBACK,
    REFUSED_RECHECK_SECONDS,
    BacklogView,
    BulkApi,
    BulkLinks,
    bulk_usable,
    email_match_key,
    first_poll_delay,
    learned_job_seconds,
    next_poll_delay,
    should_bulk,
)
from freshsales_destination.core.operations import Operation, OperationKind, is_ref
from freshsales_destination.core.schema import MappingConfigError
from freshsales_destination.core.statuses import BulkJobStage, MessageStatus
from freshsales_destination.delivery import journal
from freshsales_destination.delivery.budget import BudgetExhausted
from freshsales_destination.delivery.executor import CREATE_CLAIM_SECONDS, LOOKUP_SETTLE_SECONDS
from freshsales_destination.delivery.learned import BULK_API, BULK_LINKS, Fact, LearnedFacts
from freshsales_destination.delivery.memory import DeliveryMemory
from freshsales_destination.delivery.offloop import store_call
from freshsales_destination.delivery.preserve import MERGE
from freshsales_destination.freshsales.bulk import BULK_PATHS, MAX_BULK_ITEMS, JobStatus
from freshsales_destination.freshsales.errors import (
    FreshsalesError,
    MethodNotAllowed,
    NotFound,
)
from freshsales_destination.observe import metrics
from freshsales_destination.store.base import LaneClaim, StoredMessage

if TYPE_CHECKING:
    from freshsales_destination.delivery.worker import DestinationWorker

log = logging.getLogger(__name__)

NAMESPACE = "bulk_jobs"
LANES_NAMESPACE = "bulk_job_lanes"
BULK_SINGLE = "bulk-single"
"""Namespace prefix (``bulk-single:<destination>``, key: the message's seq) of the messages a
bulk job handed back: their lane writes them as single calls, never in a job again (pruned by
housekeeping with the ledger)."""
HOLD_PAST_DEADLINE_SECONDS = 600.0
"""Lanes in a job are held this long past its deadline, so the job is given up (its records
handed back) before they could be taken again, even after every process was down a while."""
QUIET_SECONDS = 5.0
"""After a look found fewer than two lanes with an identify ready, the next look waits this long,
or until a worker takes a lane whose next message is an identify (``wake``)."""
IDS_MAX_ITEMS = 1000
"""At most this many records wait in one joined id search (most only for the links' read-back)."""
IDS_GATHER_SECONDS = 120.0
"""A contact job's deal owners join the id search of another contact job set up less than this
long ago (simulated or real seconds): one search and one deals job for several contact jobs."""
POLL_LEASE_SECONDS = 60.0
"""A worker polling a job keeps others off it at most this long (a crashed poller's job is polled
again); never longer than the lanes' lease (``delivery.lease_seconds``)."""
COLLECT_LANES = 1000
"""One look gathers up to this many lanes (ten contact jobs): the accounts they name are written
once, in full jobs, rather than once per contact job."""
MAX_JOBS_IN_FLIGHT = 30
"""At most this many jobs of a destination wait for their result; beyond it no lanes are gathered
(the kept jobs stay small, and held lanes do not pile up past what the budget can settle)."""
LEASE_MARGIN_SECONDS = 30.0
"""A look sends no further job once its lanes' lease has less than this left (or a quarter of
the lease, when that is shorter)."""
BACKLOG_LOOK_SECONDS = 30.0
"""How often the record backlog is counted for the budget (one count of pending messages)."""
CALLS_PER_BATCH = 4
"""Calls 100 pending identifies are expected to need in bulk: a contacts job and its poll, the
search for existing contacts, a share of accounts jobs (an over-estimate when people send several
identifies: records first is the aim)."""
CALLS_PER_JOB = 2
"""Calls a pending job is expected to need still (its poll, a search)."""


@dataclass(frozen=True)
class BulkSettings:
    enabled: bool = True
    min_records: int = 10
    job_timeout_seconds: float = 1800.0


def _load(raw: bytes | None) -> dict[str, Any]:
    if raw is None:
        return {"jobs": []}
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {"jobs": []}
    if not isinstance(data, dict) or not isinstance(data.get("jobs"), list):
        return {"jobs": []}
    return data


@dataclass
class _Item:
    """One lane's record writes in a job, as kept in the store.

    ``accounts``: the accounts the lane's write names that must be written first (``{"name",
    "data"}``); while there are any, the lane waits for an accounts job and its ids. ``links``:
    the account ids the contact is linked to, sent in its item only for a contact the
    presearch showed to be new (union with nothing)."""

    lane: str
    seqs: list[int]
    head: int
    key: str
    value: Any
    data: dict[str, Any]
    record: str
    email: str | None
    claim_owner: str | None
    attempts: int = 0
    first_failure_at: float | None = None
    user: str | None = None
    accounts: list[dict[str, Any]] = field(default_factory=list)
    links: list[dict[str, Any]] = field(default_factory=list)
    deals: list[dict[str, Any]] = field(default_factory=list)
    """The lane's deals (``{"name", "fields"}``, fields with ``person`` and ``account:`` refs):
    written by a deals job once the contact's id is found after its job."""
    received: list[float] = field(default_factory=list)
    """When each of the messages was received (the delivery latency metric)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "lane": self.lane, "seqs": self.seqs, "head": self.head, "key": self.key,
            "value": self.value, "data": self.data, "record": self.record, "email": self.email,
            "claim_owner": self.claim_owner, "attempts": self.attempts,
            "first_failure_at": self.first_failure_at, "user": self.user,
            "accounts": self.accounts, "links": self.links, "deals": self.deals,
            "received": self.received,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> _Item:
        return cls(
            lane=str(data["lane"]), seqs=[int(s) for s in data["seqs"]], head=int(data["head"]),
            key=str(data["key"]), value=data["value"], data=dict(data["data"]),
            record=str(data["record"]), email=data.get("email"), claim_owner=data.get("claim_owner"),
            attempts=int(data.get("attempts") or 0), first_failure_at=data.get("first_failure_at"),
            user=data.get("user"), accounts=list(data.get("accounts") or []),
            links=list(data.get("links") or []), deals=list(data.get("deals") or []),
            received=[float(r) for r in data.get("received") or []],
        )

    def match(self) -> tuple[str, str]:
        if self.key == "emails":
            return self.key, email_match_key(str(self.value))
        return self.key, str(self.value).strip().lower()

    def body(self) -> dict[str, Any]:
        data = dict(self.data)
        if self.links:
            data["sales_accounts"] = self.links
        return {self.key: self.value, "data": data}


class BulkSender:
    """Sends one destination's ready record writes as bulk jobs and settles their results."""

    def __init__(
        self,
        *,
        destination: str,
        settings: BulkSettings,
        facts: LearnedFacts,
        memory: DeliveryMemory,
        calls_per_hour: Callable[[], int],
        now: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[object]] | None = None,
        lease_seconds: float = POLL_LEASE_SECONDS,
    ) -> None:
        self.destination = destination
        self.settings = settings
        self.facts = facts
        self.memory = memory
        self.calls_per_hour = calls_per_hour
        """The destination's effective hourly limit (reads the budget in the store)."""
        self.store = facts.store
        self.now = now
        self.sleep = sleep or asyncio.sleep
        self.jobs_sent = 0
        self.polls = 0
        self.records_sent = 0
        self._quiet_until = 0.0
        self.saturated = False
        self._backlog_looked = float("-inf")
        self._last_found = 0
        self._last_full = False
        """True while ``MAX_JOBS_IN_FLIGHT`` jobs are pending: the workers leave lanes whose next
        message is an identify for the next job rather than writing them one call each."""
        self.poll_lease_seconds = min(POLL_LEASE_SECONDS, lease_seconds)
        """A poller keeps others off its job this long: at most the lanes' lease, so a job whose
        poller died is polled again no later than its lanes could be claimed."""

    # -- store state -------------------------------------------------------------------------

    def _jobs(self) -> list[dict[str, Any]]:
        """The destination's pending jobs, without their lanes (kept apart: see ``_lanes_key``)."""
        jobs: list[dict[str, Any]] = _load(self.store.kv_get(NAMESPACE, self.destination))["jobs"]
        return jobs

    def pending_jobs(self) -> int:
        """How many jobs of this destination wait for their result."""
        return len(self._jobs())

    def _lanes_namespace(self) -> str:
        """Each job's lanes (``items``, and ``waiters`` attached later) are one value of their own
        (key: the job's id), so the list of jobs every pass reads stays small."""
        return f"{LANES_NAMESPACE}:{self.destination}"

    def _with_lanes(self, job: dict[str, Any]) -> dict[str, Any]:
        raw = self.store.kv_get(self._lanes_namespace(), str(job["id"]))
        lanes = orjson.loads(raw) if raw else {}
        return {**job, "items": list(lanes.get("items") or []), "waiters": list(lanes.get("waiters") or [])}

    def _keep(self, job: dict[str, Any]) -> None:
        """Keep a job (its lanes apart); lanes other workers attached meanwhile are kept."""
        job.pop("leased_until", None)  # kept by its poller: polled no more for now
        items = list(job.get("items") or [])
        header = {k: v for k, v in job.items() if k not in ("items", "waiters")}
        header["lanes"] = len(items)
        header["owners"] = _owners(items)

        def lanes(raw: bytes | None) -> tuple[None, bytes]:
            stored = orjson.loads(raw) if raw else {}
            return None, orjson.dumps({"items": items, "waiters": stored.get("waiters") or []})

        self.store.kv_update(self._lanes_namespace(), str(job["id"]), lanes, now=self.now())

        def update(raw: bytes | None) -> tuple[None, bytes]:
            data = _load(raw)
            data["jobs"] = [j for j in data["jobs"] if j.get("id") != job["id"]] + [header]
            return None, orjson.dumps(data)

        self.store.kv_update(NAMESPACE, self.destination, update, now=self.now())

    def _drop(self, job_id: str) -> dict[str, Any] | None:
        """Forget a job; the job as it was kept (with every lane attached to it), if it was.
        Its lanes' value is closed in the same step, so nothing attaches to it afterwards."""

        def update(raw: bytes | None) -> tuple[dict[str, Any] | None, bytes]:
            data = _load(raw)
            stored = next((j for j in data["jobs"] if j.get("id") == job_id), None)
            data["jobs"] = [j for j in data["jobs"] if j.get("id") != job_id]
            return stored, orjson.dumps(data)

        header: dict[str, Any] | None = self.store.kv_update(NAMESPACE, self.destination, update, now=self.now())
        lanes = self._close_lanes(job_id)
        if header is None:
            return None
        return {**header, "items": list(lanes.get("items") or []), "waiters": list(lanes.get("waiters") or [])}

    def _close_lanes(self, job_id: str) -> dict[str, Any]:
        """Close a job's lanes value (nothing attaches to it afterwards); what it held."""

        def close(raw: bytes | None) -> tuple[dict[str, Any], bytes]:
            stored: dict[str, Any] = orjson.loads(raw) if raw else {}
            return stored, orjson.dumps({"closed": True})

        lanes: dict[str, Any] = self.store.kv_update(self._lanes_namespace(), job_id, close, now=self.now())
        return lanes

    def _pending_accounts(self) -> dict[str, tuple[str, float]]:
        """Account names (trimmed, lower case) in this destination's accounts jobs not settled
        yet, with the job that writes each and its deadline."""
        pending: dict[str, tuple[str, float]] = {}
        for job in self._jobs():
            if job.get("entity") == "sales_account":
                for account in job.get("accounts") or []:
                    pending.setdefault(str(account["name"]).strip().lower(),
                                       (str(job["id"]), float(job["deadline"])))
        return pending

    def _attach(self, job_id: str, items: list[_Item]) -> bool:
        """Attach lanes to a pending accounts job (``waiters``): they wait for its accounts' ids
        and are let go (or handed back) with its own lanes. False if the job is gone."""

        def update(raw: bytes | None) -> tuple[bool, bytes]:
            stored: dict[str, Any] = orjson.loads(raw) if raw else {"closed": True}
            if stored.get("closed"):
                return False, orjson.dumps(stored)
            stored["waiters"] = [*(stored.get("waiters") or []), *[item.to_json() for item in items]]
            return True, orjson.dumps(stored)

        attached: bool = self.store.kv_update(self._lanes_namespace(), job_id, update, now=self.now())
        return attached

    def next_poll_at(self) -> float | None:
        """When the next kept job is due to be polled (``None``: no job is pending)."""
        jobs = self._jobs()
        return min((float(job.get("next_poll", 0)) for job in jobs), default=None)

    def _expected_seconds(self, entity: str) -> float | None:
        """How long jobs of this kind took on this destination (kept beside its jobs)."""
        value = _load(self.store.kv_get(NAMESPACE, self.destination)).get("job_seconds", {}).get(entity)
        return float(value) if isinstance(value, (int, float)) else None

    def _learn_seconds(self, entity: str, finished_after: float, polls: int) -> None:
        def update(raw: bytes | None) -> tuple[None, bytes]:
            data = _load(raw)
            learned = data.get("job_seconds")
            learned = dict(learned) if isinstance(learned, dict) else {}
            previous = learned.get(entity)
            learned[entity] = learned_job_seconds(
                float(previous) if isinstance(previous, (int, float)) else None,
                finished_after=finished_after, polls=polls)
            data["job_seconds"] = learned
            # Jobs of the kind sent meanwhile and not polled yet are first polled when this one
            # showed they should be done.
            for other in data["jobs"]:
                if (other.get("entity") == entity and other.get("stage") == BulkJobStage.JOB
                        and not other.get("polls") and float(other.get("leased_until", 0)) <= self.now()):
                    other["next_poll"] = float(other["created"]) + first_poll_delay(learned[entity])
            return None, orjson.dumps(data)

        self.store.kv_update(NAMESPACE, self.destination, update, now=self.now())

    def _join_ids(self, job: dict[str, Any]) -> None:
        """Keep a contact job whose records need their ids (stage ``ids``): joined to another
        contact job's id search not yet made, when that one gathers for less than
        ``IDS_GATHER_SECONDS``, has room and is not being polled, so several jobs' deal owners
        cost one search and one deals job; else kept as it is."""
        now = self.now()
        job.pop("leased_until", None)
        items = list(job["items"])

        def update(raw: bytes | None) -> tuple[str | None, bytes]:
            data = _load(raw)
            for other in data["jobs"]:
                if (other.get("entity") == "contact" and other.get("stage") == BulkJobStage.IDS
                        and other.get("id") != job["id"]
                        and not other.get("searches") and float(other.get("leased_until", 0)) <= now
                        and now - float(other.get("ids_since", 0)) < IDS_GATHER_SECONDS
                        and int(other.get("owners", 0)) + _owners(items) < MAX_BULK_ITEMS
                        and int(other.get("lanes", 0)) + len(items) <= IDS_MAX_ITEMS):
                    # Given up at the earlier deadline: no lane is held past its job's end. Not
                    # polled before this job would have been, so the lanes are moved over first.
                    other["deadline"] = min(float(other["deadline"]), float(job["deadline"]))
                    other["next_poll"] = max(float(other["next_poll"]), float(job["next_poll"]))
                    other["joined"] = [*other.get("joined", []), job["id"]]
                    other["lanes"] = int(other.get("lanes", 0)) + len(items)
                    other["owners"] = int(other.get("owners", 0)) + _owners(items)
                    data["jobs"] = [j for j in data["jobs"] if j.get("id") != job["id"]]
                    return str(other["id"]), orjson.dumps(data)
            return None, orjson.dumps(data)

        joined: str | None = self.store.kv_update(NAMESPACE, self.destination, update, now=now)
        if joined is None:
            self._keep(job)
            return

        def add(raw: bytes | None) -> tuple[None, bytes]:
            stored = orjson.loads(raw) if raw else {}
            stored["items"] = [*(stored.get("items") or []), *items]
            return None, orjson.dumps(stored)

        self.store.kv_update(self._lanes_namespace(), joined, add, now=now)
        self._close_lanes(str(job["id"]))

    def _take_due(self) -> dict[str, Any] | None:
        """A job whose poll is due, leased to this caller for ``poll_lease_seconds``."""
        now = self.now()
        if not any(float(job.get("next_poll", 0)) <= now for job in self._jobs()):
            return None  # a read, not a write transaction, on every pass of every worker

        def update(raw: bytes | None) -> tuple[dict[str, Any] | None, bytes]:
            data = _load(raw)
            known = data.get("job_seconds")
            learned: dict[str, Any] = known if isinstance(known, dict) else {}
            jobs = sorted(data["jobs"], key=lambda j: float(j.get("next_poll", 0)))
            for job in jobs:
                if float(job.get("next_poll", 0)) > now:
                    continue
                probe = _probe_for(job, data["jobs"], learned)
                if probe is not None:
                    # How long jobs of this kind take is not known yet: only the oldest one is
                    # polled (with backoff); this one is polled once that one shows the time.
                    job["next_poll"] = max(float(probe.get("next_poll", now)), now) + 1.0
                    continue
                job["next_poll"] = now + self.poll_lease_seconds
                job["leased_until"] = now + self.poll_lease_seconds
                return dict(job), orjson.dumps(data)
            return None, orjson.dumps(data)

        found: dict[str, Any] | None = self.store.kv_update(NAMESPACE, self.destination, update, now=now)
        return None if found is None else self._with_lanes(found)

    def _handed_back(self, seq: int) -> bool:
        return self.store.kv_get(f"{BULK_SINGLE}:{self.destination}", str(seq)) is not None

    def _hand_back_mark(self, seqs: list[int]) -> None:
        for seq in seqs:
            self.store.kv_put(f"{BULK_SINGLE}:{self.destination}", str(seq), b"1", now=self.now())

    def _capability(self) -> bool:
        fact = self.facts.get(BULK_API)
        if fact is None:
            return bulk_usable(None, None, self.now())
        return bulk_usable(fact.value, fact.recheck_at, self.now())

    def _learn(self, value: BulkApi, evidence: str, recheck: float | None) -> None:
        old = self.facts.get(BULK_API)
        now = self.now()
        self.facts.learn(BULK_API, Fact(value, evidence, now, None if recheck is None else now + recheck))
        if old is None or old.value != value:
            log.info("destination %s: bulk upsert %s (%s)", self.destination, {
                BulkApi.PRESENT: "is in use", BulkApi.ABSENT: "is absent on this account; single calls, "
                "re-checked daily", BulkApi.REFUSED: "keeps answering 405; single calls for an hour",
            }[value], evidence)

    # -- the worker's entry point -------------------------------------------------------------

    def wake(self) -> None:
        """A worker took a lane whose next message is an identify: look for more at once."""
        self._quiet_until = 0.0

    async def run_once(self, worker: DestinationWorker) -> bool | None:
        """Poll a due job, or send a job; ``None`` when there was nothing for bulk to do (the
        worker then takes a lane as usual)."""
        try:
            await self._note_backlog(worker)
            job = await store_call(self._take_due)
            if job is not None:
                await self._poll(worker, job)
                return True
            if self.now() < self._quiet_until or not await store_call(self._capability):
                return None
            return await self._collect_and_send(worker)
        except BudgetExhausted:
            return False

    async def _note_backlog(self, worker: DestinationWorker) -> None:
        """Tell the budget how many calls the record writes bulk has in hand should still need
        (at most every ``BACKLOG_LOOK_SECONDS``): while that is more than it can still grant,
        events wait. Counted: the pending jobs, and the identify lanes the last look found ready
        (every pending identify when it found as many as it could take, or while lanes wait
        for accounts jobs). With no job pending, lanes whose next message is an event are not
        counted, so events never wait long for records stuck behind events."""
        now = self.now()
        if now < self._backlog_looked + BACKLOG_LOOK_SECONDS:
            return
        self._backlog_looked = now
        jobs = await store_call(self._jobs)
        ready = self._last_found
        if self._last_full or any(job.get("entity") == "sales_account" for job in jobs):
            # Many lanes ready, or lanes waiting for accounts (their contacts jobs to come):
            # every pending identify is counted (an over-estimate; records go first).
            ready = (await store_call(worker.store.pending_by_type, self.destination)).get("identify", 0)
        if ready < self.settings.min_records:
            ready = 0  # a few identifies go as single calls: no backlog to make room for
        worker.executor.budget.record_backlog_calls = (
            CALLS_PER_JOB * len(jobs) + CALLS_PER_BATCH * -(-ready // MAX_BULK_ITEMS))

    # -- collecting ---------------------------------------------------------------------------

    async def _collect_and_send(self, worker: DestinationWorker) -> bool | None:
        in_flight = await store_call(self.pending_jobs)
        self.saturated = in_flight >= MAX_JOBS_IN_FLIGHT
        if self.saturated:
            return None  # the worker takes event lanes meanwhile (see ``saturated``)
        claims: list[LaneClaim] = await store_call(
            worker.store.claim_lanes, self.destination, owner=worker.owner, now=self.now(),
            lease_seconds=worker.lease_seconds, max_messages=worker.batch_size,
            head_types=("identify",),
            limit=min(COLLECT_LANES, MAX_BULK_ITEMS * (MAX_JOBS_IN_FLIGHT - in_flight)),
        )
        self._last_found = len(claims)
        self._last_full = len(claims) == COLLECT_LANES
        if claims and worker.signal is not None:
            worker.signal.notify(worker.name)
        if len(claims) < 2:
            # Nothing to gather: looked for again in a few seconds (a lone identify goes as a
            # single call now; the search for ready identifies is not repeated on every pass).
            self._quiet_until = self.now() + QUIET_SECONDS
            return await self._single(worker, claims) if claims else None
        pending = 0
        if len(claims) < self.settings.min_records:
            pending = await store_call(worker.store.pending_count, self.destination)
        per_hour = await store_call(self.calls_per_hour)
        view = BacklogView(len(claims), pending, per_hour)
        if not should_bulk(view, min_records=self.settings.min_records):
            return await self._single(worker, claims)
        by_lane = {claim.lane: claim for claim in claims}
        single: list[str] = []
        finished = False
        sent = self.jobs_sent
        try:
            items: list[_Item] = []
            for claim in claims:
                item = await self._item(worker, claim)
                if item is None:
                    single.append(claim.lane)
                else:
                    items.append(item)
            waiting = [item for item in items if item.accounts]
            contacts = [item for item in items if not item.accounts]
            if len(waiting) >= 2 or (waiting and contacts):
                single.extend(item.lane for item in await self._send_accounts(worker, waiting))
            else:
                single.extend(item.lane for item in waiting)
            lease_until = min(claim.lease_until for claim in claims)
            margin = min(LEASE_MARGIN_SECONDS, worker.lease_seconds / 4)
            for start in range(0, len(contacts), MAX_BULK_ITEMS):
                if self.now() > lease_until - margin:
                    # The lanes' lease is nearly spent (a slow account): the rest are given back
                    # untouched, before another worker could take them and write them too.
                    await self._end_claims(contacts[start:], settle=0.0)
                    break
                single.extend(await self._send_contact_batch(worker, contacts[start:start + MAX_BULK_ITEMS]))
            finished = True
        finally:
            # Every lane not going single is given back now; a held lane keeps its hold. When
            # the budget ran out midway, every lane is given back as it stands.
            for claim in claims:
                if not finished or claim.lane not in single:
                    await store_call(worker.store.release_lane, self.destination, claim.lane, worker.owner)
        progressed = await self._single(worker, [by_lane[lane] for lane in dict.fromkeys(single)])
        self._backlog_looked = float("-inf")  # what this look found is told to the budget now
        await self._note_backlog(worker)
        # Progress: a job was sent, or a lane was written singly (not when the budget stopped it).
        return progressed or not single or self.jobs_sent > sent

    async def _send_contact_batch(self, worker: DestinationWorker, contacts: list[_Item]) -> list[str]:
        """One contacts job for up to 100 lanes; the lanes that go single instead."""
        single: list[str] = []
        if any(item.links for item in contacts):
            kept = await self._presearch(worker, contacts)
            single.extend(item.lane for item in contacts if item not in kept)
            contacts = kept
        if len(contacts) >= 2:
            if not await self._send_contacts(worker, contacts):
                single.extend(item.lane for item in contacts)
        else:
            await self._end_claims(contacts, settle=0.0)
            single.extend(item.lane for item in contacts)
        return single

    async def _single(self, worker: DestinationWorker, claims: list[LaneClaim]) -> bool:
        """Deliver these lanes by single calls; False when the budget stopped the first one."""
        for index, claim in enumerate(claims):
            try:
                progressed = await worker.deliver_claimed(claim)
            except Exception:
                for rest in claims[index + 1:]:
                    await store_call(worker.store.release_lane, self.destination, rest.lane, worker.owner)
                raise
            if not progressed:  # the budget is spent: the others wait for their turn
                for rest in claims[index + 1:]:
                    await store_call(worker.store.release_lane, self.destination, rest.lane, worker.owner)
                return index > 0
        return True

    async def _item(self, worker: DestinationWorker, claim: LaneClaim) -> _Item | None:
        """The lane's leading identifies as one bulk item, or ``None`` (the lane goes single)."""
        # As the single path does: the lane's identifies merged into one write, run at the place
        # of the first (the lane's head); its other messages follow once the job is settled.
        head = [message for message in claim.messages if message.type == "identify"]
        if not head or head[0] is not claim.messages[0] or await store_call(self._handed_back, head[0].seq):
            return None  # none, or handed back by a job: written as a single call
        try:
            schema = await worker.schema.get()
            unit = await worker.record_unit(head, schema)
        except (FreshsalesError, MappingConfigError, BudgetExhausted):
            return None
        except Exception:  # noqa: BLE001 - the single path plans again and reports it
            log.debug("bulk planning failed for a lane; it goes single", exc_info=True)
            return None
        if unit is None or len(unit.messages) != len(head):
            return None
        people = [op for op in unit.operations if op.kind == OperationKind.UPSERT_CONTACT]
        accounts = [op for op in unit.operations if op.kind == OperationKind.UPSERT_SALES_ACCOUNT]
        deals = [op for op in unit.operations if op.kind == OperationKind.UPSERT_DEAL]
        if len(people) != 1 or len(people) + len(accounts) + len(deals) != len(unit.operations):
            return None
        if not await self._eligible(worker, people[0], accounts, deals):
            return None
        return await store_call(self._claimed_item, worker, claim, unit.messages, people[0], accounts, deals)

    async def _eligible(
        self, worker: DestinationWorker, op: Operation, accounts: list[Operation], deals: list[Operation]
    ) -> bool:
        fields = {k: v for k, v in op.fields.items() if k != "sales_accounts"}
        if _has_ref(fields) or _has_ref(op.key):
            return False
        email = op.key.get("emails")
        if not isinstance(email, str) or not email.strip():
            return False
        merge = await store_call(worker.executor.keeper.mode) == MERGE
        if not merge and any("custom_field" in o.fields for o in (op, *accounts, *deals)):
            return False
        if any(_has_ref(a.fields) or not isinstance(a.key.get("name"), str) for a in accounts):
            return False
        names = {str(a.key["name"]) for a in accounts}
        for deal in deals:
            # A deal names the person and at most an account of this unit, nothing else.
            if not isinstance(deal.key.get("name"), str) or _has_ref(deal.key):
                return False
            rest = {k: v for k, v in deal.fields.items() if k not in ("contacts_added_list", "sales_account_id")}
            if _has_ref(rest) or deal.fields.get("contacts_added_list") != [{"ref": "person"}]:
                return False
            account: Any = deal.fields.get("sales_account_id")
            if account is not None and (
                not is_ref(account) or str(account["ref"]).removeprefix("account:") not in names
            ):
                return False
        for link in op.fields.get("sales_accounts") or []:
            target: Any = link.get("id") if isinstance(link, dict) else None
            if not is_ref(target) or str(target["ref"]).removeprefix("account:") not in names:
                return False
        if op.fields.get("sales_accounts"):
            links = await store_call(self.facts.get, BULK_LINKS)
            if links is not None and links.value == BulkLinks.DROPPED:
                return False
        if op.idempotency_key and await store_call(worker.memory.done, op.idempotency_key) is not None:
            return False
        return True

    def _claimed_item(
        self, worker: DestinationWorker, claim: LaneClaim, messages: list[StoredMessage], op: Operation,
        accounts: list[Operation], deals: list[Operation],
    ) -> _Item | None:
        memory = worker.memory
        email = str(op.key["emails"]).strip()
        external = op.key.get("external_id")
        user = op.user_id or (external if isinstance(external, str) else None)
        user = memory.canonical_user(user) if user else None
        record = f"contact:{user or email}"
        fields = {k: v for k, v in op.fields.items() if k != "sales_accounts"}
        if isinstance(external, str):
            fields.setdefault("external_id", external)
        head = messages[0]
        to_write: list[dict[str, Any]] = []
        ids: dict[str, Any] = {}
        for account in accounts:
            name = str(account.key["name"])
            known = memory.record_id("sales_account", name)
            changed = memory.changed_fields(f"sales_account:{name}", dict(account.fields))
            if known is None or changed:
                to_write.append({"name": name, "data": dict(account.fields) if known is None else changed})
            ids[name] = known
        wanted = [
            {"id": ids.get(str(link["id"]["ref"]).removeprefix("account:")), "is_primary": bool(link.get("is_primary"))}
            for link in op.fields.get("sales_accounts") or []
        ]
        identity = memory.identity(user)
        deal_writes = [{"name": str(d.key["name"]), "fields": dict(d.fields)} for d in deals
                       if memory.record_id("deal", str(d.key["name"])) is None
                       or memory.changed_fields(f"deal:{d.key['name']}", dict(d.fields))]
        base = dict(lane=claim.lane, seqs=[m.seq for m in messages], head=head.seq, record=record,
                    attempts=head.attempts, first_failure_at=head.first_failure_at, user=user,
                    deals=deal_writes, received=[m.received_at for m in messages])
        if to_write:
            # The accounts are written (and their ids found) first; the lane is collected again.
            return _Item(key="emails", value=email, data=fields, email=None, claim_owner=None,
                         accounts=to_write, **base)  # type: ignore[arg-type]
        if identity is not None and identity.record_id is not None and identity.record_type == "contact":
            if deal_writes:
                return None  # deals of a known person: the single path (it has the id)
            if any(w["id"] not in identity.sales_account_ids for w in wanted):
                return None  # a new link on a known contact: read, union, write (single path)
            changed = memory.changed_fields(record, fields)
            if not changed:
                return None  # nothing to write: the single path skips it without a call
            return _Item(key="id", value=str(identity.record_id), data=changed, email=None, claim_owner=None,
                         **base)  # type: ignore[arg-type]
        if memory.person_by_email("contact", email) is not None:
            return None  # known by email: the single path writes by id
        if identity is not None and identity.sales_account_ids and wanted:
            return None  # links delivery knows of but no id: the single path unions them
        owner = f"bulk-{uuid.uuid4().hex}"
        granted = memory.claim_create(email, owner, now=self.now(), hold=CREATE_CLAIM_SECONDS)
        if not granted.granted:
            return None
        links = _primary_once(wanted)
        return _Item(key="emails", value=email, data=fields, email=email, claim_owner=owner, links=links,
                     **base)  # type: ignore[arg-type]

    async def _end_claims(self, items: list[_Item], *, settle: float) -> None:
        for item in items:
            if item.email and item.claim_owner:
                await store_call(
                    self.memory.end_claim, item.email, item.claim_owner, now=self.now(), settle=settle,
                )

    # -- calls --------------------------------------------------------------------------------

    async def _call(self, worker: DestinationWorker, kind: str, action: Callable[[], Awaitable[Any]]) -> Any:
        """One call through the budget (a record call), counted as ``kind``."""
        budget = worker.executor.budget
        ticket = await budget.acquire("record")
        worker.executor.counter.count(kind)
        try:
            result = await action()
        except FreshsalesError as exc:
            await store_call(budget.observe, exc, ticket)
            raise
        reply = result[1] if isinstance(result, tuple) else result
        await store_call(budget.observe, reply, ticket)
        return result

    async def _presearch(self, worker: DestinationWorker, items: list[_Item]) -> list[_Item]:
        """Which of the linked contacts exist already: a link on an existing contact must be the
        union with links this service cannot see, so those lanes go single (their ids are
        remembered, so the single path makes no lookup). One filtered search for the batch."""
        linked = [item for item in items if item.links and item.email]
        try:
            reply = await self._call(worker, "filtered_search", lambda: worker.executor.client.filtered_search(
                "contact", "contact_email.email", [str(item.email) for item in linked]))
        except FreshsalesError:
            await self._end_claims(linked, settle=0.0)
            return [item for item in items if not item.links]
        found = _found_emails(reply.data.get("contacts"))
        kept: list[_Item] = []
        for item in items:
            record_id = found.get(email_match_key(str(item.email))) if item.links and item.email else None
            if record_id is None:
                kept.append(item)
                continue
            await store_call(self.memory.remember_email, "contact", str(item.email), record_id, self.now())
            await self._end_claims([item], settle=0.0)
        return kept

    async def _post(
        self, worker: DestinationWorker, entity: str, body: list[dict[str, Any]]
    ) -> tuple[str | None, bool]:
        """POST a bulk upsert: the job's id, or ``None`` (the lanes go single; learned and told),
        and whether a job may have been made all the same (a timeout or a 5xx)."""
        path = f"POST /api/{BULK_PATHS[entity]}/bulk_upsert"
        client = worker.executor.client
        for attempt in range(REFUSALS_BEFORE_FALLBACK):
            try:
                job_id, _ = await self._call(worker, "bulk_upsert", lambda: client.bulk_upsert(entity, body))
            except MethodNotAllowed:
                if attempt + 1 < REFUSALS_BEFORE_FALLBACK:
                    await self.sleep(REFUSAL_PAUSE_SECONDS)
                    continue
                await store_call(self._learn, BulkApi.REFUSED,
                                 f"{path} answered 405 {REFUSALS_BEFORE_FALLBACK} times", REFUSED_RECHECK_SECONDS)
                return None, False
            except NotFound:
                await store_call(self._learn, BulkApi.ABSENT, f"{path} answered 404", ABSENT_RECHECK_SECONDS)
                return None, False
            except FreshsalesError as exc:
                log.info("destination %s: a bulk upsert failed (%s); its lanes go as single calls",
                         self.destination, exc.message)
                return None, exc.kind != "permanent"
            fact = await store_call(self.facts.get, BULK_API)
            if fact is None or fact.value != BulkApi.PRESENT:
                await store_call(self._learn, BulkApi.PRESENT, f"{path} accepted job {job_id}", None)
            return str(job_id), False
        return None, False

    async def _keep_and_hold(self, worker: DestinationWorker, job_id: str, entity: str, items: list[_Item],
                             extra: dict[str, Any]) -> None:
        expected = await store_call(self._expected_seconds, entity)
        now = self.now()
        deadline = now + self.settings.job_timeout_seconds
        job: dict[str, Any] = {
            "id": job_id, "entity": entity, "stage": BulkJobStage.JOB, "created": now, "polls": 0,
            "next_poll": now + first_poll_delay(expected),
            "deadline": deadline, "items": [item.to_json() for item in items], **extra,
        }
        await store_call(self._keep, job)  # kept before the lanes are held: a restart polls it
        self.jobs_sent += 1
        for item in items:
            await self._hold(worker, item, deadline + HOLD_PAST_DEADLINE_SECONDS,
                             f"waiting for bulk job {job_id} (polled until it finishes)")

    async def _send_contacts(self, worker: DestinationWorker, items: list[_Item]) -> bool:
        job_id, maybe = await self._post(worker, "contact", [item.body() for item in items])
        if job_id is None:
            # A timeout or a 5xx may have made the job: creates wait until lookups show it.
            await self._end_claims(items, settle=LOOKUP_SETTLE_SECONDS if maybe else 0.0)
            return False
        self.records_sent += len(items)
        await self._keep_and_hold(worker, job_id, "contact", items, {})
        return True

    async def _send_accounts(self, worker: DestinationWorker, items: list[_Item]) -> list[_Item]:
        """Write the accounts these lanes name, each once across jobs: names already in a pending
        accounts job are not sent again (the lane is attached to that job and waits for its
        ids); the others go in jobs of up to 100, each lane with the job of its first new name.
        Lanes are collected again once their job's ids are known. Returns the lanes that go
        single (their job could not be sent)."""
        pending = await store_call(self._pending_accounts)
        writes: dict[str, dict[str, Any]] = {}
        owned: list[tuple[_Item, str]] = []
        attach: dict[str, list[_Item]] = {}
        for item in items:
            first: str | None = None
            for account in item.accounts:
                key = account["name"].strip().lower()
                if key in pending:
                    continue
                merged = writes.setdefault(key, {"name": account["name"], "data": {}})
                merged["data"].update(account["data"])
                first = first or key
            if first is None:
                attach.setdefault(pending[item.accounts[0]["name"].strip().lower()][0], []).append(item)
            else:
                owned.append((item, first))
        keys = list(writes)
        batch_of = {key: index // MAX_BULK_ITEMS for index, key in enumerate(keys)}
        single: list[_Item] = []
        for batch in range(-(-len(keys) // MAX_BULK_ITEMS)):
            sent = [writes[key] for key in keys[batch * MAX_BULK_ITEMS:(batch + 1) * MAX_BULK_ITEMS]]
            lanes = [item for item, first in owned if batch_of[first] == batch]
            job_id, _ = await self._post(worker, "sales_account", [{"name": w["name"], "data": w["data"]} for w in sent])
            if job_id is None:
                single.extend(lanes)
                continue
            self.records_sent += len(sent)
            await self._keep_and_hold(worker, job_id, "sales_account", lanes, {"accounts": sent, "searches": 0})
        for job_id, lanes in attach.items():
            deadline = pending[lanes[0].accounts[0]["name"].strip().lower()][1]
            # Held first, then attached: the job's poller lets attached lanes go when it is done.
            for item in lanes:
                await self._hold(worker, item, deadline + HOLD_PAST_DEADLINE_SECONDS,
                                 f"waiting for the accounts of bulk job {job_id}")
            if not await store_call(self._attach, job_id, lanes):
                for item in lanes:  # the job settled meanwhile: collected again at once
                    await self._hold(worker, item, self.now(), f"accounts written by bulk job {job_id}")
        return single

    async def _let_go_waiters(self, worker: DestinationWorker, job_id: str, bad: set[str] | None,
                              reason: str) -> None:
        """Forget an accounts job and let the lanes attached to it go: collected again, or handed
        back to the single path when an account they name is in ``bad`` (``None``: all are)."""
        stored = await store_call(self._drop, job_id)
        for raw in (stored or {}).get("waiters") or []:
            item = _Item.from_json(raw)
            if bad is None or any(a["name"].strip().lower() in bad for a in item.accounts):
                await self._hand_back(worker, [item], reason)
            else:
                await self._hold(worker, item, self.now(), f"accounts written by bulk job {job_id}")

    # -- polling and results ------------------------------------------------------------------

    async def _poll(self, worker: DestinationWorker, job: dict[str, Any]) -> None:
        items = [_Item.from_json(i) for i in job["items"]]
        now = self.now()
        if now >= float(job["deadline"]):
            await self._hand_back(worker, items, f"bulk job {job['id']} did not finish within "
                                  f"{self.settings.job_timeout_seconds:.0f}s; written as a single call")
            await self._end_claims(items, settle=LOOKUP_SETTLE_SECONDS)
            await self._let_go_waiters(worker, str(job["id"]), None, f"bulk job {job['id']} did not finish "
                                       "in time; written as a single call")
            log.warning("destination %s: bulk job %s did not finish in time; its %d lanes go as single calls",
                        self.destination, job["id"], len(items))
            return
        if job.get("stage") == BulkJobStage.IDS and job["entity"] == "sales_account":
            await self._account_ids(worker, job, items)
            return
        if job.get("stage") == BulkJobStage.IDS:
            await self._contact_ids(worker, job, items)
            return
        self.polls += 1
        try:
            status, _ = await self._call(worker, "job_status",
                                         lambda: worker.executor.client.job_status(str(job["id"])))
        except FreshsalesError:
            status = None
        if status is None or not status.finished:
            job["polls"] = int(job["polls"]) + 1
            job["next_poll"] = min(self.now() + next_poll_delay(
                int(job["polls"]), elapsed=now - float(job["created"]),
                progress=status.progress if status is not None else None), float(job["deadline"]))
            await store_call(self._keep, job)
            return
        await store_call(self._learn_seconds, str(job["entity"]), now - float(job["created"]), int(job["polls"]) + 1)
        if job["entity"] == "sales_account":
            await self._settle_accounts(worker, job, items, status)
        elif job["entity"] == "deal":
            await self._settle_deals(worker, job, items, status)
        else:
            await self._settle(worker, job, items, status)

    async def _settle_accounts(self, worker: DestinationWorker, job: dict[str, Any], items: list[_Item],
                               status: JobStatus) -> None:
        refused = {str(f.value).strip().lower(): "; ".join(f.messages) for f in status.failures if f.key == "name"}
        unaccounted = status.succeeded is None or status.succeeded + len(refused) < len(job["accounts"])
        if unaccounted:
            why = f"bulk job {job['id']} did not account for every account; written as single calls"
            await self._hand_back(worker, items, why)
            await self._let_go_waiters(worker, str(job["id"]), None, why)
            return
        back = [item for item in items if any(a["name"].strip().lower() in refused for a in item.accounts)]
        for item in back:
            why = "; ".join(refused[a["name"].strip().lower()] for a in item.accounts
                            if a["name"].strip().lower() in refused)
            await self._hand_back(worker, [item], f"bulk job {job['id']} refused an account ({why}); "
                                  "written as a single call")
        job["items"] = [item.to_json() for item in items if item not in back]
        job["accounts"] = [a for a in job["accounts"] if a["name"].strip().lower() not in refused]
        job["refused"] = sorted({*job.get("refused", []), *refused})
        # Their ids are not in the answer: found by name once searches can show new records.
        job["stage"] = BulkJobStage.IDS
        job["next_poll"] = self.now() + LOOKUP_SETTLE_SECONDS
        await store_call(self._keep, job)

    async def _account_ids(self, worker: DestinationWorker, job: dict[str, Any], items: list[_Item]) -> None:
        wanted = {a["name"].strip().lower(): a for a in job["accounts"]}
        try:
            reply = await self._call(worker, "filtered_search", lambda: worker.executor.client.filtered_search(
                "sales_account", "name", [a["name"] for a in wanted.values()]))
            found = _found_names(reply.data.get("sales_accounts"))
        except FreshsalesError:
            found = {}
        now = self.now()
        for key, account in wanted.items():
            if key in found:
                await store_call(self.memory.remember_record, "sales_account", account["name"], found[key], now)
                await store_call(self.memory.remember_written, f"sales_account:{account['name']}",
                                 account["data"], now)
        missing = [key for key in wanted if key not in found]
        job["searches"] = int(job.get("searches") or 0) + 1
        if missing and job["searches"] < 3:
            job["accounts"] = [wanted[key] for key in missing]
            job["next_poll"] = now + LOOKUP_SETTLE_SECONDS
            await store_call(self._keep, job)
            return
        # The lanes are collected again: their accounts are known now, their contacts go in a job.
        for item in items:
            if any(a["name"].strip().lower() in missing for a in item.accounts):
                await self._hand_back(worker, [item], f"bulk job {job['id']}: an account could not be found "
                                      "after it was written; written as a single call")
            else:
                await self._hold(worker, item, now, f"accounts written by bulk job {job['id']}")
        await self._let_go_waiters(worker, str(job["id"]), {*missing, *job.get("refused", [])},
                                   f"bulk job {job['id']}: an account it waited for could not be written "
                                   "or found; written as a single call")

    async def _settle(self, worker: DestinationWorker, job: dict[str, Any], items: list[_Item],
                      status: JobStatus) -> None:
        failed: dict[tuple[str, str], str] = {}
        for failure in status.failures:
            if failure.key is None:
                continue
            value = str(failure.value)
            key = (failure.key, email_match_key(value) if failure.key == "emails" else value.strip().lower())
            failed[key] = "; ".join(failure.messages)
        unaccounted = status.succeeded is None or status.succeeded + len(failed) < len(items)
        done: list[_Item] = []
        back: list[tuple[_Item, str]] = []
        for item in items:
            why = failed.get(item.match())
            if why is not None:
                back.append((item, f"bulk job {job['id']} refused it ({why}); written as a single call"))
            elif unaccounted:
                back.append((item, f"bulk job {job['id']} did not account for it; written as a single call"))
            else:
                done.append(item)
        for item, why in back:
            await self._hand_back(worker, [item], why)
        # Records written show in lookups only after a while: creates of these emails wait. A
        # record Freshsales refused was not written: its single call may create it at once.
        refused = [item for item, _ in back if item.match() in failed]
        await self._end_claims(refused, settle=0.0)
        await self._end_claims([item for item in items if item not in refused], settle=LOOKUP_SETTLE_SECONDS)
        links = await store_call(self.facts.get, BULK_LINKS)
        verify = links is None and any(item.links for item in done)
        # Whether links inside bulk items stick is unattested: one record is read back first.
        # Deals need the contacts' ids, which the answer lacks: found by one search for the job.
        later = [item for item in done if item.deals or (verify and item.links)]
        await self._finish(worker, job, [item for item in done if item not in later])
        if not later:
            await store_call(self._drop, job["id"])
            return
        job["items"] = [item.to_json() for item in later]
        job["stage"] = BulkJobStage.IDS
        job["searches"] = 0
        job["ids_since"] = self.now()
        job["next_poll"] = self.now() + LOOKUP_SETTLE_SECONDS
        await store_call(self._join_ids, job)

    async def _finish(self, worker: DestinationWorker, job: dict[str, Any], done: list[_Item]) -> None:
        now = self.now()
        for item in done:
            await store_call(worker.memory.remember_written, item.record, item.data, now)
            if item.email and item.user:
                await store_call(self._remember_by_email, item, now)
            await self._hold(worker, item, now, f"delivered by bulk job {job['id']}")
            reason = f"written by bulk job {job['id']}"
            # The journey says which job wrote it (its calls are the job's, shared by its records).
            steps = [journal.step(seq, now, str(MessageStatus.DELIVERED), reason=reason, bulk_job=str(job["id"]))
                     for seq in item.seqs]
            await store_call(worker.store.finish, item.seqs, status=MessageStatus.DELIVERED, now=now,
                             reason=reason, steps=steps, attempted=True)
            metrics.count_finished(self.destination, ["identify"] * len(item.seqs), delivered=True,
                                   latencies=[now - received for received in item.received])
        worker.stats.delivered += sum(len(item.seqs) for item in done)

    async def _contact_ids(self, worker: DestinationWorker, job: dict[str, Any], items: list[_Item]) -> None:
        """After a contact job: the contacts' ids by one search (remembered: later writes and
        events use them); then one record read back if links are not known to stick; then the
        deals job."""
        client = worker.executor.client
        # Only the contacts whose id is needed are searched for: deal owners, and one contact to
        # read back while links are not known to stick (the others wait for that answer).
        searched = [item for item in items if item.deals and item.email][:MAX_BULK_ITEMS - 1]
        if await store_call(self.facts.get, BULK_LINKS) is None and not any(item.links for item in searched):
            sample = next((item for item in items if item.links and item.email and item not in searched), None)
            searched += [sample] if sample is not None else []
        emails = [str(item.email) for item in searched]
        try:
            reply = await self._call(worker, "filtered_search", lambda: client.filtered_search(
                "contact", "contact_email.email", emails))
            found = _found_emails(reply.data.get("contacts"))
        except FreshsalesError:
            found = {}
        now = self.now()
        for item in searched:
            record_id = found.get(email_match_key(str(item.email))) if item.email else None
            if record_id is not None and item.user:
                # The links are remembered by _finish, once they are known to stick.
                await store_call(worker.memory.remember_person, item.user, record_type="contact",
                                 record_id=record_id, email=item.email, now=now)
                await store_call(worker.memory.remember_email, "contact", str(item.email), record_id, now)
        missing = [item for item in searched if email_match_key(str(item.email)) not in found]
        job["searches"] = int(job.get("searches") or 0) + 1
        if missing and job["searches"] < 3:
            job["next_poll"] = now + LOOKUP_SETTLE_SECONDS  # lookups lag: look again
            await store_call(self._keep, job)
            return
        if missing:
            await self._hand_back(worker, missing, f"bulk job {job['id']}: the contact could not be found "
                                  "after it was written; written as a single call")
            items = [item for item in items if item not in missing]
        linked = [item for item in items if item.links]
        known = await store_call(self.facts.get, BULK_LINKS)
        if known is not None and known.value == BulkLinks.DROPPED and linked:
            # Learned from another job's read-back meanwhile: these links are written singly.
            await self._hand_back(worker, linked, f"bulk job {job['id']}: account links inside bulk items "
                                  "are dropped on this account; linked by a single call")
            items = [item for item in items if not item.links]
        elif known is None and linked:
            sample = next(item for item in linked if email_match_key(str(item.email)) in found) \
                if any(email_match_key(str(item.email)) in found for item in linked) else linked[0]
            sample_id = found.get(email_match_key(str(sample.email)))
            have: set[str] | None = None
            if sample_id is not None:
                try:
                    got = await self._call(worker, "read_back",
                                           lambda: client.get_contact(sample_id, "sales_accounts"))
                    have = {str(link.get("id")) for link in got.data.get("sales_accounts") or []
                            if isinstance(link, dict)}
                except FreshsalesError:
                    have = None
            if have is not None:
                kept = {str(link["id"]) for link in sample.links} <= have
                await store_call(self.facts.learn, BULK_LINKS, Fact(
                    BulkLinks.KEPT if kept else BulkLinks.DROPPED,
                    f"contact {sample_id} read back after bulk job {job['id']} "
                    + ("holds its account links" if kept else "lacks its account links"), now))
                log.info("destination %s: account links inside bulk items %s", self.destination,
                         "stick; they go in bulk" if kept else "are dropped; they go as single calls")
                if not kept:
                    await self._hand_back(worker, linked, f"bulk job {job['id']} dropped the account links; "
                                          "linked by a single call")
                    items = [item for item in items if not item.links]
            else:
                await self._hand_back(worker, linked, f"bulk job {job['id']}: its links could not be checked; "
                                      "written as single calls")
                items = [item for item in items if not item.links]
        with_deals = [item for item in items if item.deals]
        await self._finish(worker, job, [item for item in items if not item.deals])
        await store_call(self._drop, job["id"])
        if with_deals:
            await self._send_deals(worker, with_deals, found)

    def _remember_by_email(self, item: _Item, now: float) -> None:
        """The id is not in a job's answer: unless a search found it, the person is known by email
        (and their links), so what needs their id later looks them up by email once."""
        identity = self.memory.identity(item.user)
        record_id = identity.record_id if identity is not None else None
        for link in item.links or [{"id": None}]:
            self.memory.remember_person(str(item.user), record_type="contact", record_id=record_id,
                                        email=item.email, now=now, account_id=link["id"])

    async def _send_deals(self, worker: DestinationWorker, items: list[_Item], ids: dict[str, Any]) -> None:
        deals: dict[str, dict[str, Any]] = {}
        for item in items:
            person = ids[email_match_key(str(item.email))]
            for deal in item.deals:
                data = await store_call(self._deal_data, deal["fields"], person)
                merged = deals.setdefault(deal["name"].strip().lower(), {"name": deal["name"], "data": {}})
                contacts = merged["data"].get("contacts_added_list", []) + data.pop("contacts_added_list", [])
                merged["data"].update(data)
                merged["data"]["contacts_added_list"] = list(dict.fromkeys(contacts))
        writes = list(deals.values())
        job_id, _ = await self._post(worker, "deal", [{"name": w["name"], "data": w["data"]} for w in writes])
        if job_id is None:
            await self._hand_back(worker, items, "the deals' bulk upsert failed; written as single calls")
            return
        self.records_sent += len(writes)
        await self._keep_and_hold(worker, job_id, "deal", items, {"deal_writes": writes})

    def _deal_data(self, fields: dict[str, Any], person: Any) -> dict[str, Any]:
        data = {k: v for k, v in fields.items() if k != "name"}
        data["contacts_added_list"] = [person]
        account: Any = fields.get("sales_account_id")
        if is_ref(account):
            data["sales_account_id"] = self.memory.record_id(
                "sales_account", str(account["ref"]).removeprefix("account:"))
        return data

    async def _settle_deals(self, worker: DestinationWorker, job: dict[str, Any], items: list[_Item],
                            status: JobStatus) -> None:
        refused = {str(f.value).strip().lower(): "; ".join(f.messages) for f in status.failures if f.key == "name"}
        unaccounted = status.succeeded is None or status.succeeded + len(refused) < len(job["deal_writes"])
        now = self.now()
        done: list[_Item] = []
        for item in items:
            names = [d["name"].strip().lower() for d in item.deals]
            why = "; ".join(refused[n] for n in names if n in refused)
            if unaccounted or why:
                # The contact is written; the deal goes again by a single call (an upsert by name).
                await self._hand_back(worker, [item], f"bulk job {job['id']} "
                                      + (f"refused a deal ({why})" if why else "did not account for a deal")
                                      + "; written as a single call")
            else:
                done.append(item)
        for write in job["deal_writes"]:
            if write["name"].strip().lower() not in refused and not unaccounted:
                await store_call(worker.memory.remember_written, f"deal:{write['name']}", write["data"], now)
        await self._finish(worker, job, done)
        await store_call(self._drop, job["id"])

    async def _hand_back(self, worker: DestinationWorker, items: list[_Item], reason: str) -> None:
        now = self.now()
        for item in items:
            await store_call(self._hand_back_mark, item.seqs)
            await self._hold(worker, item, now, reason)

    async def _hold(self, worker: DestinationWorker, item: _Item, until: float, reason: str) -> None:
        """Hold the item's lane until ``until`` (now: let it go), its attempts and window unspent."""
        await worker.hold_lane(item.head, item.lane, attempts=item.attempts, available_at=until,
                               first_failure_at=item.first_failure_at, reason=reason[:2000])


def _probe_for(job: dict[str, Any], jobs: list[dict[str, Any]], learned: dict[str, Any]) -> dict[str, Any] | None:
    """The older job of the same kind, not seen finished, that is polled instead of ``job`` while
    no job of its kind has shown how long they take (``None``: poll ``job``)."""
    if job.get("stage") != BulkJobStage.JOB or job.get("polls") or learned.get(str(job.get("entity"))) is not None:
        return None
    def sent(j: dict[str, Any]) -> tuple[float, str]:
        return float(j.get("created", 0)), str(j.get("id"))

    older = [j for j in jobs if j.get("entity") == job.get("entity") and j.get("stage") == BulkJobStage.JOB
             and sent(j) < sent(job)]
    return min(older, key=sent, default=None)


def _owners(items: list[dict[str, Any]]) -> int:
    """How many kept items need their contact's id (deal owners)."""
    return sum(1 for item in items if item.get("deals"))


def _primary_once(links: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The links as sent on a new contact: each once, one primary (the first marked, else the first)."""
    out: list[dict[str, Any]] = []
    for link in links:
        if link["id"] is not None and all(str(o["id"]) != str(link["id"]) for o in out):
            out.append({"id": link["id"], "is_primary": bool(link.get("is_primary"))})
    if out and not any(o["is_primary"] for o in out):
        out[0]["is_primary"] = True
    seen = False
    for o in out:
        o["is_primary"] = o["is_primary"] and not seen
        seen = seen or o["is_primary"]
    return out


def _found_emails(records: Any) -> dict[str, Any]:
    """Email (match key) -> record id, from a contact search answer."""
    found: dict[str, Any] = {}
    for record in records if isinstance(records, list) else []:
        if not isinstance(record, dict) or record.get("id") is None:
            continue
        values = [record.get("email")] + [e.get("value") for e in record.get("emails") or [] if isinstance(e, dict)]
        for value in values:
            if isinstance(value, str) and value.strip():
                found.setdefault(email_match_key(value), record["id"])
    return found


def _found_names(records: Any) -> dict[str, Any]:
    """Account name (trimmed, lower case) -> id, from an account search answer (oldest first)."""
    found: dict[str, Any] = {}
    for record in sorted((r for r in (records if isinstance(records, list) else []) if isinstance(r, dict)),
                         key=lambda r: str(r.get("id"))):
        name = record.get("name")
        if isinstance(name, str) and record.get("id") is not None:
            found.setdefault(name.strip().lower(), record["id"])
    return found


def _has_ref(value: Any) -> bool:
    if is_ref(value):
        return True
    if isinstance(value, dict):
        return any(_has_ref(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_ref(v) for v in value)
    return False
