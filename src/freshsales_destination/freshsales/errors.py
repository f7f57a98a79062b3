"""Errors raised by the Freshsales client, and the pure classification of error responses.

Hierarchy (``kind`` is the retry hint the delivery engine feeds to ``core.retry.decide``)::

    FreshsalesDestinationError                  (project root)
    └── FreshsalesError                         status, messages, error_code, retry_after, rate, ...
        ├── RetryableError                      kind = "retryable"
        │   ├── TransportFailure                no response at all (status is None)
        │   │   ├── RequestTimeout
        │   │   └── ConnectionFailed
        │   └── ServerError                     408 or any 5xx        (also a FreshsalesStatusError)
        ├── Throttled                           429, kind = "throttled" (a FreshsalesStatusError)
        └── PermanentError                      kind = "permanent"
            ├── InvalidArgument                 refused by the client before sending (status None)
            └── RequestRejected                 server said no        (also a FreshsalesStatusError)
                ├── InvalidRequest              400, 422
                ├── AuthenticationFailed        401
                ├── PermissionDenied            403
                ├── NotFound                    404
                ├── MethodNotAllowed            405
                └── UnexpectedResponse          2xx whose body is not JSON

``FreshsalesStatusError`` marks "the server answered with an error status", as opposed to
``TransportFailure`` ("the request never got an answer").

The status decides the class, never the body: 408, 429 and every 5xx are temporary whatever
the body says. Freshsales sends its transient "Something went wrong. Please try again later."
in the ``{"errors": {"message": [...]}}`` shape it also uses for validation failures, and one
Classic source shows validation failures with status 500 (reference §13.2), so a 5xx is never
proof that retrying cannot help. A 5xx that really is a validation failure is retried until
the retry window ends and then goes dead with Freshsales' message: a validation failure
mistaken for a temporary one costs retries; the other mistake loses the event for good.
Other error statuses (4xx validation answers above all) are permanent.

No text in these errors may contain the API key or the app token: the client redacts every
string it passes in (see ``redact``), and no error keeps the request or its headers.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from freshsales_destination.core.retry import ErrorKind
from freshsales_destination.errors import FreshsalesDestinationError
from freshsales_destination.freshsales.ratelimit_headers import RateLimitInfo

__all__ = [
    "AuthenticationFailed",
    "ConnectionFailed",
    "ErrorKind",
    "FreshsalesError",
    "FreshsalesStatusError",
    "InvalidArgument",
    "InvalidRequest",
    "MethodNotAllowed",
    "NotFound",
    "ParsedErrorBody",
    "PermanentError",
    "PermissionDenied",
    "RequestRejected",
    "RequestTimeout",
    "RetryableError",
    "ServerError",
    "Throttled",
    "TransportFailure",
    "UnexpectedResponse",
    "error_from_response",
    "parse_error_body",
    "redact",
]

_MAX_TEXT = 500
_REDACTED = "[redacted]"


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every occurrence of each (non-trivial) secret in ``text``."""
    for secret in secrets:
        if secret and len(secret) >= 4 and secret in text:
            text = text.replace(secret, _REDACTED)
    return text


class FreshsalesError(FreshsalesDestinationError):
    """Freshsales could not complete the request."""

    kind: ClassVar[ErrorKind] = "permanent"

    def __init__(
        self,
        message: str | None = None,
        *,
        status: int | None = None,
        messages: tuple[str, ...] = (),
        error_code: int | None = None,
        retry_after: float | None = None,
        rate: RateLimitInfo | None = None,
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        # The human-readable messages Freshsales sent (for the user; already redacted).
        self.messages = messages
        # The code inside the body (``errors.code`` or ``error_code``), when there was one.
        self.error_code = error_code
        # Seconds to wait before trying again, when the server said so.
        self.retry_after = retry_after
        self.rate = rate
        self.method = method
        # The URL path (no host, no query string) of the failed request.
        self.path = path

    @property
    def freshsales_message(self) -> str:
        """Freshsales' own words, joined; empty when it gave none."""
        return "; ".join(self.messages)

    @property
    def retryable(self) -> bool:
        return self.kind != "permanent"

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-ready data about the error (for a job's ``last_error``)."""
        return {
            "type": type(self).__name__,
            "kind": self.kind,
            "message": self.message,
            "status": self.status,
            "messages": list(self.messages),
            "error_code": self.error_code,
            "retry_after": self.retry_after,
            "method": self.method,
            "path": self.path,
        }

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status={self.status!r}, messages={self.messages!r}, "
            f"error_code={self.error_code!r}, retry_after={self.retry_after!r}, "
            f"method={self.method!r}, path={self.path!r})"
        )

    def __reduce__(self) -> Any:
        # Keep the keyword fields through pickling (multiprocessing, logging handlers).
        return (_rebuild, (type(self), self.message, self.__dict__.copy()))


def _rebuild(cls: type[FreshsalesError], message: str, state: dict[str, Any]) -> FreshsalesError:
    err = cls(message)
    err.__dict__.update(state)
    return err


class FreshsalesStatusError(FreshsalesError):
    """Freshsales answered with an error status."""


class RetryableError(FreshsalesError):
    """A temporary failure: the same request may succeed later."""

    kind: ClassVar[ErrorKind] = "retryable"


class TransportFailure(RetryableError):
    """The request got no answer from Freshsales."""


class RequestTimeout(TransportFailure):
    """Freshsales did not answer in time."""


class ConnectionFailed(TransportFailure):
    """Could not connect to Freshsales."""


class ServerError(RetryableError, FreshsalesStatusError):
    """Freshsales answered with a temporary error status (408 or any 5xx, whatever the body)."""


class Throttled(FreshsalesStatusError):
    """Freshsales refused the request because the account's rate limit is used up (429)."""

    kind: ClassVar[ErrorKind] = "throttled"


class PermanentError(FreshsalesError):
    """The request cannot succeed as it is; retrying will not help."""

    kind: ClassVar[ErrorKind] = "permanent"


class InvalidArgument(PermanentError, ValueError):
    """The client refused to send the request because an argument is invalid."""


class DestinationURLRefused(InvalidArgument):
    """The HTTP library refused to send to the destination's URL (a bad host or port): the
    destination is misconfigured, whatever the message."""


class RequestRejected(PermanentError, FreshsalesStatusError):
    """Freshsales rejected the request."""


class InvalidRequest(RequestRejected):
    """Freshsales rejected the data in the request."""


class AuthenticationFailed(RequestRejected):
    """Freshsales rejected the API key."""


class PermissionDenied(RequestRejected):
    """The API key's user may not do this."""


class NotFound(RequestRejected):
    """The Freshsales record or endpoint does not exist."""


class MethodNotAllowed(RequestRejected):
    """405. On a bulk upsert path production clients report it as transient (reference §13.1):
    permanent by status like every 4xx, and the bulk sender decides to retry it a few times."""


class UnexpectedResponse(RequestRejected):
    """Freshsales answered with a body the client cannot read."""


# --------------------------------------------------------------------------------------------
# Pure classification of error responses


class ParsedErrorBody:
    """The readable parts of an error body, whatever its shape (reference §8)."""

    __slots__ = ("error_code", "has_validation_shape", "messages")

    def __init__(
        self,
        messages: tuple[str, ...] = (),
        error_code: int | None = None,
        has_validation_shape: bool = False,
    ) -> None:
        self.messages = messages
        self.error_code = error_code
        # True for ``{"errors": {"message": [...]}}`` with at least one message: the shape
        # Freshsales uses for validation failures, and for its transient 500s too. It says
        # how the body reads, never whether a retry can help (the status decides that).
        self.has_validation_shape = has_validation_shape

    def __repr__(self) -> str:
        return (
            f"ParsedErrorBody(messages={self.messages!r}, error_code={self.error_code!r}, "
            f"has_validation_shape={self.has_validation_shape!r})"
        )


def as_int(value: Any) -> int | None:
    """An integer from an int or a digit string (as Freshsales sends counts and codes); else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _texts(value: Any) -> list[str]:
    """Human text out of a message value: a string, a list of strings, or nested objects."""
    if value is None or isinstance(value, bool):
        return []
    if isinstance(value, str):
        return [value.strip()] if value.strip() else []
    if isinstance(value, int | float):
        return [str(value)]
    if isinstance(value, list):
        out: list[str] = []
        for item in value:
            out.extend(_texts(item))
        return out
    if isinstance(value, dict):
        for key in ("message", "messages", "description", "error"):
            if key in value:
                return _texts(value[key])
        out = []
        for key, item in value.items():
            # Rails-style {"field": ["is invalid"]}
            out.extend(f"{key} {text}" for text in _texts(item))
        return out
    return [str(value)]


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    if len(text) > _MAX_TEXT:
        return text[: _MAX_TEXT - 1] + "…"
    return text


def parse_error_body(content: bytes | str) -> ParsedErrorBody:
    """Extract the messages and code from any of the error shapes Freshsales is known to use.

    - ``{"errors": {"code": 400, "message": ["Name has already been taken"]}}``
    - ``{"errors": {"message": "Access Denied"}}``
    - ``{"login": "failed", "message": "Incorrect or expired API key"}``
    - ``{"error_code": 429}``
    - ``{"message": "..."}`` or ``{"error": "..."}``
    - plain text or HTML (shortened)
    """
    if isinstance(content, bytes):
        text = content.decode("utf-8", errors="replace")
    else:
        text = content
    if not text.strip():
        return ParsedErrorBody()
    try:
        body: Any = json.loads(text)
    except ValueError:
        return ParsedErrorBody(messages=(_shorten(text),))

    messages: list[str] = []
    code: int | None = None
    validation = False
    if isinstance(body, dict):
        errors = body.get("errors")
        if isinstance(errors, dict):
            code = as_int(errors.get("code"))
            found = _texts(errors.get("message", errors.get("messages")))
            if not found and "message" not in errors and "code" not in errors:
                found = _texts(errors)
            messages.extend(found)
            validation = bool(found) and ("message" in errors or "messages" in errors)
        elif errors is not None:
            messages.extend(_texts(errors))
        if code is None:
            code = as_int(body.get("error_code"))
        if not messages:
            messages.extend(_texts(body.get("message")))
        if not messages:
            messages.extend(_texts(body.get("error")))
        if not messages and body.get("login") == "failed":
            messages.append("login failed")
    elif isinstance(body, list | str):
        messages.extend(_texts(body))
    return ParsedErrorBody(
        messages=tuple(_shorten(m) for m in messages if m),
        error_code=code,
        has_validation_shape=validation,
    )


_STATUS_CLASSES: Mapping[int, type[RequestRejected]] = {
    400: InvalidRequest,
    401: AuthenticationFailed,
    403: PermissionDenied,
    404: NotFound,
    405: MethodNotAllowed,
    422: InvalidRequest,
}


def error_from_response(
    status: int,
    content: bytes | str,
    rate: RateLimitInfo,
    *,
    method: str | None = None,
    path: str | None = None,
    secrets: Iterable[str] = (),
) -> FreshsalesError | None:
    """Classify one response; ``None`` for a success (any 2xx).

    ``rate`` carries the parsed rate-limit headers (including ``Retry-After``). ``secrets`` are
    removed from every text that ends up in the error.
    """
    if 200 <= status <= 299:
        return None
    secrets = tuple(secrets)
    parsed = parse_error_body(content)
    messages = tuple(redact(m, secrets) for m in parsed.messages)
    safe_path = redact(path, secrets) if path is not None else None
    where = f" to {method} {safe_path}" if method and safe_path else ""
    said = f": {'; '.join(messages)}" if messages else ""

    cls: type[FreshsalesError]
    retry_after: float | None = rate.retry_after
    if status == 429:
        cls = Throttled
        retry_after = rate.throttle_delay
        said = said or ": rate limit exceeded"
    elif status == 408 or 500 <= status <= 599:
        # By status only: a 5xx in the validation shape is still temporary (see the module).
        cls = ServerError
    else:
        cls = _STATUS_CLASSES.get(status, RequestRejected)
    text = f"Freshsales answered {status}{where}{said}"
    return cls(
        text,
        status=status,
        messages=messages,
        error_code=parsed.error_code,
        retry_after=retry_after,
        rate=rate,
        method=method,
        path=safe_path,
    )
