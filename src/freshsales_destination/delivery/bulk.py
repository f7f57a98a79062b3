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
from freshsales_destination.store.base import LaneClaim, StoredMessage

if TYPE_CHECKING:
    from freshsales_destination.delivery.worker import DestinationWorker

log = logging.getLogger(__name__)

NAMESPACE = "bulk_jobs"
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
"""A worker polling a job keeps others off it this long (a crashed poller's job is polled again);
the default of ``BulkSettings.poll_lease_seconds``, which the engine sets to
``delivery.lease_seconds``."""


@dataclass(frozen=True)
class BulkSettings:
    enabled: bool = True
    min_records: int = 10
    job_timeout_seconds: float = 1800.0
    poll_lease_seconds: float = POLL_LEASE_SECONDS


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

    def to_json(self) -> dict[str, Any]:
        return {
            "lane": self.lane, "seqs": self.seqs, "head": self.head, "key": self.key,
            "value": self.value, "data": self.data, "record": self.record, "email": self.email,
            "claim_owner": self.claim_owner, "attempts": self.attempts,
            "first_failure_at": self.first_failure_at, "user": self.user,
            "accounts": self.accounts, "links": self.links, "deals": self.deals,
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

    # -- store state -------------------------------------------------------------------------

    def _jobs(self) -> list[dict[str, Any]]:
        jobs: list[dict[str, Any]] = _load(self.store.kv_get(NAMESPACE, self.destination))["jobs"]
        return jobs

    def pending_jobs(self) -> int:
        """How many jobs of this destination wait for their result."""
        return len(self._jobs())

    def _keep(self, job: dict[str, Any]) -> None:
        job.pop("leased_until", None)  # kept by its poller: polled no more for now

        def update(raw: bytes | None) -> tuple[None, bytes]:
            data = _load(raw)
            data["jobs"] = [j for j in data["jobs"] if j.get("id") != job["id"]] + [job]
            return None, orjson.dumps(data)

        self.store.kv_update(NAMESPACE, self.destination, update, now=self.now())

    def _drop(self, job_id: str) -> None:
        def update(raw: bytes | None) -> tuple[None, bytes]:
            data = _load(raw)
            data["jobs"] = [j for j in data["jobs"] if j.get("id") != job_id]
            return None, orjson.dumps(data)

        self.store.kv_update(NAMESPACE, self.destination, update, now=self.now())

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
            return None, orjson.dumps(data)

        self.store.kv_update(NAMESPACE, self.destination, update, now=self.now())

    def _join_ids(self, job: dict[str, Any]) -> None:
        """Keep a contact job whose records need their ids (stage ``ids``): joined to another
        contact job's id search not yet made, when that one gathers for less than
        ``IDS_GATHER_SECONDS``, has room and is not being polled, so several jobs' deal owners
        cost one search and one deals job; else kept as it is."""
        now = self.now()
        job.pop("leased_until", None)

        def update(raw: bytes | None) -> tuple[None, bytes]:
            data = _load(raw)
            jobs = [j for j in data["jobs"] if j.get("id") != job["id"]]
            for other in jobs:
                if (other.get("entity") == "contact" and other.get("stage") == BulkJobStage.IDS
                        and not other.get("searches") and float(other.get("leased_until", 0)) <= now
                        and now - float(other.get("ids_since", 0)) < IDS_GATHER_SECONDS
                        and _owners(other["items"]) + _owners(job["items"]) < MAX_BULK_ITEMS
                        and len(other["items"]) + len(job["items"]) <= IDS_MAX_ITEMS):
                    other["items"] = list(other["items"]) + list(job["items"])
                    # Given up at the earlier deadline: no lane is held past its job's end.
                    other["deadline"] = min(float(other["deadline"]), float(job["deadline"]))
                    other["next_poll"] = max(float(other["next_poll"]), float(job["next_poll"]))
                    other["joined"] = [*other.get("joined", []), job["id"]]
                    break
            else:
                jobs.append(job)
            data["jobs"] = jobs
            return None, orjson.dumps(data)

        self.store.kv_update(NAMESPACE, self.destination, update, now=now)

    def _take_due(self) -> dict[str, Any] | None:
        """A job whose poll is due, leased to this caller for ``settings.poll_lease_seconds``."""
        now = self.now()
        if not any(float(job.get("next_poll", 0)) <= now for job in self._jobs()):
            return None  # a read, not a write transaction, on every pass of every worker

        def update(raw: bytes | None) -> tuple[dict[str, Any] | None, bytes]:
            data = _load(raw)
            for job in sorted(data["jobs"], key=lambda j: float(j.get("next_poll", 0))):
                if float(job.get("next_poll", 0)) <= now:
                    job["next_poll"] = now + self.settings.poll_lease_seconds
                    job["leased_until"] = now + self.settings.poll_lease_seconds
                    return dict(job), orjson.dumps(data)
            return None, orjson.dumps(data)

        found: dict[str, Any] | None = self.store.kv_update(NAMESPACE, self.destination, update, now=now)
        return found

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
            job = await store_call(self._take_due)
            if job is not None:
                await self._poll(worker, job)
                return True
            if self.now() < self._quiet_until or not await store_call(self._capability):
                return None
            return await self._collect_and_send(worker)
        except BudgetExhausted:
            return False

    # -- collecting ---------------------------------------------------------------------------

    async def _collect_and_send(self, worker: DestinationWorker) -> bool | None:
        claims: list[LaneClaim] = []
        while len(claims) < MAX_BULK_ITEMS:
            claim = await store_call(
                worker.store.claim_lane, self.destination, owner=worker.owner, now=self.now(),
                lease_seconds=worker.lease_seconds, max_messages=worker.batch_size,
                head_types=("identify",),
            )
            if claim is None:
                break
            claims.append(claim)
            if len(claims) == 1 and worker.signal is not None:
                worker.signal.notify(worker.name)
        if len(claims) < 2:
            # Nothing to gather: looked for again in a few seconds (a lone identify goes as a
            # single call now; the search for ready identifies is not repeated on every pass).
            self._quiet_until = self.now() + QUIET_SECONDS
            await self._single(worker, claims)
            return True if claims else None
        pending = 0
        if len(claims) < self.settings.min_records:
            pending = await store_call(worker.store.pending_count, self.destination)
        per_hour = await store_call(self.calls_per_hour)
        view = BacklogView(len(claims), pending, per_hour)
        if not should_bulk(view, min_records=self.settings.min_records):
            await self._single(worker, claims)
            return True
        by_lane = {claim.lane: claim for claim in claims}
        items: list[_Item] = []
        single: list[str] = []
        for claim in claims:
            item = await self._item(worker, claim)
            if item is None:
                single.append(claim.lane)
            else:
                items.append(item)
        waiting = [item for item in items if item.accounts]
        contacts = [item for item in items if not item.accounts]
        if len(waiting) >= 2 or (waiting and contacts):
            if not await self._send_accounts(worker, waiting):
                single.extend(item.lane for item in waiting)
        else:
            single.extend(item.lane for item in waiting)
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
        for claim in claims:
            if claim.lane not in single:
                await store_call(worker.store.release_lane, self.destination, claim.lane, worker.owner)
        await self._single(worker, [by_lane[lane] for lane in dict.fromkeys(single)])
        return True

    async def _single(self, worker: DestinationWorker, claims: list[LaneClaim]) -> None:
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
                return

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
                    deals=deal_writes)
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

    async def _send_accounts(self, worker: DestinationWorker, items: list[_Item]) -> bool:
        accounts: dict[str, dict[str, Any]] = {}
        for item in items:
            for account in item.accounts:
                merged = accounts.setdefault(account["name"].strip().lower(), {"name": account["name"], "data": {}})
                merged["data"].update(account["data"])
        writes = list(accounts.values())[:MAX_BULK_ITEMS]
        named = {w["name"].strip().lower() for w in writes}
        items = [item for item in items if all(a["name"].strip().lower() in named for a in item.accounts)]
        job_id, _ = await self._post(worker, "sales_account", [{"name": w["name"], "data": w["data"]} for w in writes])
        if job_id is None:
            return False
        self.records_sent += len(writes)
        await self._keep_and_hold(worker, job_id, "sales_account", items, {"accounts": writes, "searches": 0})
        return True

    # -- polling and results ------------------------------------------------------------------

    async def _poll(self, worker: DestinationWorker, job: dict[str, Any]) -> None:
        items = [_Item.from_json(i) for i in job["items"]]
        now = self.now()
        if now >= float(job["deadline"]):
            await self._hand_back(worker, items, f"bulk job {job['id']} did not finish within "
                                  f"{self.settings.job_timeout_seconds:.0f}s; written as a single call")
            await self._end_claims(items, settle=LOOKUP_SETTLE_SECONDS)
            await store_call(self._drop, job["id"])
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
            await self._hand_back(worker, items, f"bulk job {job['id']} did not account for every account; "
                                  "written as single calls")
            await store_call(self._drop, job["id"])
            return
        back = [item for item in items if any(a["name"].strip().lower() in refused for a in item.accounts)]
        for item in back:
            why = "; ".join(refused[a["name"].strip().lower()] for a in item.accounts
                            if a["name"].strip().lower() in refused)
            await self._hand_back(worker, [item], f"bulk job {job['id']} refused an account ({why}); "
                                  "written as a single call")
        job["items"] = [item.to_json() for item in items if item not in back]
        job["accounts"] = [a for a in job["accounts"] if a["name"].strip().lower() not in refused]
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
        await store_call(self._drop, job["id"])

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
            await store_call(worker.store.finish, item.seqs, status=MessageStatus.DELIVERED, now=now,
                             reason=f"written by bulk job {job['id']}")
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
