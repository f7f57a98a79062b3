"""alias: ``previousId`` becomes the same person as ``userId``, in the identity map only."""

from __future__ import annotations

from freshsales_destination.core.operations import OperationKind
from freshsales_destination.core.planning.builder import PlanBuilder, text
from freshsales_destination.core.planning.result import Stop
from freshsales_destination.core.statuses import PlanStatus


def alias(b: PlanBuilder) -> None:
    previous = text(b.event.get("previousId"))
    if previous is None or b.user_id is None:
        raise Stop(PlanStatus.DISCARDED, "missing_previous_id", "alias needs both previousId and userId")
    b.add(
        OperationKind.ALIAS,
        "identity",
        key={"previous_id": previous},
        fields={"previous_id": previous, "user_id": b.user_id},
        api_call=False,
    )
    b.note("previousId", "used", "now refers to the same person as userId (identity map only)")


__all__ = ["alias"]
