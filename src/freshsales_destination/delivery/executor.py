"""Executes planned operations against Freshsales, spending as few calls as possible.

Economy, in the order it is applied to each operation:

1. the ledger: an operation whose idempotency key is recorded as done is never repeated;
2. the identity map and record-id memory: a known record is updated by id, never looked up;
3. the written-field digests: fields equal to what we last wrote are not sent, and a write
   with nothing left to send makes no call;
4. links ride on the person write when the account is known by then.

What a person entered in the CRM survives every write: custom fields are sent complete until the
destination is known to merge partial writes, and a new account link is added to the contact's
current links (``delivery/preserve.py``).

Each call first takes a token from the shared rate budget (`Budget.acquire`).

Creates that cannot race. Freshsales' lookups lag behind writes (up to ~20 s, reference 13.2),
so "look up, then create" in two lanes at once makes two records. A person is created only
under a claim on their normalised email in the store (`DeliveryMemory.claim_create`): one lane
of all processes creates; another lane naming the same email, finding the claim, leaves its
unit pending for a moment (`CreateInProgress`, which costs no retry attempt) and then updates
the record by the id the first lane remembered for that email, with no lookup. A create whose
outcome is unknown (a timeout, a 5xx, an "email already taken" that lookups cannot show yet)
keeps the claim for `LOOKUP_SETTLE_SECONDS`, until a record it may have made is visible.
Lookups are made by email only (`f=external_id` is unattested).
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from freshsales_destination.core.operations import (
    PERSON_UPSERT_KINDS,
    Operation,
    OperationKind,
    is_ref,
)
from freshsales_destination.delivery import journal
from freshsales_destination.delivery.events_route import TrackingApiAbsent, absent_evidence
from freshsales_destination.delivery.learned import LearnedFacts
from freshsales_destination.delivery.memory import DeliveryMemory
from freshsales_destination.delivery.offloop import store_call
from freshsales_destination.delivery.preserve import RecordKeeper
from freshsales_destination.errors import FreshsalesDestinationError
from freshsales_destination.freshsales.client import FreshsalesClient, Reply
from freshsales_destination.freshsales.errors import (
    FreshsalesError,
    InvalidRequest,
    NotFound,
    RetryableError,
)

RECORD_KINDS: frozenset[OperationKind] = frozenset(
    {OperationKind.UPSERT_CONTACT, OperationKind.UPSERT_LEAD, OperationKind.UPSERT_SALES_ACCOUNT,
     OperationKind.LINK_SALES_ACCOUNT, OperationKind.UPSERT_DEAL,
     OperationKind.UPDATE_LIFECYCLE_STAGE, OperationKind.FORGET_CONTACT,
     OperationKind.LOOKUP_PERSON}
)


class Budget(Protocol):
    async def acquire(self, priority: str) -> int:
        """Wait for (or refuse, raising BudgetExhausted) one call's worth of budget; the
        call's ticket, which goes back to `observe` with its answer."""
        ...

    def observe(self, reply_or_error: Any, ticket: int | None = None) -> None: ...

    def wait_hint(self) -> float:
        """Seconds until the budget has room again (0 when it has room now)."""
        ...

    record_backlog_calls: int
    """Calls the pending record writes should need; events wait while they need the budget."""

    def events_wait(self) -> float:
        """Seconds events should wait for the record backlog (0: they may spend now)."""
        ...

    def note_wait(self, seconds: float) -> None:
        """Nothing is sent for ``seconds``: `wait_hint` says so."""
        ...


# How long a lane may hold the claim to create one email's record (a lane's lease is as long).
CREATE_CLAIM_SECONDS = 120.0
# After a create with an unknown outcome: how long until its record would show in lookups.
LOOKUP_SETTLE_SECONDS = 30.0
# How soon a lane that found another lane creating its person looks again.
CREATE_POLL_SECONDS = 1.0


class UnresolvedReference(FreshsalesDestinationError):
    """An operation needs a record that does not exist in Freshsales."""


class CreateInProgress(FreshsalesDestinationError):
    """Another lane is creating (or just tried to create) this person's record: try again in
    `retry_in` seconds. Not a failure: the unit stays pending without spending an attempt."""

    def __init__(self, message: str, *, retry_in: float) -> None:
        super().__init__(message)
        self.retry_in = retry_in


class DuplicateNotVisible(RetryableError):
    """Freshsales refused a create because the email is taken, yet our lookup (or the upsert's
    match) did not show that record: it is too new to be found. Retried within the window."""


@dataclass
class CallCounter:
    calls: int = 0
    skipped: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)

    def count(self, kind: str) -> None:
        self.calls += 1
        self.by_kind[kind] = self.by_kind.get(kind, 0) + 1


@dataclass
class UnitContext:
    """Results of the operations of one unit of work (refs resolved so far)."""

    user_id: str | None
    refs: dict[str, Any] = field(default_factory=dict)
    person_type: str | None = None
    person_email: str | None = None
    missing_person: bool = False
    missing_why: str | None = None  # why the person could not be found, when it is not plain
    create_claim: tuple[str, str] | None = None  # (email, owner) while we may create its record


class Executor:
    def __init__(
        self,
        *,
        client: FreshsalesClient,
        memory: DeliveryMemory,
        budget: Budget,
        product: str,
        now: Callable[[], float] = time.time,
        facts: LearnedFacts | None = None,
        company_becomes_primary: bool = False,
    ) -> None:
        self.client = client
        self.memory = memory
        self.budget = budget
        self.product = product
        self.now = now
        self.counter = CallCounter()
        self.keeper = RecordKeeper(
            client=client,
            facts=facts or LearnedFacts(memory.store, memory.destination),
            call=self._call,
            company_becomes_primary=company_becomes_primary,
            now=now,
        )

    async def _call(self, op: Operation, action: Callable[[], Awaitable[Reply]]) -> Reply:
        priority = "record" if op.kind in RECORD_KINDS else "event"
        ticket = await self.budget.acquire(priority)
        self.counter.count(op.kind)
        at, started = self.now(), time.perf_counter()
        try:
            reply = await action()
        except Exception as exc:
            if isinstance(exc, FreshsalesError):  # the unit's journal (delivery/journal.py)
                journal.record(
                    at=at, operation=str(op.kind), method=exc.method, path=exc.path,
                    status=exc.status, duration_ms=(time.perf_counter() - started) * 1000,
                    error=(exc.freshsales_message or exc.message) if exc.status is not None
                    else f"{type(exc).__name__}: {exc.message}",
                )
            await store_call(self.budget.observe, exc, ticket)
            raise
        journal.record(
            at=at, operation=str(op.kind), method=reply.method, path=reply.path,
            status=reply.status, duration_ms=(time.perf_counter() - started) * 1000,
        )
        await store_call(self.budget.observe, reply, ticket)
        return reply

    # -- reference resolution -----------------------------------------------------------------

    def _resolve(self, value: Any, ctx: UnitContext) -> Any:
        if is_ref(value):
            name = value["ref"]
            if name in ctx.refs:
                return ctx.refs[name]
            if name == "person_type":
                record_type = ctx.person_type
                if record_type is None:
                    identity = self.memory.identity(ctx.user_id)
                    record_type = identity.record_type if identity is not None else None
                if record_type is not None:
                    return "Lead" if record_type == "lead" else "Contact"
            if name == "person":
                identity = self.memory.identity(ctx.user_id)
                if identity is not None and identity.record_id is not None:
                    ctx.refs["person"] = identity.record_id
                    ctx.person_type = identity.record_type
                    return identity.record_id
            elif ":" in name:
                entity, _, key = name.partition(":")
                entity = {"account": "sales_account"}.get(entity, entity)
                known = self.memory.record_id(entity, key)
                if known is not None:
                    ctx.refs[name] = known
                    return known
            raise UnresolvedReference(f"no Freshsales record for {name!r} yet")
        if isinstance(value, dict):
            return {k: self._resolve(v, ctx) for k, v in value.items()}
        if isinstance(value, list):
            return [self._resolve(v, ctx) for v in value]
        return value

    # -- entry point ---------------------------------------------------------------------------

    async def execute(self, op: Operation, ctx: UnitContext) -> None:
        """Run one operation (or prove it needs no call); record its result in `ctx`."""
        if op.kind == OperationKind.ALIAS:
            previous, user = op.fields.get("previous_id"), op.fields.get("user_id")
            if isinstance(previous, str) and isinstance(user, str):
                await store_call(self.memory.add_alias, previous, user, self.now())
            return
        if op.idempotency_key:
            done = await store_call(self.memory.done, op.idempotency_key)
            if done is not None:
                self.counter.skipped += 1
                if op.provides and done.get("result") is not None:
                    ctx.refs[op.provides] = done["result"]
                return
        if ctx.missing_person and "person" in op.needs:
            self.counter.skipped += 1
            return
        handler = getattr(self, f"_op_{op.kind}", None)
        if handler is None:
            raise FreshsalesDestinationError(f"no executor for operation {op.kind!r}")
        try:
            result = await handler(op, ctx)
        except BaseException as exc:
            replacement = await store_call(self._create_failed, ctx, exc)
            if replacement is exc:
                raise
            raise replacement from exc
        if op.provides and result is not None:
            ctx.refs[op.provides] = result
        if op.idempotency_key and op.kind not in PERSON_UPSERT_KINDS:
            await store_call(self.memory.mark_done, op.idempotency_key, result, self.now())

    # -- people --------------------------------------------------------------------------------

    def _person_key(self, op: Operation) -> tuple[str | None, str | None]:
        external = op.key.get("external_id")
        email = op.key.get("emails") or op.key.get("email")
        if isinstance(email, list):
            email = email[0] if email else None
        return (
            external if isinstance(external, str) else None,
            email if isinstance(email, str) else None,
        )

    async def _op_upsert_contact(self, op: Operation, ctx: UnitContext) -> Any:
        return await self._write_person(op, ctx, "contact")

    async def _op_upsert_lead(self, op: Operation, ctx: UnitContext) -> Any:
        return await self._write_person(op, ctx, "lead")

    async def _write_person(self, op: Operation, ctx: UnitContext, record_type: str) -> Any:
        now = self.now()
        external, email = self._person_key(op)
        user = op.user_id or ctx.user_id or external
        if user:
            user = await store_call(self.memory.canonical_user, user)
        fields = await store_call(self._resolve, op.fields, ctx)
        links = fields.pop("sales_accounts", None) if isinstance(fields, dict) else None
        identity = await store_call(self.memory.identity, user)
        known_id = (
            identity.record_id
            if identity is not None and identity.record_type == record_type
            else None
        )
        if known_id is None and email:
            known_id = await store_call(self._known_or_claim, record_type, email, ctx)
        record = f"{record_type}:{user}"
        # Accounts not yet known to be linked: added to the contact's current links (read first).
        fresh: list[Any] = []
        if links and isinstance(links, list) and record_type == "contact":
            linked = list(identity.sales_account_ids) if identity is not None else []
            fresh = [
                link.get("id") for link in links
                if isinstance(link, dict) and link.get("id") not in linked
            ]
        linked_now: list[Any] | None = None
        result: Any = None
        if known_id is not None:
            changed = await store_call(self.memory.changed_fields, record, fields)
            if not changed and not fresh:
                self.counter.skipped += 1
                result = known_id
            else:
                record_id = known_id
                try:
                    reply, linked_now = await self.keeper.update(
                        op, record_type, record_id, changed, new_links=fresh
                    )
                    result = (reply.id if reply is not None else None) or record_id
                except NotFound:
                    # Deleted in Freshsales since we wrote it: forget it and write it anew.
                    await store_call(self.memory.forget, user or "", self.now())
                    await store_call(self.memory.forget_written, record)
                    known_id = None
                    if record_type == "contact" and isinstance(links, list):
                        fresh = [link.get("id") for link in links if isinstance(link, dict)]
                    if email:
                        await store_call(self.memory.forget_email, record_type, email, self.now())
                        if ctx.create_claim is None and await store_call(
                            self._known_or_claim, record_type, email, ctx
                        ):
                            # Another lane made its record meanwhile: use it, shortly.
                            raise self._in_progress(self.now(), settling=False) from None
        if known_id is None and record_type == "contact":
            # Match an existing person by email first (a salesperson may have entered them,
            # without our external_id); the external_id rides along as a field.
            identifier: dict[str, Any] = {"emails": email} if email else {"external_id": external}
            body = dict(fields)
            if external:
                body.setdefault("external_id", external)
            # The contact may exist with custom values and links we never saw: unless the
            # destination merges, its custom fields wait for the answer, which shows them.
            body, held = await store_call(self.keeper.hold_back, body)
            include = "sales_accounts" if fresh else None
            reply = await self._call(
                op, lambda: self.client.upsert_contact(identifier, body, include=include)
            )
            result = reply.id
            if result is not None:
                # The record exists now: remember it before the write that follows, so that a
                # failure of that write never makes a retry create the person again.
                await store_call(self._created, ctx, record_type, result)
                await store_call(
                    self.memory.remember_person, user or "", record_type=record_type,
                    record_id=result, email=email, now=now,
                )
            if held is not None or fresh:
                reply, linked_now = await self.keeper.after_upsert(
                    op, "contact", reply, held, new_links=fresh
                )
        elif known_id is None:
            result = await self._create_or_update_lead(op, fields, email, external)
        await store_call(self._created, ctx, record_type, result)
        ctx.person_type = record_type
        ctx.person_email = email
        if result is not None:
            await store_call(self.memory.remember_written, record, fields, now)
            accounts = linked_now or fresh or [None]
            for account in accounts:
                await store_call(
                    self.memory.remember_person, user or "", record_type=record_type,
                    record_id=result, email=email, now=now, account_id=account,
                )
        if op.idempotency_key:
            await store_call(self.memory.mark_done, op.idempotency_key, result, now)
        return result

    def _known_or_claim(self, record_type: str, email: str, ctx: UnitContext) -> Any:
        """The id remembered for this email; else None, with our claim to create its record in
        `ctx.create_claim`. Raises `CreateInProgress` while another lane holds the claim."""
        known = self.memory.person_by_email(record_type, email)
        if known is not None:
            return known
        owner = f"create-{uuid.uuid4().hex}"
        claim = self.memory.claim_create(email, owner, now=self.now(), hold=CREATE_CLAIM_SECONDS)
        if not claim.granted:
            raise self._in_progress(claim.until, claim.settling)
        # The holder may have finished between our look and our claim: look again.
        known = self.memory.person_by_email(record_type, email)
        if known is not None:
            self.memory.end_claim(email, owner, now=self.now())
            return known
        ctx.create_claim = (email, owner)
        return None

    def _in_progress(self, until: float, settling: bool) -> CreateInProgress:
        wait = max(until - self.now(), 0.0)
        if settling:
            return CreateInProgress(
                "a create for this email had an unknown outcome; waiting until lookups can "
                "show its record", retry_in=min(wait, LOOKUP_SETTLE_SECONDS) or CREATE_POLL_SECONDS,
            )
        return CreateInProgress(
            "another lane is creating the record for this email; using its id once it has one",
            retry_in=min(wait, CREATE_POLL_SECONDS) or CREATE_POLL_SECONDS,
        )

    def _created(self, ctx: UnitContext, record_type: str, result: Any) -> None:
        """The create under our claim is done: remember the id by email, give the claim back."""
        if ctx.create_claim is None:
            return
        email, owner = ctx.create_claim
        ctx.create_claim = None
        if result is not None:
            self.memory.remember_email(record_type, email, result, self.now())
        self.memory.end_claim(email, owner, now=self.now())

    def _create_failed(self, ctx: UnitContext, exc: BaseException) -> BaseException:
        """A create under our claim failed: end the claim; the error to raise instead, if any.

        A create whose outcome is unknown (timeout, 5xx, cancelled) may have made the record, so
        nobody creates again until lookups would show it; a refused or unsent one made nothing.
        "Email already taken" means a record exists that our look could not see yet: retried.
        """
        if ctx.create_claim is None:
            return exc
        email, owner = ctx.create_claim
        ctx.create_claim = None
        duplicate = _not_visible(exc) if isinstance(exc, InvalidRequest) else None
        unknown = duplicate is not None or isinstance(exc, RetryableError | asyncio.CancelledError)
        self.memory.end_claim(
            email, owner, now=self.now(), settle=LOOKUP_SETTLE_SECONDS if unknown else 0.0
        )
        return duplicate or exc

    async def _create_or_update_lead(
        self, op: Operation, fields: dict[str, Any], email: str | None, external: str | None
    ) -> Any:
        found = None
        if email:
            reply = await self._call(op, lambda: self.client.lookup(email, "email", "lead"))
            found = _first_id(reply.data, "leads")
        if found is not None:
            written, _ = await self.keeper.update(op, "lead", found, fields)
            return (written.id if written is not None else None) or found
        body = dict(fields)
        if external:
            body.setdefault("external_id", external)
        if email:
            body.setdefault("email", email)
        reply = await self._call(op, lambda: self.client.create_lead(body))
        return reply.id

    async def _op_lookup_person(self, op: Operation, ctx: UnitContext) -> Any:
        identity = await store_call(self.memory.identity, op.user_id or ctx.user_id)
        if identity is not None and identity.record_id is not None:
            ctx.person_type = identity.record_type
            return identity.record_id
        external, email = self._person_key(op)
        if not email:
            # Lookups by external_id are unattested (reference 13.2): without an email the
            # person can only be one delivery already knows.
            ctx.missing_person = True
            ctx.missing_why = (
                "the person is unknown to delivery and has no email; Freshsales is not searched "
                "by external_id (that lookup is unattested), so nothing needing them was sent"
            )
            return None
        kinds = ("contact", "lead") if self.product == "classic" else ("contact",)
        owner = op.user_id or ctx.user_id or external or email
        for kind in kinds:
            known = await store_call(self.memory.person_by_email, kind, email)
            if known is not None:
                ctx.person_type = kind
                await store_call(
                    self.memory.remember_person, owner, record_type=kind, record_id=known,
                    email=email, now=self.now(),
                )
                return known
        holder = await store_call(self.memory.claim_holder, email, now=self.now())
        if not holder.granted:
            raise self._in_progress(holder.until, holder.settling)
        entities = "lead,contact" if self.product == "classic" else "contact"
        reply = await self._call(
            op, functools.partial(self.client.lookup, email, "email", entities)
        )
        for plural, kind in (("contacts", "contact"), ("leads", "lead")):
            found = _first_id(reply.data, plural)
            if found is not None:
                ctx.person_type = kind
                await store_call(
                    self.memory.remember_person, owner, record_type=kind, record_id=found,
                    email=email, now=self.now(),
                )
                await store_call(self.memory.remember_email, kind, email, found, self.now())
                return found
        ctx.missing_person = True
        return None

    # -- accounts and deals --------------------------------------------------------------------

    async def _upsert_named(
        self,
        op: Operation,
        ctx: UnitContext,
        entity: str,
        call: Callable[[str, dict[str, Any]], Awaitable[Reply]],
    ) -> Any:
        name = op.key.get("name")
        if not isinstance(name, str) or not name:
            raise FreshsalesDestinationError(f"{entity} upsert without a name")
        fields = await store_call(self._resolve, op.fields, ctx)
        record = f"{entity}:{name}"
        known = await store_call(self.memory.record_id, entity, name)
        changed = await store_call(self.memory.changed_fields, record, fields)
        if known is not None and not changed:
            self.counter.skipped += 1
            return known
        reply: Reply | None = None
        if known is not None and await store_call(self.keeper.needs_read, changed):
            try:  # custom fields are sent complete: read the record's current ones first
                reply, _ = await self.keeper.update(op, entity, known, changed)
            except NotFound:
                known = None  # deleted in Freshsales since: upsert it anew by name
        elif known is not None:
            reply = await self._call(op, lambda: call(name, changed))
        if known is None:
            body, held = await store_call(self.keeper.hold_back, fields)
            reply = await self._call(op, lambda: call(name, body))
            if held is not None:
                reply, _ = await self.keeper.after_upsert(op, entity, reply, held)
        result = (reply.id if reply is not None else None) or known
        now = self.now()
        if result is not None:
            await store_call(self.memory.remember_record, entity, name, result, now)
            await store_call(self.memory.remember_written, record, fields, now)
        return result

    async def _op_upsert_sales_account(self, op: Operation, ctx: UnitContext) -> Any:
        return await self._upsert_named(op, ctx, "sales_account", self.client.upsert_sales_account)

    async def _op_upsert_deal(self, op: Operation, ctx: UnitContext) -> Any:
        return await self._upsert_named(op, ctx, "deal", self.client.upsert_deal)

    async def _op_link_sales_account(self, op: Operation, ctx: UnitContext) -> Any:
        person = await store_call(self._resolve, op.key.get("id"), ctx)
        account = await store_call(self._resolve, op.fields.get("sales_account_id"), ctx)
        identity = await store_call(self.memory.identity, ctx.user_id)
        linked = list(identity.sales_account_ids) if identity else []
        if account in linked:
            self.counter.skipped += 1
            return account
        if ctx.person_type == "lead":
            self.counter.skipped += 1  # Classic leads carry their company on the lead itself
            return account
        # Added to the contact's current links (a salesperson's included), primary kept.
        _, linked_now = await self.keeper.update(op, "contact", person, {}, new_links=[account])
        if identity is not None and ctx.user_id:
            for linked_id in linked_now or [account]:
                await store_call(
                    self.memory.remember_person, ctx.user_id,
                    record_type=identity.record_type or "contact",
                    record_id=identity.record_id, email=identity.email, now=self.now(),
                    account_id=linked_id,
                )
        return account

    # -- events --------------------------------------------------------------------------------

    async def _track(self, op: Operation, action: Callable[[], Awaitable[Reply]]) -> Any:
        try:
            reply = await self._call(op, action)
        except FreshsalesError as exc:
            evidence = absent_evidence(exc)
            if evidence is not None:
                raise TrackingApiAbsent(evidence) from None
            raise
        return reply.id

    async def _op_track_event(self, op: Operation, ctx: UnitContext) -> Any:
        identifier = str(await store_call(self._resolve, op.fields.get("identifier"), ctx))
        event = dict(op.fields.get("event") or {})
        name = str(event.pop("name", "") or "event")
        return await self._track(op, lambda: self.client.track_event(identifier, name, event))

    async def _op_track_page_view(self, op: Operation, ctx: UnitContext) -> Any:
        identifier = str(await store_call(self._resolve, op.fields.get("identifier"), ctx))
        page = dict(op.fields.get("page_view") or {})
        url = str(page.pop("url", "") or "")
        return await self._track(op, lambda: self.client.track_page_view(identifier, url, page))

    async def _op_create_note(self, op: Operation, ctx: UnitContext) -> Any:
        fields = await store_call(self._resolve, op.fields, ctx)
        reply = await self._call(
            op,
            lambda: self.client.create_note(
                str(fields.get("description") or ""),
                str(fields.get("targetable_type") or ctx.person_type or "Contact"),
                fields.get("targetable_id"),
            ),
        )
        return reply.id

    async def _op_create_sales_activity(self, op: Operation, ctx: UnitContext) -> Any:
        fields = await store_call(self._resolve, op.fields, ctx)
        reply = await self._call(op, lambda: self.client.create_sales_activity(fields))
        return reply.id

    async def _op_update_lifecycle_stage(self, op: Operation, ctx: UnitContext) -> Any:
        person = await store_call(self._resolve, op.key.get("id"), ctx)
        fields = await store_call(self._resolve, op.fields, ctx)
        record = f"contact:{await store_call(self.memory.canonical_user, ctx.user_id or '')}"
        changed = await store_call(self.memory.changed_fields, record, fields)
        if not changed:
            self.counter.skipped += 1
            return person
        await self._call(op, lambda: self.client.update_contact(person, changed))
        await store_call(self.memory.remember_written, record, fields, self.now())
        return person

    async def _op_forget_contact(self, op: Operation, ctx: UnitContext) -> Any:
        try:
            person = await store_call(self._resolve, op.key.get("id"), ctx)
        except UnresolvedReference:
            return None  # nothing of this person ever reached Freshsales through us
        try:
            if ctx.person_type == "lead":
                await self._call(op, lambda: self.client.request("DELETE", f"/api/leads/{person}"))
            else:
                await self._call(op, lambda: self.client.forget_contact(person))
        except NotFound:
            pass  # already gone: the goal is reached
        if ctx.user_id:
            identity = await store_call(self.memory.identity, ctx.user_id)
            if identity is not None and identity.email:
                await store_call(
                    self.memory.forget_email, identity.record_type or "contact", identity.email,
                    self.now(),
                )
            await store_call(self.memory.forget, ctx.user_id, self.now())
        return None


def _not_visible(exc: InvalidRequest) -> DuplicateNotVisible | None:
    """A create refused because the email is taken, when our look found no such record: the
    record is newer than lookups show (or the upsert's match lags), so it is retried."""
    text = (exc.freshsales_message or exc.message or "").lower()
    if "already been taken" not in text and "already exists" not in text:
        return None
    return DuplicateNotVisible(
        "Freshsales has a record with this email that lookups do not show yet",
        status=exc.status, messages=exc.messages, error_code=exc.error_code,
        method=exc.method, path=exc.path,
    )


def _first_id(data: Any, plural: str) -> Any:
    """The first record id in a lookup answer (`{"leads": {"leads": [...]}}` or flatter)."""
    if not isinstance(data, dict):
        return None
    node = data.get(plural)
    if isinstance(node, dict):
        node = node.get(plural)
    if isinstance(node, list) and node and isinstance(node[0], dict):
        return node[0].get("id")
    return None
