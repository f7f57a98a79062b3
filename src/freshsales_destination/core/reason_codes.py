"""Reason codes: a bounded vocabulary for why a message was filtered, discarded, retried or
dead, fit for metric labels and alert rules.

Stored reasons are sentences that may quote what a client sent (an event name, a trait);
a metric label must never hold such text (unbounded, and possibly personal data). Every
function here maps to a fixed set of codes, ``other`` when nothing more precise fits.
"""

from __future__ import annotations

import re

from freshsales_destination.core.segment import MESSAGE_TYPES

OTHER = "other"

# Why ingest (core/segment.py, ingest/sorting.py) keeps a message as discarded or filtered,
# by the start of the stored reason.
_INGEST_PREFIXES: tuple[tuple[str, str], ...] = (
    ("message is not a JSON object", "not_an_object"),
    ("message has no type", "missing_type"),
    ("unknown message type", "unknown_type"),
    ("message type ", "type_not_accepted"),
    ("message has neither userId nor anonymousId", "missing_ids"),
    ("userId is not", "bad_id"),
    ("anonymousId is not", "bad_id"),
    ("groupId is not", "bad_id"),
    ("previousId is not", "bad_id"),
    ("messageId is not", "bad_id"),
    ("track message has no event name", "missing_event_name"),
    ("group message has no groupId", "missing_group_id"),
    ("alias message has no previousId", "missing_previous_id"),
    ("traits is not an object", "not_an_object"),
    ("properties is not an object", "not_an_object"),
    ("context is not an object", "not_an_object"),
    ("message is larger than", "too_large"),
    ("message with the batch context is larger than", "too_large"),
    ("the request could not be sorted", "unsortable"),
    ("the store refused", "refused_by_store"),
)

_PLANNER_CODE = re.compile(r"[a-z][a-z0-9_]{0,47}")

# Answers common enough to name on their own; any other status is counted by its class.
_NAMED_STATUSES = frozenset({200, 201, 204, 400, 401, 402, 403, 404, 405, 409, 410, 413, 415, 422, 429,
                             500, 502, 503, 504})


def ingest_reason_code(status: str, reason: str | None) -> str:
    """The code of an ingest verdict (``discarded`` or ``filtered``) from its stored reason."""
    if status == "filtered":
        return "integrations_disabled"
    text = reason or ""
    for prefix, code in _INGEST_PREFIXES:
        if text.startswith(prefix):
            return code
    return OTHER


def planner_reason_code(code: str | None) -> str:
    """The planner's own code (``Plan.reason_code``; written in the code, never from input),
    checked to be a short identifier."""
    if code and _PLANNER_CODE.fullmatch(code):
        return code
    return OTHER


def status_code_label(status: int | None) -> str:
    """An HTTP status as a bounded label: named ones as ``http_404``, others by class."""
    if status is None:
        return "no_answer"
    if status in _NAMED_STATUSES:
        return f"http_{status}"
    if 100 <= status <= 599:
        return f"http_{status // 100}xx"
    return OTHER


def failure_reason_code(status: int | None, error_type: str) -> str:
    """Why a delivery attempt failed: the answer's status, or, without an answer, the kind of
    failure (the error's class name, mapped to a fixed set)."""
    if status is not None:
        return status_code_label(status)
    return _NO_ANSWER.get(error_type, OTHER)


_NO_ANSWER = {
    "RequestTimeout": "timeout",
    "ConnectionFailed": "connection_failed",
    "TransportFailure": "transport_failure",
    "DestinationURLRefused": "url_refused",
    "UnexpectedResponse": "unexpected_response",
    "UnresolvedReference": "unresolved_reference",
    "InvalidArgument": "invalid_argument",
}

MESSAGE_TYPE_LABELS = MESSAGE_TYPES


def type_label(kind: str) -> str:
    """A message type as a bounded label (what a client typed as ``type`` may be anything)."""
    return kind if kind in MESSAGE_TYPE_LABELS else OTHER


__all__ = [
    "MESSAGE_TYPE_LABELS",
    "OTHER",
    "failure_reason_code",
    "ingest_reason_code",
    "planner_reason_code",
    "status_code_label",
    "type_label",
]
