"""Writes that never wipe what a person entered in the CRM: custom fields and account links.

Two behaviours of Freshsales are open in the public record (reference §13.2):

* a ``custom_field`` object on a write may *replace* the record's whole object rather than
  merge into it, wiping custom fields the write did not name, including values a salesperson
  set in the CRM that this service never saw;
* ``sales_accounts`` on a contact write replaces the contact's links, and which one is primary.

Custom fields. Until a destination's own answers have shown that a partial write keeps the
other custom fields (fact ``custom_fields`` in ``delivery/learned.py``), every write carrying
custom fields sends a *complete* ``custom_field``: the record's current values (read just
before, or taken from the answer to the write before it) merged with the event's changes.
The behaviour is learned from answers without risking anything this service does not hold:
when a record's current custom values are all among the ones the message sets and the message
sets at least two, the write is split in two (all but one field, then that one alone); the
second answer shows whether the first ones were kept (``merge``) or wiped (``replace``, then
the complete object is written once more). Only the message's own values are ever at stake,
and a retry of the message writes them again. Once ``merge`` is learned, writes send the
changed fields only and pay no read; whenever a read happens anyway (a new account link), the
answer is checked again, and wiped fields switch the destination back to ``replace``.

Account links. A new link is written as the union of the contact's current links (read with
``include=sales_accounts``, or taken from an upsert's answer) and the new account; the primary
stays where it is unless ``mapping.company_becomes_primary`` is set. Links are read only when
an account not yet known to be linked is about to be written.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from freshsales_destination.core.operations import Operation
from freshsales_destination.delivery.learned import CUSTOM_FIELDS, Fact, LearnedFacts
from freshsales_destination.delivery.offloop import store_call
from freshsales_destination.freshsales.client import FreshsalesClient, Reply

log = logging.getLogger(__name__)

Call = Callable[[Operation, Callable[[], Awaitable[Reply]]], Awaitable[Reply]]
Send = Callable[[dict[str, Any]], Awaitable[Reply]]

MERGE = "merge"
REPLACE = "replace"

_ENVELOPES = {"contact": "contact", "lead": "lead", "sales_account": "sales_account", "deal": "deal"}
_PATHS = {"contact": "contacts", "lead": "leads", "sales_account": "sales_accounts", "deal": "deals"}


# -- pure parts ----------------------------------------------------------------------------------


def is_empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


def custom_of(data: Any) -> dict[str, Any] | None:
    """The ``custom_field`` object of a record in an answer, ``None`` when the answer has none."""
    if not isinstance(data, Mapping):
        return None
    custom = data.get("custom_field")
    return dict(custom) if isinstance(custom, Mapping) else None


def complete_custom(current: Mapping[str, Any] | None, changes: Mapping[str, Any]) -> dict[str, Any]:
    """The record's non-empty current custom values with the event's changes on top."""
    merged = {k: v for k, v in (current or {}).items() if not is_empty(v)}
    merged.update(changes)
    return dict(sorted(merged.items()))


def can_probe(current: Mapping[str, Any] | None, changes: Mapping[str, Any]) -> bool:
    """Whether a split write can learn the behaviour risking only the message's own values:
    every non-empty current value is one the message sets, and it sets at least two."""
    if current is None or len(changes) < 2:
        return False
    return all(key in changes for key, value in current.items() if not is_empty(value))


def custom_evidence(
    before: Mapping[str, Any] | None, sent: Mapping[str, Any], after: Mapping[str, Any] | None
) -> tuple[str | None, list[str]]:
    """What the answer to a write of ``sent`` shows, given the record's custom values
    ``before`` it: ``("merge", kept)``, ``("replace", wiped)`` or ``(None, [])`` when it shows
    nothing (no other non-empty field before, or no ``custom_field`` in the answer)."""
    if before is None or after is None:
        return None, []
    others = {k: v for k, v in before.items() if k not in sent and not is_empty(v)}
    if not others:
        return None, []
    wiped = sorted(k for k in others if is_empty(after.get(k)))
    if wiped:
        return REPLACE, wiped
    return MERGE, sorted(others)


def links_of(data: Any) -> list[dict[str, Any]] | None:
    """A contact's links (``[{"id", "is_primary"}]``) from an answer with
    ``include=sales_accounts``; ``None`` when the answer does not hold them."""
    if not isinstance(data, Mapping):
        return None
    raw = data.get("sales_accounts")
    if not isinstance(raw, list):
        return None
    return [
        {"id": item.get("id"), "is_primary": bool(item.get("is_primary"))}
        for item in raw
        if isinstance(item, Mapping) and item.get("id") is not None
    ]


def _same_id(a: Any, b: Any) -> bool:
    return str(a) == str(b)


def union_links(
    current: Sequence[Mapping[str, Any]], new_ids: Sequence[Any], *, new_primary: bool = False
) -> list[dict[str, Any]]:
    """The contact's current links plus ``new_ids``. The primary stays where it is; a contact
    without links gets the first new account as primary; ``new_primary`` makes the first new
    account primary (``mapping.company_becomes_primary``)."""
    links = [{"id": link.get("id"), "is_primary": bool(link.get("is_primary"))} for link in current]
    added: list[Any] = []
    for account in new_ids:
        if account is None or any(_same_id(account, link["id"]) for link in links):
            continue
        links.append({"id": account, "is_primary": False})
        added.append(account)
    if new_primary and new_ids:
        chosen = new_ids[0]
        for link in links:
            link["is_primary"] = _same_id(link["id"], chosen)
    elif links and not any(link["is_primary"] for link in links):
        links[0]["is_primary"] = True
    return links


# -- the part that calls -------------------------------------------------------------------------


class RecordKeeper:
    """Reads and writes for the executor so that custom fields and links survive."""

    def __init__(
        self,
        *,
        client: FreshsalesClient,
        facts: LearnedFacts,
        call: Call,
        company_becomes_primary: bool = False,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.facts = facts
        self.call = call
        self.company_becomes_primary = company_becomes_primary
        self.now = now

    def mode(self) -> str | None:
        """``"merge"``, ``"replace"``, or ``None`` (not learned yet: handled as replace)."""
        fact = self.facts.get(CUSTOM_FIELDS)
        return fact.value if fact is not None and fact.value in (MERGE, REPLACE) else None

    def needs_read(self, body: Mapping[str, Any]) -> bool:
        """Whether a write of ``body`` to an existing record needs the record's custom values."""
        return "custom_field" in body and self.mode() != MERGE

    def _learn(self, value: str, evidence: str) -> None:
        old = self.mode()
        self.facts.learn(CUSTOM_FIELDS, Fact(value, evidence, self.now()))
        if old != value:
            log.info(
                "destination %s: a partial custom_field write %s the other custom fields (%s)",
                self.facts.destination, "keeps" if value == MERGE else "wipes", evidence,
            )

    # -- calls -----------------------------------------------------------------------------------

    async def read(self, op: Operation, entity: str, record_id: Any, *, links: bool = False) -> Reply:
        path = f"/api/{_PATHS[entity]}/{record_id}"
        if entity == "contact":
            include = "sales_accounts" if links else None
            return await self.call(op, lambda: self.client.get_contact(record_id, include))
        return await self.call(
            op, lambda: self.client.request("GET", path, envelope=_ENVELOPES[entity])
        )

    def sender(self, op: Operation, entity: str, record_id: Any) -> Send:
        """Writes ``body`` to the record by id."""

        async def send(body: dict[str, Any]) -> Reply:
            if entity == "contact":
                return await self.call(op, lambda: self.client.update_contact(record_id, body))
            if entity == "lead":
                return await self.call(op, lambda: self.client.update_lead(record_id, body))
            if entity == "sales_account":
                return await self.call(
                    op, lambda: self.client.update_sales_account(record_id, body)
                )
            path = f"/api/{_PATHS[entity]}/{record_id}"
            return await self.call(
                op,
                lambda: self.client.request(
                    "PUT", path, json={_ENVELOPES[entity]: body}, envelope=_ENVELOPES[entity]
                ),
            )

        return send

    async def write_custom(
        self,
        send: Send,
        where: str,
        base: dict[str, Any],
        current: dict[str, Any] | None,
        changes: dict[str, Any],
    ) -> Reply:
        """Write ``base`` plus the custom ``changes`` so that no other custom value is lost.

        ``current`` is the record's custom object as last read (``None``: unknown, which is
        only allowed once the destination is known to merge). ``where`` names the write in
        evidence texts (never values)."""
        mode = await store_call(self.mode)
        if mode == MERGE:
            reply = await send({**base, "custom_field": dict(changes)})
            verdict, names = custom_evidence(current, changes, custom_of(reply.data))
            if verdict == REPLACE:
                await store_call(
                    self._learn, REPLACE, f"{where}: a partial write wiped {', '.join(names)}"
                )
                reply = await send({"custom_field": complete_custom(current, changes)})
            return reply
        complete = complete_custom(current, changes)
        if mode is None and can_probe(current, changes):
            last = sorted(changes)[-1]
            first = {k: v for k, v in complete.items() if k != last}
            reply = await send({**base, "custom_field": first})
            before = custom_of(reply.data)
            reply = await send({"custom_field": {last: changes[last]}})
            verdict, names = custom_evidence(
                before if before is not None else first, {last: changes[last]}, custom_of(reply.data)
            )
            if verdict == MERGE:
                await store_call(
                    self._learn, MERGE, f"{where}: a write of {last} alone kept {', '.join(names)}"
                )
                return reply
            if verdict == REPLACE:
                await store_call(
                    self._learn, REPLACE, f"{where}: a write of {last} alone wiped {', '.join(names)}"
                )
            return await send({"custom_field": complete})
        return await send({**base, "custom_field": complete})

    async def update(
        self,
        op: Operation,
        entity: str,
        record_id: Any,
        changed: dict[str, Any],
        *,
        new_links: Sequence[Any] = (),
        send: Send | None = None,
    ) -> tuple[Reply | None, list[Any] | None]:
        """Write ``changed`` to an existing record, reading it first when safety needs it.

        Returns the last answer (``None`` when nothing needed writing) and, when ``new_links``
        were asked for, every account the contact is linked to afterwards."""
        send = send or self.sender(op, entity, record_id)
        body = dict(changed)
        changes = body.pop("custom_field", None)
        current: dict[str, Any] | None = None
        linked: list[Any] | None = None
        if (changes is not None and await store_call(self.mode) != MERGE) or new_links:
            got = await self.read(op, entity, record_id, links=bool(new_links))
            current = custom_of(got.data) or {}
            if new_links:
                links = links_of(got.data) or []
                union = union_links(links, new_links, new_primary=self.company_becomes_primary)
                if union != links:
                    body["sales_accounts"] = union
                linked = [link["id"] for link in union]
        where = f"PUT /api/{_PATHS[entity]}/{{id}}"
        if isinstance(changes, dict):
            return await self.write_custom(send, where, body, current, changes), linked
        if not body:
            return None, linked
        return await send(body), linked

    def hold_back(self, fields: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """Split an upsert of a record that may exist: the custom fields are held back (unless
        the destination merges) and written by id once the upsert's answer shows the record's
        current values."""
        if not self.needs_read(fields) or not isinstance(fields.get("custom_field"), dict):
            return fields, None
        body = dict(fields)
        return body, body.pop("custom_field")

    async def after_upsert(
        self,
        op: Operation,
        entity: str,
        reply: Reply,
        held: dict[str, Any] | None,
        *,
        new_links: Sequence[Any] = (),
    ) -> tuple[Reply, list[Any] | None]:
        """Finish an upsert whose custom fields were held back and/or that links accounts: the
        upsert's answer is the read; one more write by id when anything remains to send."""
        record_id = reply.id
        if record_id is None or (held is None and not new_links):
            return reply, None
        data = reply.data
        body: dict[str, Any] = {}
        linked: list[Any] | None = None
        if new_links:
            links = links_of(data)
            if links is None:  # the answer did not embed them: read them
                data = (await self.read(op, entity, record_id, links=True)).data
                links = links_of(data) or []
            union = union_links(links, new_links, new_primary=self.company_becomes_primary)
            if union != links:
                body["sales_accounts"] = union
            linked = [link["id"] for link in union]
        send = self.sender(op, entity, record_id)
        if held is not None:
            where = f"PUT /api/{_PATHS[entity]}/{{id}} after an upsert"
            current = custom_of(data)
            if current is None:  # the answer did not show them: read them
                current = custom_of((await self.read(op, entity, record_id)).data) or {}
            return await self.write_custom(send, where, body, current, held), linked
        if not body:
            return reply, linked
        return await send(body), linked
