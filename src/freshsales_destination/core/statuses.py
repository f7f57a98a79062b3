"""The service's status vocabularies, as StrEnums whose values are the stored strings.

A member *is* its string (``MessageStatus.DEAD == "dead"``, ``json.dumps`` and both store
backends write ``"dead"``), so stored rows, JSON and logs are the same as with bare strings.

- :class:`MessageStatus`: a stored message's status. Ingest stores ``pending``,
  ``discarded`` or ``filtered`` (``core/segment.py``); delivery finishes a message as
  ``delivered``, ``skipped``, ``discarded``, ``filtered`` or ``dead``; an operator drops a
  dead letter (``dropped``).
- :class:`PlanStatus`: the planner's verdict on one message (``core/planning``).
- :class:`UnitOutcome`: how running one delivery unit ended (``delivery/worker.py``).
- :class:`BulkJobStage`: where a kept bulk job stands (``delivery/bulk.py``).
"""

from __future__ import annotations

from enum import StrEnum


class MessageStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    SKIPPED = "skipped"  # nothing to send, or nothing reached Freshsales (no such person)
    DISCARDED = "discarded"  # a per-message problem (no id, track without event, ...)
    FILTERED = "filtered"  # switched off (integrations, a drop rule)
    DEAD = "dead"  # failed for good, or its retry window ran out
    DROPPED = "dropped"  # a dead letter an operator dropped: kept, never delivered


class PlanStatus(StrEnum):
    PLANNED = "planned"
    DISCARDED = "discarded"
    FILTERED = "filtered"


class UnitOutcome(StrEnum):
    DONE = "done"  # delivered or skipped; the lane goes on
    FAILED = "failed"  # dead; the lane goes on
    FELL_BACK = "fell back"  # a merged unit failed for good: run its parts one by one
    STOP = "stop"  # retry later; the lane is held
    BUDGET = "budget"  # no budget (or the destination is down): release the lane, nothing failed
    REPLAN = "replan"  # the tracking API turned out absent: plan the message again


class BulkJobStage(StrEnum):
    JOB = "job"  # sent: polled until Freshsales says it finished
    IDS = "ids"  # finished: the ids of its records are searched for (after lookups can show them)


__all__ = ["BulkJobStage", "MessageStatus", "PlanStatus", "UnitOutcome"]
