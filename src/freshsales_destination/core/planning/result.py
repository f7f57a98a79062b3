"""What planning answers: a :class:`Plan`, and :class:`Stop`, which ends planning early."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from freshsales_destination.core.explanation import ExplanationEntry
from freshsales_destination.core.operations import Operation
from freshsales_destination.core.statuses import PlanStatus


@dataclass(frozen=True)
class Plan:
    """The planner's answer: what to do (``operations``, in order) and why (``explanation``)."""

    status: PlanStatus
    operations: tuple[Operation, ...] = ()
    explanation: tuple[ExplanationEntry, ...] = ()
    reason: str | None = None
    reason_code: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "operations": [op.to_json() for op in self.operations],
            "explanation": {
                "status": str(self.status),
                "reason_code": self.reason_code,
                "reason": self.reason,
                "entries": [e.to_json() for e in self.explanation],
            },
        }


class Stop(Exception):
    """Ends planning early with a discarded or filtered plan."""

    def __init__(self, status: PlanStatus, code: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.code = code
        self.reason = reason


__all__ = ["Plan", "Stop"]
