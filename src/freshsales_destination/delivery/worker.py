"""Delivery workers: take a person's lane from the store, plan it, merge it, send it.

One lane is one person of one destination. A worker leases the lane, takes its oldest
pending messages in order, and:

* plans the lane's identifies together and merges their record changes into one write per
  record (last writer wins per field, by event timestamp), run at the place of the first
  identify; plans every other message just before it runs, with the identity as it is then;
* finishes at once what cannot be delivered (discarded, filtered), with the reason;
* executes the operations (executor.py), which skips what Freshsales already has;
* on failure, turns the error into a retry decision stored with the message: the lane is
  held until then, so later messages of that person never overtake it.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from freshsales_destination.core.event_age import too_old
from freshsales_destination.core.events_via import TrackingApi
from freshsales_destination.core.mapping_settings import DestinationSettings
from freshsales_destination.core.operations import (
    PERSON_UPSERT_KINDS,
    Operation,
    OperationKind,
    merge_person_operations,
)
from freshsales_destination.core.planner import plan as plan_event
from freshsales_destination.core.reason_codes import failure_reason_code
from freshsales_destination.core.retry import ErrorKind, RetryPolicy, decide
from freshsales_destination.core.schema import FieldSchema, MappingConfigError
from freshsales_destination.core.statuses import MessageStatus, PlanStatus, UnitOutcome
from freshsales_destination.delivery import journal
from freshsales_destination.delivery.budget import BudgetExhausted
from freshsales_destination.delivery.bulk import BulkSender
from freshsales_destination.delivery.events_route import (
    EVENT_TYPES,
    EventsRoute,
    TrackingApiAbsent,
    has_tracking,
)
from freshsales_destination.delivery.executor import (
    CreateInProgress,
    Executor,
    UnitContext,
    UnresolvedReference,
)
from freshsales_destination.delivery.health import DestinationHealth
from freshsales_destination.delivery.memory import DeliveryMemory
from freshsales_destination.delivery.offloop import store_call
from freshsales_destination.delivery.schema_cache import SchemaCache
from freshsales_destination.freshsales.errors import (
    AuthenticationFailed,
    FreshsalesError,
    InvalidRequest,
    PermissionDenied,
)
from freshsales_destination.observe import metrics
from freshsales_destination.store.base import JourneyRow, LaneClaim, Store, StoredMessage
from freshsales_destination.store.wakeups import WorkSignal

log = logging.getLogger(__name__)

# The configuration error each destination's messages wait on, as last logged by this process.
_CONFIG_TOLD: dict[tuple[str, int], str] = {}

RECORD_TYPES = ("identify", "group", "delete")
NON_RECORD_TYPES = ("track", "page", "screen", "alias")


@dataclass
class Unit:
    """Messages that succeed or fail together, and the operations they carry."""

    messages: list[StoredMessage]
    operations: list[Operation]
    notes: list[str] = field(default_factory=list)
    user_id: str | None = None  # the person of the lane, as the messages name them
    # For a merged unit: the messages' own units, run one by one if the merged write fails.
    parts: list[Unit] = field(default_factory=list)
    # Planned while nothing was known about the tracking API: its answer teaches it.
    probe: bool = False


class _Hold(Exception):
    """A message waits a little, through no fault of its own (its retry window is not spent)."""

    def __init__(self, reason: str, seconds: float, *, progress: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.seconds = seconds
        self.progress = progress
        """False when other lanes would wait for the same thing: the worker pauses rather than
        hold them one by one."""


@dataclass
class DeliveryStats:
    lanes: int = 0
    delivered: int = 0
    skipped: int = 0
    discarded: int = 0
    dead: int = 0
    retried: int = 0
    throttled: int = 0
    deferred: int = 0  # units that waited for another lane creating their person


class DestinationWorker:
    """Delivers the lanes of one destination."""

    def __init__(
        self,
        *,
        name: str,
        store: Store,
        settings: DestinationSettings,
        executor: Executor,
        memory: DeliveryMemory,
        schema: SchemaCache,
        policy: RetryPolicy,
        batch_size: int = 100,
        lease_seconds: float = 120.0,
        records_first: Callable[[], bool] = lambda: False,
        now: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        events: EventsRoute | None = None,
        health: DestinationHealth | None = None,
        bulk: BulkSender | None = None,
    ) -> None:
        self.name = name
        self.bulk = bulk
        self.health = health
        self.store = store
        self.settings = settings
        self.executor = executor
        self.memory = memory
        self.schema = schema
        self.policy = policy
        self.batch_size = batch_size
        self.lease_seconds = lease_seconds
        self.records_first = records_first
        self.now = now
        self.rng = rng or random.Random()
        self.owner = f"worker-{uuid.uuid4().hex[:12]}"
        self.stats = DeliveryStats()
        self.config_error: str | None = None
        self.should_stop: Callable[[], bool] = lambda: False
        self.signal: WorkSignal | None = None  # set by the engine: held lanes wake a worker
        self.events = events or EventsRoute(
            store, name, events_via=settings.events_via, has_app_token=settings.has_app_token
        )

    async def _reschedule(self, seq: int, *, available_at: float, **kwargs: Any) -> None:
        """Hold the lane until `available_at`, and have a worker woken then (wakeups.py)."""
        await store_call(self.store.reschedule, seq, available_at=available_at, **kwargs)
        if self.signal is not None:
            self.signal.notify_at(available_at, self.name)

    async def hold_lane(
        self, seq: int, lane: str, *, attempts: int, available_at: float,
        first_failure_at: float | None, reason: str,
    ) -> None:
        """Hold `lane` (message `seq` at its head) until `available_at`, spending nothing."""
        await self._reschedule(
            seq, destination=self.name, lane=lane, attempts=attempts, available_at=available_at,
            first_failure_at=first_failure_at, last_error=reason,
        )

    async def deliver_claimed(self, claim: LaneClaim) -> bool:
        """Deliver a lane claimed elsewhere (delivery/bulk.py) as `run_once` would, and release it."""
        self.stats.lanes += 1
        try:
            return await self._deliver(claim)
        finally:
            await self._release(claim)

    async def _release(self, claim: LaneClaim) -> None:
        """Give the lane back; with messages left in it, a worker of this process looks (at the
        hold's end if held); other processes heard the store's NOTIFY (PostgreSQL)."""
        left = await store_call(self.store.release_lane, self.name, claim.lane, self.owner)
        if left is not None and self.signal is not None:
            if left > self.now():
                self.signal.notify_at(left, self.name)
            else:
                self.signal.notify(self.name)

    async def record_unit(self, messages: Sequence[StoredMessage], schema: FieldSchema) -> Unit | None:
        """The lane's identifies as one unit (see `_record_unit`)."""
        return await self._record_unit(messages, schema)

    async def run_once(self) -> bool:
        """Deliver one lane; False when nothing was ready."""
        if self.health is None:
            return await self._run_once()
        # A destination paused for its own fault (a wrong key, ...) takes no lane but the
        # probe's: one worker at a time, with backoff (delivery/health.py).
        if not await self.health.admit():
            return False
        try:
            return await self._run_once()
        finally:
            self.health.done()

    async def _run_once(self) -> bool:
        heads: tuple[str, ...] | None = None
        if self.bulk is not None:
            # Due bulk jobs are polled first; enough ready record writes go as one job.
            handled = await self.bulk.run_once(self)
            if handled is not None:
                return handled
            if self.bulk.saturated:
                # As many jobs as may be are pending: identifies wait for the next job, and
                # events go only if the record backlog leaves them budget.
                if self._events_wait():
                    return False
                heads = NON_RECORD_TYPES
        claim: LaneClaim | None = None
        if heads is None and self.records_first():
            claim = await self._claim(RECORD_TYPES)
            if claim is None and self._events_wait():
                return False
        if claim is None:
            claim = await self._claim(heads)
        if claim is None:
            return False
        if self.bulk is not None and claim.messages and claim.messages[0].type == "identify":
            self.bulk.wake()  # identifies are ready again: the next pass looks for a job's worth
        if self.signal is not None:
            self.signal.notify(self.name)  # the baton: another idle worker looks for a lane
        self.stats.lanes += 1
        try:
            progressed = await self._deliver(claim)
        finally:
            await self._release(claim)
        # A lane stopped by the spent budget (or an unreadable schema) made no progress: say
        # so, or the caller takes the same lane again at once and spins until the budget frees.
        return progressed

    def _events_wait(self) -> bool:
        """True (and the budget's wait hint set) while the record writes bulk has in hand need
        the budget first: no event lane is taken."""
        wait = self.executor.budget.events_wait()
        if wait > 0:
            self.executor.budget.note_wait(wait)
        return wait > 0

    async def _claim(self, heads: tuple[str, ...] | None) -> LaneClaim | None:
        """The lane of the oldest ready message (whose lane's next message is of ``heads``)."""
        if heads is None:
            claim: LaneClaim | None = await store_call(
                self.store.claim_lane, self.name, owner=self.owner, now=self.now(),
                lease_seconds=self.lease_seconds, max_messages=self.batch_size,
            )
            return claim
        # By type: the store reads only the pending messages of these types (their own index).
        claims: list[LaneClaim] = await store_call(
            self.store.claim_lanes, self.name, owner=self.owner, now=self.now(),
            lease_seconds=self.lease_seconds, max_messages=self.batch_size, head_types=heads, limit=1,
        )
        return claims[0] if claims else None

    # -- planning ------------------------------------------------------------------------------

    async def _plan_one(self, message: StoredMessage, schema: FieldSchema) -> Unit | None:
        """Plan one message with the identity as it is now; None when it was finished here."""
        aged = too_old(message.type, message.event_at, self.now(), self.settings.event_max_age_days)
        if aged is not None:
            self.stats.discarded += 1
            await store_call(
                self.store.finish, [message.seq], status=MessageStatus.FILTERED, now=self.now(),
                reason=aged,
            )
            return None
        event = message.normalized()
        user = event.get("userId") if isinstance(event.get("userId"), str) else None
        identity = await store_call(self.memory.identity, user)
        tracking: TrackingApi | None = None
        probe = False
        if message.type in EVENT_TYPES and self.settings.has_app_token:
            # Plan with what is known; only a plan that calls the tracking API while nothing
            # is known (or a re-check is due) takes the probe: one such event at a time.
            known: TrackingApi = await store_call(self.events.state, self.now())
            tracking = known
            result = plan_event(event, replace(self.settings, tracking_api=known), schema, identity)
            if tracking == "unknown" and result.status == PlanStatus.PLANNED and has_tracking(result.operations):
                claim = await store_call(self.events.claim_probe, self.now())
                if claim == "wait":
                    raise _Hold("waiting for the tracking API's first answer (another worker asked it)", 5.0,
                                progress=False)
                probe = claim == "probe"
                if claim == "absent":
                    tracking = "absent"
                    result = plan_event(event, replace(self.settings, tracking_api=tracking), schema, identity)
        else:
            result = plan_event(event, self.settings, schema, identity)
        if tracking == "absent" and result.status == PlanStatus.PLANNED and has_tracking(result.operations):
            evidence = await store_call(self.events.evidence)
            raise MappingConfigError(
                f"the tracking API is absent on this account ({evidence}; "
                "re-checked daily), and events_via = \"tracking\" (or a track_api rule) "
                "insists on it: the events wait; set events_via = \"auto\" or \"note\" to "
                "deliver them as notes",
                kind="events_via",
            )
        if result.status != PlanStatus.PLANNED:
            self.stats.discarded += 1
            metrics.count_planned_out(self.name, message.type, result.status, result.reason_code)
            status, now = MessageStatus(result.status), self.now()
            reason = result.reason or "not deliverable"
            await store_call(
                self.store.finish, [message.seq], status=status, now=now, reason=reason,
                steps=[journal.step(message.seq, now, str(status), reason=reason,
                                    code=result.reason_code, at_delivery=True)],
            )
            return None
        dropped = [
            f"{entry.source}: {entry.reason}"
            for entry in result.explanation
            if entry.outcome == "dropped"
        ]
        return Unit([message], stable_keys(message, result.operations), dropped, user, probe=probe)

    async def _record_unit(
        self, messages: Sequence[StoredMessage], schema: FieldSchema
    ) -> Unit | None:
        """The lane's identifies as one unit: one write per record, parts kept for fallback."""
        parts: list[Unit] = []
        for message in messages:
            unit = await self._plan_one(message, schema)
            if unit is not None:
                parts.append(unit)
        if not parts:
            return None
        # Reordered even for one message: accounts first, so the link rides on the contact
        # write. Parts are kept only where there is something to fall back to.
        return Unit(
            [m for part in parts for m in part.messages],
            merge_record_operations([op for part in parts for op in part.operations]),
            [note for part in parts for note in part.notes],
            parts[0].user_id,
            parts if len(parts) > 1 else [],
        )

    # -- delivering ----------------------------------------------------------------------------

    async def _deliver(self, claim: LaneClaim) -> bool:
        """Deliver a claimed lane; False when the budget or the schema stopped it at once.

        The lane's identifies are planned first and merged into one unit, run where the first
        identify stands; every other message is planned just before it runs, so it sees what
        the earlier units taught the identity map (a contact id, an account link).
        """
        try:
            schema = await self.schema.get()
        except BudgetExhausted:
            return False
        except (FreshsalesError, MappingConfigError) as exc:
            # The schema could not be fetched or read: nothing is wrong with the messages.
            # The destination's health pauses it and says so once (no line per poll).
            if self.health is not None:
                await store_call(self.health.schema_failed, exc)
            else:
                log.warning("destination %s: cannot read the field schema: %s", self.name, exc)
            if isinstance(exc, FreshsalesError) and exc.kind == "throttled":
                self.stats.throttled += 1
            return False
        identifies = [m for m in claim.messages if m.type == "identify"]
        steps: list[StoredMessage | None] = []  # None marks where the record unit runs
        for message in claim.messages:
            if message.type != "identify":
                steps.append(message)
            elif message is identifies[0]:
                steps.append(None)
        for step in steps:
            if self.should_stop():
                return True  # shutting down: what is left stays pending, in order
            renewed = await store_call(
                self.store.renew_lease, self.name, claim.lane, self.owner,
                now=self.now(), lease_seconds=self.lease_seconds,
            )
            if not renewed:
                log.warning("destination %s: lost the lease on a lane; stopping", self.name)
                return True
            try:
                if step is None:
                    unit = await self._record_unit(identifies, schema)
                else:
                    unit = await self._plan_one(step, schema)
            except MappingConfigError as exc:
                await self._park(claim, step or identifies[0], exc)
                return True
            except _Hold as hold:
                await self._hold(claim, step or identifies[0], hold)
                return hold.progress
            if unit is None:
                continue
            outcome = await self._run_unit(claim, unit)
            if outcome == UnitOutcome.REPLAN and step is not None:
                outcome = await self._replan(claim, step, schema)
            if outcome == UnitOutcome.FELL_BACK and unit.parts:
                for part in unit.parts:
                    outcome = await self._run_unit(claim, part)
                    if outcome in (UnitOutcome.STOP, UnitOutcome.BUDGET):
                        break
            if outcome == UnitOutcome.BUDGET:
                return False  # nothing failed; the lane is released and taken again later
            if outcome == UnitOutcome.STOP:
                return True  # the lane is held; later messages wait their turn
        return True

    async def _park(
        self,
        claim: LaneClaim,
        head: StoredMessage,
        exc: MappingConfigError,
        steps: Sequence[JourneyRow] = (),
    ) -> None:
        """A configuration problem is not the messages' fault: hold them without spending their
        attempts or retry window, and say so once per destination and problem (not per lane)."""
        self.config_error = exc.message
        told = (self.name, id(self.store))
        if _CONFIG_TOLD.get(told) != exc.message:
            _CONFIG_TOLD[told] = exc.message
            log.error(
                "destination %s: configuration error: %s (its messages wait, re-checked every "
                "5 minutes)", self.name, exc.message,
            )
        now = self.now()
        why = f"configuration error: {exc.message}"
        await self._reschedule(
            head.seq, destination=self.name, lane=claim.lane,
            attempts=head.attempts, available_at=now + 300,
            first_failure_at=head.first_failure_at, last_error=why,
            steps=[*steps, journal.step(head.seq, now, "held", reason=why, next_at=now + 300)],
        )

    async def _replan(
        self, claim: LaneClaim, message: StoredMessage, schema: FieldSchema
    ) -> UnitOutcome:
        """The tracking API turned out absent: plan the message again (the other way) and run
        it in the same lane, so it is neither lost nor retried."""
        try:
            unit = await self._plan_one(message, schema)
        except MappingConfigError as exc:
            await self._park(claim, message, exc)
            return UnitOutcome.STOP
        except _Hold as hold:
            await self._hold(claim, message, hold)
            return UnitOutcome.STOP
        if unit is None:
            return UnitOutcome.DONE
        outcome = await self._run_unit(claim, unit)
        if outcome == UnitOutcome.REPLAN:
            # Absent twice in a row (another process disagrees): hold it, with the reason.
            await self._park(claim, message, MappingConfigError(
                "the tracking API is absent on this account, and this event's plan needs it",
                kind="events_via",
            ))
            return UnitOutcome.STOP
        return outcome

    async def _hold(self, claim: LaneClaim, head: StoredMessage, hold: _Hold) -> None:
        now = self.now()
        await self._reschedule(
            head.seq, destination=self.name, lane=claim.lane,
            attempts=head.attempts, available_at=now + hold.seconds,
            first_failure_at=head.first_failure_at, last_error=hold.reason,
            steps=[journal.step(
                head.seq, now, "held", reason=hold.reason, next_at=now + hold.seconds)],
        )

    async def _run_unit(self, claim: LaneClaim, unit: Unit) -> UnitOutcome:
        """Execute a unit: ``DONE``, ``FAILED`` (dead, lane goes on), ``FELL_BACK`` (a merged
        unit failed for good: run its parts one by one), ``STOP`` (retry later), ``BUDGET``, or
        ``REPLAN`` (the tracking API turned out absent: plan the message again)."""
        ctx = UnitContext(user_id=unit.user_id)
        seqs = [m.seq for m in unit.messages]
        calls: list[journal.Call] = []
        try:
            with journal.collect() as calls:
                for op in unit.operations:
                    await self.executor.execute(op, ctx)
        except BudgetExhausted:
            await self._note_calls(seqs, calls)
            if unit.probe:
                # The probe never asked: another event may ask as soon as the budget allows.
                await store_call(self.events.give_up_probe, self.now())
            return UnitOutcome.BUDGET
        except TrackingApiAbsent as exc:
            await self._note_calls(seqs, calls)
            await store_call(self.events.learn_absent, exc.evidence, self.now())
            log.warning(
                "destination %s: %s; events now go by %s", self.name, exc.message,
                (await store_call(self.events.way, self.now())).describe(),
            )
            return UnitOutcome.REPLAN
        except CreateInProgress as exc:
            # Another lane is creating this person: wait for its id, spending no attempt.
            await self._defer(claim, unit, exc, journal.call_steps(seqs, calls))
            return UnitOutcome.STOP
        except (UnresolvedReference, FreshsalesError) as exc:
            if isinstance(exc, AuthenticationFailed | PermissionDenied) and "/track/" in (
                exc.path or ""
            ):
                # The tracking API refused the app token: the configuration's fault, not the
                # event's. Its events wait, attempts and retry window unspent, until it is
                # fixed; one log line says what to change.
                await self._park(claim, unit.messages[0], MappingConfigError(
                    f"the tracking API refused the app_token (HTTP {exc.status}): fix "
                    f"destinations.{self.name}.app_token and restart", kind="app_token",
                ), journal.call_steps(seqs, calls))
                return UnitOutcome.STOP
            if self.health is not None and self.health.holds(exc):
                # The destination's fault (a refused key, no connection): the messages stay
                # pending as they were, their attempts and retry window unspent.
                await self._note_calls(seqs, calls)
                return UnitOutcome.BUDGET
            kind: ErrorKind
            text: str
            retry_after: float | None
            answer = None if isinstance(exc, UnresolvedReference) else exc.status
            if isinstance(exc, UnresolvedReference):
                kind, text, retry_after = "permanent", str(exc), None
            else:
                if isinstance(exc, InvalidRequest) and _unknown_field(exc):
                    await store_call(self.schema.invalidate)
                kind, text, retry_after = exc.kind, _error_text(exc), exc.retry_after
            if kind == "permanent" and unit.parts:
                # One message's bad value must not cost the others: deliver them one by one.
                await self._note_calls(seqs, calls)
                return UnitOutcome.FELL_BACK
            await self._fail(
                claim, unit, kind, text, retry_after, journal.call_steps(seqs, calls),
                status=answer, error_type=type(exc).__name__,
            )
            return UnitOutcome.FAILED if kind == "permanent" else UnitOutcome.STOP
        if unit.probe and has_tracking(unit.operations):
            await store_call(
                self.events.learn_present, "a 2xx answer on the tracking path", self.now()
            )
        status = MessageStatus.DELIVERED if unit.operations else MessageStatus.SKIPPED
        notes = list(unit.notes)
        if ctx.missing_person:
            # The executor skipped what needs the person: nothing of it reached Freshsales.
            status = MessageStatus.SKIPPED
            notes.insert(0, ctx.missing_why or (
                "Freshsales has no such person, so nothing needing them was sent"))
        if status == MessageStatus.DELIVERED:
            self.stats.delivered += len(seqs)
        else:
            self.stats.skipped += len(seqs)
        reason = "; ".join(notes)[:2000] or None
        if status == MessageStatus.SKIPPED and reason is None:
            reason = "nothing to send to Freshsales for this message"
        now = self.now()
        steps = journal.call_steps(seqs, calls)
        steps.extend(journal.step(seq, now, str(status), reason=reason) for seq in seqs)
        # A delivery attempt was made when Freshsales was called (or the unit had operations
        # that earlier attempts already did); a unit with nothing to send made none.
        await store_call(
            self.store.finish, seqs, status=status, now=now, reason=reason, steps=steps,
            attempted=bool(calls) or bool(unit.operations),
        )
        metrics.count_finished(
            self.name, [m.type for m in unit.messages], delivered=status == MessageStatus.DELIVERED,
            latencies=[now - m.received_at for m in unit.messages],
        )
        return UnitOutcome.DONE

    async def _note_calls(self, seqs: Sequence[int], calls: Sequence[journal.Call]) -> None:
        """Calls of a unit that ends without a store write of its own (the budget ran out, a
        fallback or a re-plan follows): written on their own, once."""
        if calls:
            await store_call(self.store.add_steps, journal.call_steps(seqs, calls))

    async def _defer(
        self, claim: LaneClaim, unit: Unit, exc: CreateInProgress, steps: Sequence[JourneyRow]
    ) -> None:
        """Hold the unit briefly; its attempts and its retry window stay as they were."""
        head = unit.messages[0]
        self.stats.deferred += 1
        now = self.now()
        why = f"waiting: {exc}"
        await self._reschedule(
            head.seq, destination=self.name, lane=claim.lane,
            attempts=head.attempts, available_at=now + exc.retry_in,
            first_failure_at=head.first_failure_at, last_error=why,
            steps=[*steps, journal.step(head.seq, now, "held", reason=why,
                                        next_at=now + exc.retry_in)],
        )

    async def _fail(
        self,
        claim: LaneClaim,
        unit: Unit,
        kind: ErrorKind,
        error: str,
        retry_after: float | None,
        steps: Sequence[JourneyRow] = (),
        *,
        status: int | None = None,
        error_type: str = "",
    ) -> None:
        now = self.now()
        head = unit.messages[0]
        first_failure = head.first_failure_at if head.first_failure_at is not None else now
        decision = decide(
            self.policy,
            attempts=head.attempts,
            first_failure_at=first_failure,
            now=now,
            error_kind=kind,
            retry_after=retry_after,
            rand=self.rng.random(),
        )
        if decision.action == "retry":
            if kind == "throttled":
                self.stats.throttled += 1
            else:
                self.stats.retried += 1
            retry = journal.step(
                head.seq, now, "retry", reason=error, error_kind=kind,
                attempt=decision.attempts_after, next_at=decision.at,
            )
            await self._reschedule(
                head.seq, destination=self.name, lane=claim.lane,
                attempts=decision.attempts_after, available_at=decision.at,
                first_failure_at=first_failure, last_error=error, steps=[*steps, retry],
            )
            metrics.count_failed(
                self.name, [head.type], dead=False, status=status, error_type=error_type
            )
            return
        self.stats.dead += len(unit.messages)
        seqs = [m.seq for m in unit.messages]
        # This failed call was an attempt: the store counts it (attempts + 1 each), as do the
        # journey and the log line.
        dead = [
            journal.step(m.seq, now, "dead", reason=error, why=decision.reason,
                         attempt=m.attempts + 1)
            for m in unit.messages
        ]
        await store_call(
            self.store.finish, seqs, status=MessageStatus.DEAD, now=now, reason=error,
            steps=[*steps, *dead], attempted=True,
        )
        metrics.count_failed(
            self.name, [m.type for m in unit.messages], dead=True, status=status,
            error_type=error_type,
        )
        _log_dead(self.name, unit.messages, failure_reason_code(status, error_type), error)


def _log_dead(
    destination: str, messages: Sequence[StoredMessage], code: str, error: str
) -> None:
    """One line per dead letter, with the fields an operator filters on (JSON logs)."""
    for message in messages:
        log.warning(
            "dead letter: destination %s, message %s (%s, seq %d) after %d attempts: %s",
            destination, message.message_id, message.type, message.seq, message.attempts + 1,
            error[:300],
            extra={
                "kind": "dead_letter", "destination": destination, "seq": message.seq,
                "message_id": message.message_id, "type": message.type, "reason_code": code,
                # The attempts made (this last one included) and Freshsales' answer, bounded
                # (the same text as the stored reason; requests and keys are not in it).
                "attempts": message.attempts + 1, "error": error[:300],
            },
        )


def merge_record_operations(ops: Sequence[Operation]) -> list[Operation]:
    """One write per record for a lane's identifies: accounts, then the person, then the rest.

    Accounts and deals of the same name merge (last writer wins per field); person upserts
    merge through `merge_person_operations`; links to the same account collapse to one.
    """
    accounts: dict[str, Operation] = {}
    deals: dict[str, Operation] = {}
    people: list[Operation] = []
    links: dict[str, Operation] = {}
    others: list[Operation] = []
    for op in ops:
        if op.kind == OperationKind.UPSERT_SALES_ACCOUNT:
            accounts[str(op.key.get("name"))] = _merge_named(accounts.get(str(op.key.get("name"))), op)
        elif op.kind == OperationKind.UPSERT_DEAL:
            deals[str(op.key.get("name"))] = _merge_named(deals.get(str(op.key.get("name"))), op)
        elif op.kind in PERSON_UPSERT_KINDS:
            people.append(op)
        elif op.kind == OperationKind.LINK_SALES_ACCOUNT:
            links[repr(op.fields.get("sales_account_id"))] = op
        else:
            others.append(op)
    merged: list[Operation] = list(accounts.values())
    person: Operation | None = None
    if people:
        if len(people) == 1:
            person = people[0]
        elif len({p.user_id for p in people}) == 1:
            person = merge_person_operations(people)
        else:
            merged.extend(people)
    if person is not None and person.kind == OperationKind.UPSERT_CONTACT and links:
        # The links ride on the contact write: the accounts are upserted just before it.
        entries = [
            {"id": link.fields.get("sales_account_id"), "is_primary": bool(link.fields.get("is_primary"))}
            for link in links.values()
        ]
        person = replace(person, fields={**person.fields, "sales_accounts": entries})
        links = {}
    if person is not None:
        merged.append(person)
    merged.extend(links.values())
    merged.extend(deals.values())
    merged.extend(others)
    return merged


def _merge_named(old: Operation | None, new: Operation) -> Operation:
    if old is None:
        return new
    fields = dict(old.fields)
    for name, value in new.fields.items():
        if isinstance(value, dict) and isinstance(fields.get(name), dict):
            fields[name] = {**fields[name], **value}
        else:
            fields[name] = value
    return replace(new, fields=fields)


def stable_keys(message: StoredMessage, ops: Sequence[Operation]) -> list[Operation]:
    """Ledger keys that survive re-planning: message, operation kind, and its ordinal by kind.

    The planner numbers a message's operations by position, and a retry can plan fewer of
    them (a person looked up on the first try is known on the second). A positional key then
    names another operation, and the ledger skips it as done: a note was reported delivered
    but never sent. Keys by kind keep their meaning across plans.
    """
    seen: dict[str, int] = {}
    keyed: list[Operation] = []
    for op in ops:
        ordinal = seen.get(op.kind, 0)
        seen[op.kind] = ordinal + 1
        key = f"{message.source}:{message.message_id}:{op.kind}:{ordinal}"
        keyed.append(replace(op, idempotency_key=key) if op.idempotency_key else op)
    return keyed


def _error_text(exc: FreshsalesError) -> str:
    status = f"HTTP {exc.status}" if getattr(exc, "status", None) else type(exc).__name__
    return f"{status}: {exc.message}"[:2000]


def _unknown_field(exc: FreshsalesError) -> bool:
    text = exc.message.lower()
    return "field" in text and ("unknown" in text or "invalid" in text or "not" in text)
