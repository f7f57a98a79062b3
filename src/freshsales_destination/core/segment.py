"""Segment messages: validation and normalisation, as Segment's tracking API does it.

Pure code: the receive time and the message-id factory are passed in. A message that cannot be
delivered is not an error here: it comes back with status ``discarded`` (or ``filtered``) and
the reason, so the caller can keep it and tell the user what happened.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

MessageStatus = Literal["pending", "discarded", "filtered"]

MESSAGE_TYPES: Final = frozenset(
    {"identify", "track", "page", "screen", "group", "alias", "delete"}
)
# The types a tracking-API endpoint accepts; `delete` only arrives through the webhook.
TRACKING_TYPES: Final = MESSAGE_TYPES - {"delete"}
ID_FIELDS: Final = ("userId", "anonymousId", "groupId", "previousId")
# The names under which a sender may switch this destination on or off in `integrations`.
INTEGRATION_NAMES: Final = ("Freshsales", "Freshsales Suite - CRM", "freshsales")
MAX_MESSAGE_ID_LENGTH: Final = 100


@dataclass(slots=True)  # not frozen: built once per message on the hot path
class Normalized:
    """One message after normalisation, with what should happen to it."""

    status: MessageStatus
    message: dict[str, Any]
    reason: str | None
    message_id: str
    type: str
    lane: str | None
    event_at: float

    @property
    def deliverable(self) -> bool:
        return self.status == "pending"


def format_time(value: datetime) -> str:
    """ISO-8601 in UTC with milliseconds, as Segment writes its timestamps."""
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ" % (  # noqa: UP031 - faster than isoformat
        value.year, value.month, value.day,
        value.hour, value.minute, value.second, value.microsecond // 1000,
    )


_LOOSE_DATE = re.compile(
    r"^(\d{4})-(\d{1,2})-(\d{1,2})(?:[T ](\d{1,2}):(\d{1,2})(?::(\d{1,2})(?:\.(\d+))?)?)?"
    r"\s*(Z|[+-]\d{2}:?\d{2})?$"
)


def parse_time(value: Any) -> datetime | None:
    """Parse the timestamp forms real clients send; None when it is not a timestamp.

    Naive times are taken as UTC. Numbers are not accepted: Segment's fields are strings.
    """
    if not isinstance(value, str) or not value or len(value) > 64:
        return None
    try:
        return _parse_time(value.strip())
    except (OverflowError, ValueError):  # out of datetime's range once moved to UTC
        return None


def _parse_time(text: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        match = _LOOSE_DATE.match(text)
        if match is None:
            return None
        year, month, day, hour, minute, second, fraction, zone = match.groups()
        try:
            micro = int((fraction or "0")[:6].ljust(6, "0"))
            parsed = datetime(
                int(year),
                int(month),
                int(day),
                int(hour or 0),
                int(minute or 0),
                int(second or 0),
                micro,
            )
        except ValueError:
            return None
        if zone and zone != "Z":
            sign = 1 if zone[0] == "+" else -1
            digits = zone[1:].replace(":", "")
            offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
            parsed = parsed.replace(tzinfo=UTC) - sign * offset
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _canonical(text: str) -> str | None:
    """`text` (which parse_time accepted) in format_time's form, when a slice gives it.

    The common client forms ``…T12:00:00.000Z`` and ``…T12:00:00.000+00:00`` need no
    formatting; anything else returns None.
    """
    size = len(text)
    if size != 24 and size != 29:
        return None
    if not (
        text[4] == "-" and text[7] == "-" and text[10] == "T" and text[13] == ":"
        and text[16] == ":" and text[19] == "."
    ):
        return None
    if size == 24 and text[23] == "Z":
        return text
    if size == 29 and text.endswith("+00:00"):
        return text[:23] + "Z"
    return None


def _stringify_id(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return str(value)
    return value


def _merge_defaults(own: Any, defaults: Mapping[str, Any] | None) -> Any:
    """Fill keys missing from the message's object with the batch-level object's keys."""
    if not defaults:
        return own
    if not isinstance(own, dict):
        return dict(defaults)
    merged = dict(defaults)
    merged.update(own)
    return merged


def integration_enabled(integrations: Any) -> bool:
    """Apply Segment's `integrations` switches to this destination.

    A missing key means enabled; ``All: false`` turns everything off unless our own key is
    truthy; our own key set to false turns us off. An object value counts as on.
    """
    if not isinstance(integrations, dict):
        return True
    for name in INTEGRATION_NAMES:
        if name in integrations:
            return bool(integrations[name]) or isinstance(integrations[name], dict)
    everything = integrations.get("All", True)
    return bool(everything) or isinstance(everything, dict)


MAX_LANE_LENGTH: Final = 200


def bounded_key(value: str, limit: int) -> str:
    """`value` if it is at most `limit` characters with no NUL; else a readable prefix and a
    digest of the whole, so two long keys sharing a prefix never collide. Keys are indexed
    by the store (PostgreSQL refuses NUL in text and caps the size of an index entry)."""
    if len(value) <= limit and "\x00" not in value:
        return value
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"{value[: limit - 33].replace(chr(0), '')}~{digest}"


def _lane(message: Mapping[str, Any]) -> str | None:
    user = message.get("userId")
    if isinstance(user, str) and user:
        return bounded_key(f"u:{user}", MAX_LANE_LENGTH)
    anonymous = message.get("anonymousId")
    if isinstance(anonymous, str) and anonymous:
        return bounded_key(f"a:{anonymous}", MAX_LANE_LENGTH)
    return None


def _problem(message: Mapping[str, Any]) -> str | None:
    kind = message.get("type")
    if not isinstance(kind, str) or not kind:
        return "message has no type"
    if kind not in MESSAGE_TYPES:
        return f"unknown message type {kind[:40]!r}"
    user, anonymous = message.get("userId"), message.get("anonymousId")
    if not (isinstance(user, str) and user) and not (isinstance(anonymous, str) and anonymous):
        return "message has neither userId nor anonymousId"
    for field in ID_FIELDS:
        if field in message and not isinstance(message[field], str):
            return f"{field} is not a string or a number"
    if kind == "track":
        event = message.get("event")
        if not isinstance(event, str) or not event.strip():
            return "track message has no event name"
    if kind == "group":
        group = message.get("groupId")
        if not isinstance(group, str) or not group:
            return "group message has no groupId"
    if kind == "alias":
        previous = message.get("previousId")
        if not isinstance(previous, str) or not previous:
            return "alias message has no previousId"
    for field in ("traits", "properties", "context"):
        if field in message and not isinstance(message[field], dict):
            return f"{field} is not an object"
    return None


@dataclass(frozen=True, slots=True)
class RequestTimes:
    """The per-request part of normalisation, computed once for every message of a request."""

    received_at: datetime
    received: str  # receivedAt, formatted
    received_epoch: float
    sent_at: datetime | None  # the batch-level sentAt, parsed
    sent: str | None  # and formatted

    @classmethod
    def of(cls, received_at: datetime, batch_sent_at: Any = None) -> RequestTimes:
        sent_at = parse_time(batch_sent_at)
        return cls(
            received_at=received_at,
            received=format_time(received_at),
            received_epoch=received_at.timestamp(),
            sent_at=sent_at,
            sent=None if sent_at is None else format_time(sent_at),
        )


_FILTERED_REASON: Final = "turned off for Freshsales by the integrations object"


def normalize(
    raw: Any,
    *,
    received_at: datetime,
    new_id: Callable[[], str],
    forced_type: str | None = None,
    batch_context: Mapping[str, Any] | None = None,
    batch_integrations: Mapping[str, Any] | None = None,
    batch_sent_at: Any = None,
    allowed_types: frozenset[str] = TRACKING_TYPES,
    times: RequestTimes | None = None,
) -> Normalized:
    """Normalise one message as Segment does and decide whether it can be delivered.

    * null means absent (top level), numeric ids become strings, ids are Unicode NFC (so the
      lane of one person is one lane however the id's accents were typed);
    * ``receivedAt``, a ``messageId`` when missing, ``originalTimestamp`` and the corrected
      ``timestamp = receivedAt - (sentAt - originalTimestamp)`` are added;
    * batch-level ``context`` and ``integrations`` fill in what the message lacks;
    * the ``integrations`` switches are honoured (status ``filtered``);
    * a message that can never be delivered keeps status ``discarded`` with its reason.

    `times` (from :meth:`RequestTimes.of`, with the same `received_at` and `batch_sent_at`)
    saves recomputing the request's times for each of its messages.
    """
    if times is None:
        times = RequestTimes.of(received_at, batch_sent_at)
    received = times.received
    if not isinstance(raw, dict):
        message_id = new_id()
        return Normalized(
            status="discarded",
            message={"messageId": message_id, "receivedAt": received, "value": raw},
            reason="message is not a JSON object",
            message_id=message_id,
            type="invalid",
            lane=None,
            event_at=times.received_epoch,
        )

    message: dict[str, Any] = {key: value for key, value in raw.items() if value is not None}
    message.pop("writeKey", None)
    if forced_type is not None:
        message["type"] = forced_type
    for field in ID_FIELDS:
        value = message.get(field)
        if value is not None and value.__class__ is not str:
            value = message[field] = _stringify_id(value)
        if value.__class__ is str and not value.isascii():
            # One person, one lane, one external_id: "café" typed precomposed or with a
            # combining accent is the same id (Unicode NFC, canonical equivalence).
            message[field] = unicodedata.normalize("NFC", value)

    given: Any = message.get("messageId")
    message_id = given
    if isinstance(given, int | float) and not isinstance(message_id, bool):
        message_id = _stringify_id(message_id)
    if not isinstance(message_id, str) or not message_id:
        message_id = new_id()
    else:
        # Segment's ids are at most 100 characters. A longer one keeps a readable prefix and a
        # digest of the whole, so two long ids sharing a prefix never pass for duplicates.
        message_id = bounded_key(message_id, MAX_MESSAGE_ID_LENGTH)
    message["messageId"] = message_id

    if batch_context:
        message["context"] = _merge_defaults(message.get("context"), batch_context)
    if batch_integrations:
        message["integrations"] = _merge_defaults(message.get("integrations"), batch_integrations)

    # Timestamps and Segment's clock-skew correction.
    original_value = message.get("originalTimestamp")
    original = parse_time(original_value)
    if original is None:
        original_value = message.get("timestamp")
        original = parse_time(original_value)
    sent_at, sent = times.sent_at, times.sent
    own_sent = message.get("sentAt")
    if own_sent is not None:
        parsed_sent = parse_time(own_sent)
        if parsed_sent is not None:
            sent_at, sent = parsed_sent, format_time(parsed_sent)
    if original is None:
        original_text = corrected_text = received
        event_at = times.received_epoch
    else:
        corrected = original
        if sent_at is not None:
            try:
                corrected = times.received_at - (sent_at - original)
            except OverflowError:  # absurd clocks: keep the client's own time
                pass
        original_text = _canonical(str(original_value)) or format_time(original)
        corrected_text = original_text if corrected == original else format_time(corrected)
        event_at = corrected.timestamp()
    message["receivedAt"] = received
    message["originalTimestamp"] = original_text
    message["timestamp"] = corrected_text
    if sent is not None:
        message["sentAt"] = sent

    kind = message.get("type")
    kind_text = kind if isinstance(kind, str) and kind else "invalid"
    problem = _problem(message)
    if problem is None and kind_text not in allowed_types:
        problem = f"message type {kind_text!r} is not accepted on this endpoint"
    status: MessageStatus = "pending"
    if problem is not None:
        status = "discarded"
    elif "integrations" in message and not integration_enabled(message["integrations"]):
        status, problem = "filtered", _FILTERED_REASON
    return Normalized(
        status=status,
        message=message,
        reason=problem,
        message_id=message_id,
        type=kind_text[:40] if "\x00" not in kind_text else "invalid",
        lane=_lane(message),
        event_at=event_at,
    )
