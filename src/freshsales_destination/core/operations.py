"""Freshsales operations: what the planner asks the delivery engine to do.

An :class:`Operation` is a frozen, JSON-serialisable value. The engine executes the operations of
one plan in list order. Values inside ``key`` and ``fields`` may be *references* to the result of
another operation: a dict that is exactly ``{"ref": NAME}``. Reference names:

- ``"person"``: the id of the person the event is about. Provided by the plan's ``upsert_lead``,
  ``upsert_contact`` or ``lookup_person`` operation when there is one, else by the engine's
  identity map (the planner only leaves it unprovided when its identity state knew the person).
- ``"account:<name>"``: the id of the sales account upserted by name in the same plan.
- ``"deal:<name>"``: the id of the deal upserted by name in the same plan.

Planner-produced values never take the ``{"ref": ...}`` shape otherwise (trait values that are
objects are never copied into fields), so the engine can substitute every such dict.

Kinds and what they carry:

=========================  =========  ====================================================
kind                       entity     key / fields
=========================  =========  ====================================================
``upsert_contact``         contact    key ``{"external_id", "emails"}`` (preference order);
                                      fields: standard fields, ``custom_field`` dict
``upsert_lead``            lead       key ``{"external_id", "email"}``; fields may hold the
                                      nested ``company`` and ``deal`` objects (Classic)
``lookup_person``          contact|   key as the upserts; no fields; finds an existing person
                           lead       (the dependent operations are skipped when none exists)
``upsert_sales_account``   sales_     key ``{"name"}``; fields incl. ``custom_field``
                           account
``link_sales_account``     contact    key ``{"id": person ref}``; fields ``sales_account_id``
                                      (ref or id) and ``is_primary``; the engine adds it to
                                      the contact's ``sales_accounts`` list if missing
``upsert_deal``            deal       key ``{"name"}``; fields incl. ``amount``,
                                      ``sales_account_id`` and ``contacts_added_list`` refs
``track_event``            event      fields ``{"identifier", "event": {"name", ...}}``
                                      (``/track/events``; needs the app token)
``track_page_view``        page_view  fields ``{"identifier", "page_view": {"url", ...}}``
``create_note``            note       fields ``description``, ``targetable_type``,
                                      ``targetable_id``
``create_sales_activity``  sales_     fields ``title``, ``sales_activity_type_id``,
                           activity   ``start_date``, ``end_date``, ``notes``,
                                      ``targetable_type``, ``targetable_id`` [, ``owner_id``]
``update_lifecycle_stage`` contact    key ``{"id": person ref}``; fields
                                      ``lifecycle_stage_id``
``forget_contact``         contact|   key ``{"id": person ref}``; GDPR erase of the person
                           lead
``alias``                  identity   ``api_call`` False; fields ``previous_id``, ``user_id``;
                                      the engine records the alias in its identity map
=========================  =========  ====================================================
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any


class OperationKind(StrEnum):
    """What an operation does (the table above). Values are the stored and JSON strings."""

    UPSERT_CONTACT = "upsert_contact"
    UPSERT_LEAD = "upsert_lead"
    LOOKUP_PERSON = "lookup_person"
    UPSERT_SALES_ACCOUNT = "upsert_sales_account"
    LINK_SALES_ACCOUNT = "link_sales_account"
    UPSERT_DEAL = "upsert_deal"
    TRACK_EVENT = "track_event"
    TRACK_PAGE_VIEW = "track_page_view"
    CREATE_NOTE = "create_note"
    CREATE_SALES_ACTIVITY = "create_sales_activity"
    UPDATE_LIFECYCLE_STAGE = "update_lifecycle_stage"
    FORGET_CONTACT = "forget_contact"
    ALIAS = "alias"


OPERATION_KINDS: tuple[OperationKind, ...] = tuple(OperationKind)

PERSON_UPSERT_KINDS: frozenset[OperationKind] = frozenset(
    {OperationKind.UPSERT_CONTACT, OperationKind.UPSERT_LEAD}
)


def ref(name: str) -> dict[str, str]:
    """A reference to the id produced by the operation that ``provides`` ``name``."""
    return {"ref": name}


def is_ref(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("ref"), str)


def _collect_refs(value: Any, out: set[str]) -> None:
    if is_ref(value):
        out.add(value["ref"])
    elif isinstance(value, dict):
        for v in value.values():
            _collect_refs(v, out)
    elif isinstance(value, list):
        for v in value:
            _collect_refs(v, out)


@dataclass(frozen=True)
class Operation:
    """One Freshsales call (or identity-map change when ``api_call`` is False).

    ``key`` and ``fields`` are plain JSON values: treat them as read-only.
    """

    kind: OperationKind
    entity: str
    key: dict[str, Any] = field(default_factory=dict)
    fields: dict[str, Any] = field(default_factory=dict)
    provides: str | None = None
    idempotency_key: str = ""
    api_call: bool = True
    user_id: str | None = None
    timestamp: str | None = None

    __hash__ = None  # type: ignore[assignment]  # holds dicts

    @property
    def needs(self) -> tuple[str, ...]:
        """The reference names this operation needs resolved, sorted."""
        found: set[str] = set()
        _collect_refs(self.key, found)
        _collect_refs(self.fields, found)
        return tuple(sorted(found))

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": str(self.kind),
            "entity": self.entity,
            "key": _copy(self.key),
            "fields": _copy(self.fields),
            "provides": self.provides,
            "needs": list(self.needs),
            "idempotency_key": self.idempotency_key,
            "api_call": self.api_call,
            "user_id": self.user_id,
            "timestamp": self.timestamp,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Operation:
        kind = data.get("kind")
        if not isinstance(kind, str) or kind not in OPERATION_KINDS:
            raise ValueError(f"unknown operation kind {kind!r}")
        key = data.get("key") or {}
        fields_ = data.get("fields") or {}
        if not isinstance(key, dict) or not isinstance(fields_, dict):
            raise ValueError("operation key and fields must be objects")
        return cls(
            kind=OperationKind(kind),
            entity=str(data.get("entity") or ""),
            key=_copy(key),
            fields=_copy(fields_),
            provides=data.get("provides"),
            idempotency_key=str(data.get("idempotency_key") or ""),
            api_call=bool(data.get("api_call", True)),
            user_id=data.get("user_id"),
            timestamp=data.get("timestamp"),
        )


def _copy(value: Any) -> Any:
    # A JSON round trip: deep copy, and proof that the value is JSON-serialisable.
    return json.loads(json.dumps(value))


def merge_person_operations(ops: Sequence[Operation]) -> Operation:
    """Merge person upserts of one person, given in timestamp order, into one upsert.

    Last writer wins per field; the dict-valued fields ``custom_field``, ``company`` and
    ``deal`` are merged one level deep. The result takes the last operation's kind, key and
    timestamp, and an idempotency key derived from all merged keys. When the kind changed
    (a Classic lead later sent with ``fsContact``), only the operations of the last kind count. Raises ``ValueError`` when
    ``ops`` is empty, holds something other than person upserts, or spans several people.
    """
    if not ops:
        raise ValueError("nothing to merge")
    users = {op.user_id for op in ops}
    if len(users) != 1:
        raise ValueError("person operations of different users cannot be merged")
    for op in ops:
        if op.kind not in PERSON_UPSERT_KINDS:
            raise ValueError(f"{op.kind} is not a person upsert")
    if len(ops) == 1:
        return ops[0]
    last = ops[-1]
    merged: dict[str, Any] = {}
    for op in ops:
        if op.kind != last.kind:
            continue
        for name, value in op.fields.items():
            old = merged.get(name)
            if name in ("custom_field", "company", "deal") and isinstance(old, dict) and isinstance(
                value, dict
            ):
                merged[name] = {**old, **value}
            else:
                merged[name] = value
    digest = hashlib.sha256("\n".join(op.idempotency_key for op in ops).encode()).hexdigest()
    return replace(
        last,
        fields=_copy(merged),
        key=_copy(last.key),
        idempotency_key=f"merged:{digest[:24]}",
    )


def operations_to_json(ops: Iterable[Operation]) -> list[dict[str, Any]]:
    return [op.to_json() for op in ops]


__all__ = [
    "OPERATION_KINDS",
    "PERSON_UPSERT_KINDS",
    "Operation",
    "OperationKind",
    "is_ref",
    "merge_person_operations",
    "operations_to_json",
    "ref",
]
