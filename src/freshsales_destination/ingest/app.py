"""The Segment-compatible tracking API (/v1/) and the Webhooks-destination endpoint (/webhook/).

Flow of one request: limits and encoding (body.py) -> JSON -> source (sources.py: the write key
by Basic auth or in the body, a Bearer token beside it ignored; on /webhook/ the key in the path
and, for a source with a ``webhook_secret``, the signature of the raw bytes) -> on /v1/, a
browser's origin against the source's ``allowed_origins`` (browser.py) -> one inbox entry
holding the request's JSON, without any ``writeKey`` -> group commit (committer.py) -> 200. What
is checked before the 200 is the request as a whole (a JSON object, a batch's ``batch`` an
array, a webhook's body an object or an array; counts and sizes within the limits); each message
is normalised later, off the request path, when the inbox is sorted (sorting.py). A key whose
source has a ``webhook_secret`` and not ``accept_tracking_api`` is refused on /v1/ (401
``webhook_only``) and has no settings.

`Ingest` is a raw ASGI callable (no Request/Response objects on the hot path, see
docs/benchmarks.md). The service dispatches every path under /v1/ and /webhook/ to it (`owns`,
`handle`) before Starlette's middleware and router, so it also answers what browsers need on
/v1/ itself: CORS (preflights, and the headers of every answer to an ``Origin``) and
``GET /v1/projects/{writeKey}/settings``, with the decisions and bodies from browser.py. Every
answer on the tracking and webhook paths is exactly 200 with ``{"success": true}`` or JSON
``{code, message}`` (analytics-python retries anything else forever); a preflight gets an empty
204.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import orjson
from starlette.types import Receive, Scope, Send

from freshsales_destination.config import ServerConfig
from freshsales_destination.errors import StoreError, StoreSaturated
from freshsales_destination.ingest.body import BodyReader
from freshsales_destination.ingest.browser import (
    allow_origin,
    preflight_headers,
    public_api_host,
    settings_body,
)
from freshsales_destination.ingest.committer import GroupCommitter
from freshsales_destination.ingest.responses import IngestError, error_body
from freshsales_destination.ingest.sorting import BATCH, WEBHOOK, IngestCounters
from freshsales_destination.ingest.sources import (
    Source,
    SourceRegistry,
    basic_auth_user,
    unauthorized,
    verify_signature,
    webhook_only,
)
from freshsales_destination.store.base import InboxEntry

log = logging.getLogger(__name__)

SINGLE_TYPES = ("identify", "track", "page", "screen", "group", "alias")
# analytics.js posts to /v1/<first letter of the type>, and batches to /v1/b (as do Segment's
# mobile libraries).
SHORT_PATHS = {
    "t": "track", "i": "identify", "p": "page", "g": "group", "a": "alias", "s": "screen",
    "b": "batch",
}
ACCEPTED_MEDIA = ("application/json", "text/plain", "")


class Ingest:
    """Everything a request needs: sources, limits, the committer, a clock and an id factory."""

    def __init__(
        self,
        *,
        registry: SourceRegistry,
        committer: GroupCommitter,
        limits: ServerConfig,
        counters: IngestCounters,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.registry = registry
        self.committer = committer
        self.limits = limits
        self.counters = counters
        self.now = now

    # -- request plumbing ----------------------------------------------------------------------

    async def _read_body(self, call: _Call) -> bytes:
        """The body within the request limit, gzip inflated; refused before JSON parsing."""
        media = (call.header(b"content-type") or "").split(";")[0].strip().lower()
        if media not in ACCEPTED_MEDIA:
            raise IngestError(
                415, "unsupported_media_type", "Content-Type must be application/json"
            )
        declared = call.header(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limits.max_request_bytes:
            raise IngestError(
                413, "request_too_large",
                f"request body is larger than {self.limits.max_request_bytes} bytes",
            )
        reader = BodyReader(
            encoding=call.header(b"content-encoding"), limit=self.limits.max_request_bytes
        )
        receive = call.receive
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone()
            chunk = message.get("body")
            if chunk:
                reader.feed(chunk)
            if not message.get("more_body", False):
                return reader.finish()

    @staticmethod
    def _parse(body: bytes) -> Any:
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            raise IngestError(
                400, "invalid_json", "the body is not valid UTF-8 JSON (or is nested too deeply)"
            ) from None

    def _entry(self, source: Source, kind: str, body: Any, count: int) -> InboxEntry:
        """The request as the inbox keeps it: its JSON without any writeKey (the body's or a
        message's), so write keys are never stored.

        Encoding it again also refuses, whole, a body nested deeper than orjson writes
        (sorting would fail on it later, after the 200).
        """
        _without_write_key(body)
        items = body.get("batch") if kind == BATCH else body if kind == WEBHOOK else None
        if items.__class__ is list:
            for item in items:
                _without_write_key(item)
        try:
            encoded = orjson.dumps(body)
        except orjson.JSONEncodeError:
            raise IngestError(400, "invalid_json", _TOO_DEEP) from None
        return InboxEntry(
            source=source.id,
            destination=source.destination,
            kind=kind,
            received_at=self.now(),
            count=count,
            body=encoded,
        )

    async def _commit(self, entry: InboxEntry) -> None:
        try:
            await self.committer.submit(entry)
        except StoreSaturated as exc:
            raise IngestError(
                429, "store_saturated", "too many messages are waiting to be stored; retry later",
                headers={"Retry-After": str(max(1, round(exc.retry_after)))},
            ) from None
        except StoreError:
            log.exception("store commit failed")
            raise IngestError(503, "store_unavailable", "the store cannot commit right now") from None

    # -- endpoints -----------------------------------------------------------------------------

    async def _single(self, call: _Call, kind: str) -> None:
        self.counters.requests += 1
        try:
            source, body = await self._authenticated_body(call)
            self._check_origin(call, source)
            entry = self._entry(source, kind, body, 1)
            limit = self.limits.max_message_bytes
            if len(entry.body) > limit:
                raise IngestError(
                    413, "message_too_large", f"the message is larger than {limit} bytes"
                )
            await self._commit(entry)
        except BaseException as exc:
            await self._refuse(call, exc)
            return
        await call.answer(200, SUCCESS_BODY)

    async def _batch(self, call: _Call) -> None:
        self.counters.requests += 1
        try:
            source, body = await self._authenticated_body(call)
            self._check_origin(call, source)
            items = body.get("batch")
            if not isinstance(items, list):
                raise IngestError(400, "invalid_batch", "batch must be a JSON array of messages")
            if len(items) > self.limits.max_batch_messages:
                raise IngestError(
                    413, "batch_too_large",
                    f"a batch holds at most {self.limits.max_batch_messages} messages",
                )
            await self._commit(self._entry(source, BATCH, body, len(items)))
        except BaseException as exc:
            await self._refuse(call, exc)
            return
        await call.answer(200, SUCCESS_BODY)

    async def _authenticated_body(self, call: _Call) -> tuple[Source, dict[str, Any]]:
        """The body (a JSON object) and its source: Basic auth first, else the body writeKey
        (alone, or beside a Bearer token). An unknown Basic key is refused before reading."""
        user = basic_auth_user(call.header(b"authorization"))
        source = None
        if user is not None:
            source = self.registry.lookup(user)
            if source is None:
                raise unauthorized()
            if not source.tracking_api:
                raise webhook_only()
        body = self._parse(await self._read_body(call))
        if not isinstance(body, dict):
            raise IngestError(400, "invalid_body", "the body must be a JSON object")
        if source is None:
            key = body.get("writeKey")
            source = self.registry.lookup(key if isinstance(key, str) else None)
            if source is None:
                raise unauthorized()
            if not source.tracking_api:
                raise webhook_only()
        return source, body

    @staticmethod
    def _check_origin(call: _Call, source: Source) -> None:
        """A browser's request is held to its source's ``allowed_origins`` (the preflight,
        which names no source, was answered for any source's; see ingest/browser.py)."""
        origin = call.origin
        if origin is None:
            return
        call.cors = allow_origin(origin, source.allowed_origins)
        if call.cors is None:
            raise IngestError(
                403, "origin_not_allowed", "this write key does not accept events from this origin"
            )

    async def _settings(self, call: _Call, scope: Scope, write_key: str) -> None:
        """``GET /v1/projects/{writeKey}/settings``: what analytics.js loads from its CDN,
        pointing it back at this service (see ingest/browser.py)."""
        source = self.registry.lookup(write_key)
        if source is None or not source.tracking_api:
            # A webhook-only key (webhook_secret without accept_tracking_api) has no browser use.
            await call.answer(404, _NO_SETTINGS)
            return
        if call.origin is not None:
            call.cors = allow_origin(call.origin, source.allowed_origins)
        protocol, api_host = public_api_host(
            scope, call.header, trust_proxy=self.limits.trust_proxy
        )
        await call.answer(
            200, settings_body(write_key, protocol, api_host), {"Cache-Control": "no-cache"}
        )

    async def _webhook(self, call: _Call) -> None:
        self.counters.requests += 1
        try:
            source = self.registry.lookup(call.path_params["write_key"])
            if source is None:
                raise unauthorized()
            raw_body = await self._read_body(call)
            # The signature is checked on the bytes before anything is parsed.
            if source.webhook_secret is not None and not verify_signature(
                source.webhook_secret, raw_body, call.header(b"x-signature")
            ):
                raise IngestError(401, "invalid_signature", "X-Signature does not match the body")
            body = self._parse(raw_body)
            if isinstance(body, dict):
                items: list[Any] = [body]
            elif isinstance(body, list):
                items = body
            else:
                raise IngestError(400, "invalid_body", "the body must be a message or an array")
            if len(items) > self.limits.max_batch_messages:
                raise IngestError(
                    413, "batch_too_large",
                    f"a request holds at most {self.limits.max_batch_messages} messages",
                )
            await self._commit(self._entry(source, WEBHOOK, body, len(items)))
        except BaseException as exc:
            await self._refuse(call, exc)
            return
        await call.answer(200, SUCCESS_BODY)

    async def _refuse(self, call: _Call, exc: BaseException) -> None:
        """Answer a refused request: always JSON ``{code, message}``, never a bare 500 page."""
        if isinstance(exc, IngestError):
            error = exc
        elif isinstance(exc, _ClientGone):
            error = IngestError(400, "client_disconnected", "the client went away mid-request")
        elif isinstance(exc, Exception):
            log.exception("unexpected failure while ingesting a request")
            error = IngestError(500, "internal_error", "the request could not be processed")
        else:  # cancellation, interpreter exit: not ours to answer
            raise exc
        self.counters.refused += 1
        await call.answer(error.status, error_body(error), error.headers)

    # -- routing -------------------------------------------------------------------------------

    async def _tracking(self, call: _Call) -> None:
        name = call.path_params["name"]
        name = SHORT_PATHS.get(name, name)
        if name == "batch" or name == "import":
            await self._batch(call)
        elif name in SINGLE_TYPES:
            await self._single(call, name)
        else:
            await _not_found(call)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI entry of every path under /v1/ and /webhook/ (see `owns`).

        The service calls it before Starlette's middleware and router: these endpoints answer
        every error themselves as JSON ``{code, message}``, and a request costs no framework
        objects on the hot path.
        """
        await self.handle(route_path(scope), scope, receive, send)

    async def handle(self, path: str, scope: Scope, receive: Receive, send: Send) -> None:
        """`__call__` for a caller that already has the route path (see `route_path`)."""
        call = _Call(scope, receive, send)
        prefix, _, rest = path[1:].partition("/")
        if prefix == "v1" and await self._browser(call, scope, rest):
            return
        if not rest or "/" in rest:
            await _not_found(call)
        elif scope["method"] != "POST":
            allow = "POST, OPTIONS" if prefix == "v1" else "POST"
            error = IngestError(405, "method_not_allowed", "use POST", headers={"Allow": allow})
            await call.answer(error.status, error_body(error), error.headers)
        elif prefix == "v1":
            call.path_params = {"name": rest}
            await self._tracking(call)
        else:
            call.path_params = {"write_key": rest}
            await self._webhook(call)

    async def _browser(self, call: _Call, scope: Scope, rest: str) -> bool:
        """What /v1/ answers browsers: CORS (preflights; the headers of every answer to an
        ``Origin``, by the origins any source allows until the source is known) and the
        settings route. False when the request is an ordinary one for the tracking paths."""
        origin = call.header(b"origin")
        if origin is not None:
            call.origin = origin
            call.cors = allow_origin(origin, self.registry.any_source_origins)
        parts = rest.split("/") if rest.startswith("projects/") else None
        settings = parts is not None and len(parts) == 3 and parts[2] == "settings"
        if not settings and SHORT_PATHS.get(rest, rest) not in _TRACKING_NAMES:
            return False  # an unknown path: 404 (with the CORS headers)
        method = scope["method"]
        if method == "OPTIONS":
            headers = preflight_headers(
                origin, self.registry.any_source_origins,
                "GET, OPTIONS" if settings else "POST, OPTIONS",
                call.header(b"access-control-request-headers"),
            )
            await call.answer_empty(204, headers)
        elif not settings or parts is None:
            return False
        elif method != "GET" and method != "HEAD":
            error = IngestError(
                405, "method_not_allowed", "use GET", headers={"Allow": "GET, OPTIONS"}
            )
            await call.answer(error.status, error_body(error), error.headers)
        else:
            await self._settings(call, scope, parts[1])
        return True

    @staticmethod
    def owns(path: str) -> bool:
        return path.startswith(_PREFIXES)


_PREFIXES = ("/v1/", "/webhook/")


def route_path(scope: Scope) -> str:
    """The path below the app's mount point: uvicorn's --root-path and a Starlette Mount
    both leave their prefix in ``scope["path"]``."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        return path[len(root):] or "/"
    return path
SUCCESS_BODY = orjson.dumps({"success": True})
_NO_SETTINGS = orjson.dumps({"code": "not_found", "message": "no source has this write key"})
_TRACKING_NAMES = frozenset((*SINGLE_TYPES, "batch", "import"))
_TOO_DEEP = "a message is nested too deeply"
_JSON_HEADERS = [(b"content-type", b"application/json")]


def _without_write_key(value: Any) -> None:
    """Drop a writeKey, in place: a parsed body belongs to its request."""
    if value.__class__ is dict:
        value.pop("writeKey", None)


class _ClientGone(Exception):
    """The client disconnected before its body was complete."""


class _Call:
    """One request as the endpoints see it: method, path parameters, headers, body, answer."""

    __slots__ = ("_headers", "path_params", "receive", "_send", "origin", "cors")

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # ASGI names are lower-case bytes; the first occurrence wins, as in Starlette.
        self._headers: dict[bytes, bytes] = dict(reversed(scope["headers"]))
        self.path_params: dict[str, str] = {}
        self.receive = receive
        self._send = send
        # A browser's Origin, and the CORS headers every answer to it carries (None: none).
        self.origin: str | None = None
        self.cors: dict[str, str] | None = None

    def header(self, name: bytes) -> str | None:
        value = self._headers.get(name)
        return None if value is None else value.decode("latin-1")

    async def answer(
        self, status: int, body: bytes, headers: dict[str, str] | None = None
    ) -> None:
        raw_headers = [*_JSON_HEADERS, (b"content-length", str(len(body)).encode())]
        if headers:
            raw_headers += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        if self.cors:
            raw_headers += [(k.lower().encode(), v.encode()) for k, v in self.cors.items()]
        await self._send({"type": "http.response.start", "status": status, "headers": raw_headers})
        await self._send({"type": "http.response.body", "body": body})

    async def answer_empty(self, status: int, headers: dict[str, str]) -> None:
        raw_headers = [(b"content-length", b"0")]
        raw_headers += [(k.lower().encode(), v.encode("latin-1")) for k, v in headers.items()]
        await self._send({"type": "http.response.start", "status": status, "headers": raw_headers})
        await self._send({"type": "http.response.body", "body": b""})


async def _not_found(call: _Call) -> None:
    error = IngestError(404, "not_found", "no such endpoint")
    await call.answer(error.status, error_body(error))
