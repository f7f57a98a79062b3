"""The plan being built: the message's envelope, the operations so far and the explanation.

Every message type (``identify.py``, ``events.py``, ``group.py``, ...) and every shared piece
(``people.py``, ``company_deal.py``, ``rules.py``, ...) writes into one :class:`PlanBuilder`.
It holds state and the small helpers all of them use: explanation notes, operations with
their idempotency keys, and reading objects out of the event.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from freshsales_destination.core.explanation import ExplanationEntry, Outcome
from freshsales_destination.core.identity import IdentityState
from freshsales_destination.core.mapping_settings import DestinationSettings
from freshsales_destination.core.operations import Operation, OperationKind
from freshsales_destination.core.schema import FieldSchema


def text(value: Any) -> str | None:
    """A non-empty, stripped string (an integer as its digits), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def is_true(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.strip().casefold() == "true")


def sorted_entries(entries: list[ExplanationEntry]) -> tuple[ExplanationEntry, ...]:
    """The explanation in its published order: by source."""
    # Stable: entries about one source keep the order in which the planner made them.
    return tuple(sorted(entries, key=lambda e: e.source))


@dataclass
class PlanBuilder:
    event: Mapping[str, Any]
    settings: DestinationSettings
    schema: FieldSchema
    identity: IdentityState | None
    message_id: str = ""
    timestamp: str | None = None
    user_id: str | None = None
    traits_prefix: str = "traits"  # where an identify's traits came from (identify_traits)
    ops: list[Operation] = field(default_factory=list)
    entries: list[ExplanationEntry] = field(default_factory=list)

    @property
    def classic(self) -> bool:
        return self.settings.product == "classic"

    @property
    def known(self) -> bool:
        return self.identity is not None and self.identity.record_id is not None

    def note(self, source: str, outcome: Outcome, reason: str, target: str | None = None) -> None:
        self.entries.append(ExplanationEntry(source, outcome, reason, target))

    def add(
        self,
        kind: OperationKind,
        entity: str,
        *,
        key: dict[str, Any] | None = None,
        fields: dict[str, Any] | None = None,
        provides: str | None = None,
        api_call: bool = True,
    ) -> Operation:
        op = Operation(
            kind=kind,
            entity=entity,
            key=key or {},
            fields=fields or {},
            provides=provides,
            idempotency_key=f"{self.message_id}:{len(self.ops)}",
            api_call=api_call,
            user_id=self.user_id,
            timestamp=self.timestamp,
        )
        self.ops.append(op)
        return op

    def provided(self, name: str) -> bool:
        return any(op.provides == name for op in self.ops)

    def obj(self, key: str, container: Mapping[str, Any] | None = None) -> dict[str, Any]:
        source = self.event if container is None else container
        value = source.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.note(key, "dropped", f"{key} is not an object")
            return {}
        return value

    def drop_all(self, values: Mapping[str, Any], prefix: str, reason: str) -> None:
        for k in sorted(values):
            self.note(f"{prefix}.{k}", "dropped", reason)


__all__ = ["PlanBuilder", "is_true", "sorted_entries", "text"]
