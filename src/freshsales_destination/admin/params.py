"""Reading the admin API's parameters: query strings and JSON bodies into views' filters.

Every refusal is a `BadParameter` naming the parameter and what is accepted (never echoing a
long value back); the API answers it as 400 ``{code, message}``. The operator CLI
(admin/cli.py) checks its filters with the same functions, so both accept the same values.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, cast, get_args

from freshsales_destination.admin.views import RETRYING, MessageFilter, Window
from freshsales_destination.core.statuses import MessageStatus

MESSAGE_TYPES = ("identify", "track", "page", "screen", "group", "alias", "delete")
# The stored statuses, and "retrying": pending with a last error (views.RETRYING).
STATUSES = (*(str(status) for status in MessageStatus), RETRYING)
WINDOWS: tuple[str, ...] = get_args(Window)
DEFAULT_LIMIT = 50
MAX_LIMIT = 500
SEARCH_PARAMS = (
    "destination", "user_id", "anonymous_id", "email", "message_id", "status", "type", "reason",
    "since", "until", "limit", "cursor",
)
ACTION_FIELDS = ("ids", "destination", "reason", "since", "all")
MAX_IDS = 10_000
MAX_TEXT = 1000


class BadParameter(Exception):
    """A parameter the API refuses: 400 with `code` and `message`."""

    def __init__(self, message: str, code: str = "invalid_parameter") -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def only_known(names: Mapping[str, Any] | list[str], known: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise BadParameter(
            f"unknown {where} {', '.join(_shown(n) for n in unknown[:5])}; "
            f"known: {', '.join(known)}"
        )


def text(name: str, value: object) -> str | None:
    """A non-empty string of at most `MAX_TEXT` characters; None for absent or empty."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadParameter(f"{name} must be a string")
    if len(value) > MAX_TEXT:
        raise BadParameter(f"{name} is longer than {MAX_TEXT} characters")
    return value


def one_of(name: str, value: str | None, allowed: tuple[str, ...]) -> str | None:
    if value is None:
        return None
    if value not in allowed:
        raise BadParameter(f"{name} must be one of {', '.join(allowed)} (got {_shown(value)})")
    return value


_AGE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")
_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
TIME_ACCEPTED = (
    "epoch seconds, an ISO 8601 date-time such as 2026-12-06T08:00:00Z (UTC when it has no "
    "zone), or an age such as 30m, 2h, 7d (that long before now)"
)


def timestamp(name: str, value: object, *, now: float) -> float | None:
    """Epoch seconds (a number, or a string of one), an ISO 8601 date-time (a date-time
    without a zone is UTC) or an age (``30s``, ``30m``, ``2h``, ``7d``: that long before
    `now`); None for absent or empty."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise BadParameter(f"{name} must be {TIME_ACCEPTED}")
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        age = _AGE.fullmatch(value.strip())
        if age is not None:
            number = now - float(age.group(1)) * _AGE_UNITS[age.group(2)]
        else:
            try:
                number = float(value)
            except ValueError:
                try:
                    parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
                except ValueError:
                    raise BadParameter(
                        f"{name} must be {TIME_ACCEPTED} (got {_shown(value)})"
                    ) from None
                if parsed.tzinfo is None:
                    parsed = parsed.replace(tzinfo=UTC)
                number = parsed.timestamp()
    else:
        raise BadParameter(f"{name} must be {TIME_ACCEPTED}")
    if not math.isfinite(number) or number < 0:
        raise BadParameter(f"{name} must be a time at or after 1970 (got {_shown(value)})")
    return number


def limit(value: str | int | None) -> int:
    """A page size: 1 to `MAX_LIMIT`, `DEFAULT_LIMIT` when absent."""
    if value is None or value == "":
        return DEFAULT_LIMIT
    try:
        number = int(value)
    except ValueError:
        raise BadParameter(f"limit must be a whole number from 1 to {MAX_LIMIT}") from None
    if not 1 <= number <= MAX_LIMIT:
        raise BadParameter(f"limit must be from 1 to {MAX_LIMIT} (got {number})")
    return number


def message_seq(value: object, name: str = "id") -> int:
    """A message's id (the store's seq): a positive whole number."""
    if isinstance(value, bool):
        raise BadParameter(f"{name} must be a message id (a positive whole number)", "invalid_id")
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or value < 1 or value >= 2**63:
        raise BadParameter(
            f"{name} must be a message id (a positive whole number, as /admin/v1/messages "
            f"lists them), got {_shown(value)}", "invalid_id",
        )
    return value


def window(value: str | None) -> Window:
    if value is None or value == "":
        return "24h"
    return cast(Window, one_of("window", value, WINDOWS))


def search(query: Mapping[str, str], *, now: float) -> tuple[MessageFilter, int, str | None]:
    """``GET /admin/v1/messages``' query (and `messages list`' options): the filter, the page
    size and the cursor."""
    only_known(list(query), SEARCH_PARAMS, "parameter")
    since = timestamp("since", query.get("since"), now=now)
    until = timestamp("until", query.get("until"), now=now)
    if since is not None and until is not None and until <= since:
        raise BadParameter("until must be after since")
    flt = MessageFilter(
        destination=text("destination", query.get("destination")),
        user_id=text("user_id", query.get("user_id")),
        anonymous_id=text("anonymous_id", query.get("anonymous_id")),
        email=text("email", query.get("email")),
        message_id=text("message_id", query.get("message_id")),
        status=one_of("status", text("status", query.get("status")), STATUSES),
        type=one_of("type", text("type", query.get("type")), MESSAGE_TYPES),
        reason=text("reason", query.get("reason")),
        since=since,
        until=until,
    )
    return flt, limit(query.get("limit")), text("cursor", query.get("cursor"))


def dead_letter_filter(body: object, *, now: float) -> MessageFilter:
    """The body of ``POST /admin/v1/dead-letters/retry|drop``: ``ids``, ``destination``,
    ``reason``, ``since``, or ``{"all": true}`` for every dead letter. An empty filter is
    refused: acting on all of them is said explicitly."""
    if not isinstance(body, dict):
        raise BadParameter("the body must be a JSON object", "invalid_body")
    only_known(body, ACTION_FIELDS, "field")
    everything = body.get("all", False)
    if not isinstance(everything, bool):
        raise BadParameter("all must be true or false")
    raw_ids = body.get("ids", [])
    if not isinstance(raw_ids, list):
        raise BadParameter("ids must be an array of message ids")
    if len(raw_ids) > MAX_IDS:
        raise BadParameter(f"ids holds at most {MAX_IDS} message ids")
    ids = tuple(message_seq(item, "ids[]") for item in raw_ids)
    flt = MessageFilter(
        destination=text("destination", body.get("destination")),
        reason=text("reason", body.get("reason")),
        since=timestamp("since", body.get("since"), now=now),
        seqs=ids,
    )
    narrowed = bool(ids) or any(v is not None for v in (flt.destination, flt.reason, flt.since))
    if "ids" in body and not ids:
        raise BadParameter("ids is empty: name at least one message id, or leave ids out")
    if not narrowed and not everything:
        raise BadParameter(
            "name the dead letters: ids, destination, reason or since; or {\"all\": true} "
            "for every dead letter", "empty_filter",
        )
    if narrowed and everything:
        raise BadParameter("all: true cannot be combined with a filter", "ambiguous_filter")
    return flt
