"""The planner's account of what happened to every part of an event."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from freshsales_destination.core.statuses import PlanStatus

Outcome = Literal["mapped", "used", "dropped", "info"]
Status = PlanStatus  # the planner's verdict (core/statuses.py)


@dataclass(frozen=True)
class ExplanationEntry:
    """One line of the explanation.

    ``source`` is the path in the event (``traits.cfAlternateNumber``,
    ``traits.company.industry``, ``properties.revenue``, ``event``...). ``outcome`` is
    ``mapped`` (written to ``target``), ``used`` (steered the plan: identity, record type,
    rule choice), ``dropped`` (not sent, ``reason`` says why) or ``info`` (a decision of the
    planner, such as a default applied).
    """

    source: str
    outcome: Outcome
    reason: str
    target: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "outcome": self.outcome,
            "target": self.target,
            "reason": self.reason,
        }


__all__ = ["ExplanationEntry", "Outcome", "Status"]
