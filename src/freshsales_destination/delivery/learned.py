"""What delivery has learned about one destination's Freshsales account, from its own answers.

Public sources leave several Freshsales behaviours open (reference §13). Delivery starts from
the reading under which a wrong guess loses nothing and replaces it with what the account's
answers show. Each learned behaviour is a `Fact` kept in the store (namespace ``learned``, one
JSON object per destination, changed atomically with ``kv_update``), so every worker and every
process shares it, and ``status`` and ``check`` can show it.

Fact names in use (their meaning is documented in ``docs/freshsales-behaviours.md``):

* ``custom_fields``: ``"merge"`` (a partial ``custom_field`` write keeps the others) or
  ``"replace"`` (it wipes them); absent means not yet learned, handled as ``"replace"``;
* ``tracking_api``: ``"present"`` or ``"absent"``; absent means not yet learned;
* ``bulk_api``: ``"present"`` (a bulk upsert was accepted), ``"absent"`` (404: single calls,
  re-checked after a day) or ``"refused"`` (405 every time: single calls for an hour); absent
  means not yet tried (``delivery/bulk.py``);
* ``bulk_links``: ``"kept"`` or ``"dropped"``: whether account links inside bulk contact items
  stick (one record read back after the first job that linked); absent means not yet learned.

The rate limits learned from answer headers live with the budget (``delivery/budget.py``),
since destinations on one account share it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from freshsales_destination.store.base import Store

NAMESPACE = "learned"

CUSTOM_FIELDS = "custom_fields"
TRACKING_API = "tracking_api"
BULK_API = "bulk_api"
BULK_LINKS = "bulk_links"


@dataclass(frozen=True)
class Fact:
    """One learned behaviour: its value, the answer that showed it, and when."""

    value: str
    evidence: str
    learned_at: float
    recheck_at: float | None = None
    """When the fact should be tested again (``None``: it holds until an answer contradicts it)."""

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "value": self.value, "evidence": self.evidence, "learned_at": self.learned_at
        }
        if self.recheck_at is not None:
            data["recheck_at"] = self.recheck_at
        return data

    @classmethod
    def from_dict(cls, data: Any) -> Fact | None:
        if not isinstance(data, dict):
            return None
        value, evidence, learned_at = data.get("value"), data.get("evidence"), data.get("learned_at")
        recheck = data.get("recheck_at")
        if not isinstance(value, str) or not isinstance(evidence, str):
            return None
        if not isinstance(learned_at, int | float) or isinstance(learned_at, bool):
            return None
        if recheck is not None and (not isinstance(recheck, int | float) or isinstance(recheck, bool)):
            recheck = None
        return cls(value, evidence, float(learned_at), None if recheck is None else float(recheck))


def _decode(raw: bytes | None) -> dict[str, Any]:
    if raw is None:
        return {}
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


class LearnedFacts:
    """The facts learned about one destination, read and written through the store."""

    def __init__(self, store: Store, destination: str) -> None:
        self.store = store
        self.destination = destination

    def all(self) -> dict[str, Fact]:
        facts: dict[str, Fact] = {}
        for name, data in _decode(self.store.kv_get(NAMESPACE, self.destination)).items():
            fact = Fact.from_dict(data)
            if fact is not None:
                facts[name] = fact
        return facts

    def get(self, name: str) -> Fact | None:
        return self.all().get(name)

    def learn(self, name: str, fact: Fact) -> None:
        """Record `fact` under `name` (replacing what was known), atomically."""

        def update(raw: bytes | None) -> tuple[None, bytes]:
            data = _decode(raw)
            data[name] = fact.to_dict()
            return None, orjson.dumps(data)

        self.store.kv_update(NAMESPACE, self.destination, update, now=fact.learned_at)

    def forget(self, name: str, *, now: float) -> None:
        def update(raw: bytes | None) -> tuple[None, bytes]:
            data = _decode(raw)
            data.pop(name, None)
            return None, orjson.dumps(data)

        self.store.kv_update(NAMESPACE, self.destination, update, now=now)
