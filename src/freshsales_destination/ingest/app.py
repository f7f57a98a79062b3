"""The Segment-compatible tracking API and the Webhooks-destination endpoint.

Flow of one request: limits and encoding (body.py) -> JSON -> write key (sources.py) ->
per-message normalisation (core/segment.py) -> group commit (committer.py) -> 200.

The endpoints are raw ASGI callables behind Starlette routes (no Request/Response objects on
the hot path, see docs/benchmarks.md). Every answer under /v1 and /webhook is exactly 200 with
a JSON body, or JSON ``{code, message}``: analytics-python retries anything else forever.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from freshsales_destination.config import ServerConfig
from freshsales_destination.core.segment import (
    MESSAGE_TYPES,
    TRACKING_TYPES,
    RequestTimes,
    normalize,
)
from freshsales_destination.errors import StoreError, StoreSaturated
from freshsales_destination.ingest.body import BodyReader
from freshsales_destination.ingest.committer import GroupCommitter
from freshsales_destination.ingest.responses import IngestError, error_body
from freshsales_destination.ingest.sources import (
    Source,
    SourceRegistry,
    basic_auth_user,
    unauthorized,
    verify_signature,
)
from freshsales_destination.store.base import NewMessage

log = logging.getLogger(__name__)

SINGLE_TYPES = ("identify", "track", "page", "screen", "group", "alias")
ACCEPTED_MEDIA = ("application/json", "text/plain", "")


@dataclass
class IngestCounters:
    requests: int = 0
    accepted: int = 0
    duplicates: int = 0
    discarded: int = 0
    filtered: int = 0
    refused: int = 0


class Ingest:
    """Everything a request needs: sources, limits, the committer, a clock and an id factory."""

    def __init__(
        self,
        *,
        registry: SourceRegistry,
        committer: GroupCommitter,
        limits: ServerConfig,
        now: Callable[[], float] = time.time,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        self.registry = registry
        self.committer = committer
        self.limits = limits
        self.now = now
        self.new_id = new_id
        self.counters = IngestCounters()
        self._last_times: tuple[int, RequestTimes] | None = None

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

    def _rows(
        self,
        source: Source,
        items: list[Any],
        *,
        forced_type: str | None,
        batch: dict[str, Any] | None,
        allowed_types: frozenset[str],
    ) -> list[NewMessage]:
        now = self.now()
        context = batch.get("context") if batch else None
        integrations = batch.get("integrations") if batch else None
        times = self._times(now, batch.get("sentAt") if batch else None)
        context = context if isinstance(context, dict) else None
        integrations = integrations if isinstance(integrations, dict) else None
        rows: list[NewMessage] = []
        limit = self.limits.max_message_bytes
        source_id, destination = source.id, source.destination
        dumps, new_id = orjson.dumps, self.new_id
        for item in items:
            if item.__class__ is dict and "writeKey" in item:
                item = {key: value for key, value in item.items() if key != "writeKey"}
            try:
                raw = dumps(item)
            except orjson.JSONEncodeError:
                raise IngestError(400, "invalid_json", _TOO_DEEP) from None
            result = normalize(
                item,
                received_at=times.received_at,
                new_id=new_id,
                forced_type=forced_type,
                batch_context=context,
                batch_integrations=integrations,
                allowed_types=allowed_types,
                times=times,
            )
            status, reason, message = result.status, result.reason, result.message
            if len(raw) > limit:
                if forced_type is not None:  # a single-message request over the limit
                    raise IngestError(
                        413, "message_too_large", f"the message is larger than {limit} bytes"
                    )
                status, reason = "discarded", f"message is larger than {limit} bytes"
                message = {"messageId": result.message_id, "receivedAt": times.received}
            try:
                encoded = dumps(message)
            except orjson.JSONEncodeError:
                raise IngestError(400, "invalid_json", _TOO_DEEP) from None
            rows.append(
                NewMessage(
                    source=source_id,
                    destination=destination,
                    message_id=result.message_id,
                    type=result.type,
                    status=status,
                    reason=reason,
                    lane=result.lane,
                    received_at=now,
                    event_at=result.event_at,
                    raw=raw,
                    message=encoded,
                )
            )
        return rows

    def _times(self, now: float, sent_at: Any) -> RequestTimes:
        """The request's times; reused within one millisecond (the precision of receivedAt)."""
        if sent_at is not None:
            return RequestTimes.of(datetime.fromtimestamp(now, UTC), sent_at)
        millisecond = int(now * 1000)
        cached = self._last_times
        if cached is not None and cached[0] == millisecond:
            return cached[1]
        times = RequestTimes.of(datetime.fromtimestamp(now, UTC))
        self._last_times = (millisecond, times)
        return times

    async def _commit(self, rows: list[NewMessage]) -> None:
        try:
            fresh = await self.committer.submit(rows)
        except StoreSaturated as exc:
            raise IngestError(
                429, "store_saturated", "too many messages are waiting to be stored; retry later",
                headers={"Retry-After": str(max(1, round(exc.retry_after)))},
            ) from None
        except StoreError:
            log.exception("store commit failed")
            raise IngestError(503, "store_unavailable", "the store cannot commit right now") from None
        counters = self.counters
        counters.duplicates += fresh.count(False)
        for row, new in zip(rows, fresh, strict=True):
            if not new:
                continue
            if row.status == "pending":
                counters.accepted += 1
            elif row.status == "filtered":
                counters.filtered += 1
            else:
                counters.discarded += 1

    # -- endpoints -----------------------------------------------------------------------------

    async def _single(self, call: _Call, kind: str) -> None:
        self.counters.requests += 1
        try:
            source, body = await self._authenticated_body(call)
            rows = self._rows(
                source, [body], forced_type=kind, batch=None, allowed_types=TRACKING_TYPES
            )
            await self._commit(rows)
        except BaseException as exc:
            await self._refuse(call, exc)
            return
        await call.answer(200, SUCCESS_BODY)

    async def _batch(self, call: _Call) -> None:
        self.counters.requests += 1
        try:
            source, body = await self._authenticated_body(call)
            items = body.get("batch")
            if not isinstance(items, list):
                raise IngestError(400, "invalid_batch", "batch must be a JSON array of messages")
            if len(items) > self.limits.max_batch_messages:
                raise IngestError(
                    413, "batch_too_large",
                    f"a batch holds at most {self.limits.max_batch_messages} messages",
                )
            rows = self._rows(
                source, items, forced_type=None, batch=body, allowed_types=TRACKING_TYPES
            )
            await self._commit(rows)
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
        body = self._parse(await self._read_body(call))
        if not isinstance(body, dict):
            raise IngestError(400, "invalid_body", "the body must be a JSON object")
        if source is None:
            key = body.get("writeKey")
            source = self.registry.lookup(key if isinstance(key, str) else None)
            if source is None:
                raise unauthorized()
        return source, body

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
            rows = self._rows(
                source, items, forced_type=None, batch=None, allowed_types=MESSAGE_TYPES
            )
            await self._commit(rows)
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
        if name == "batch" or name == "import":
            await self._batch(call)
        elif name in SINGLE_TYPES:
            await self._single(call, name)
        else:
            await _not_found(call)

    def routes(self) -> list[Route]:
        """Ingest routes; every answer under /v1 and /webhook is JSON ``{code, message}``.

        The endpoints are raw ASGI callables: no Request/Response objects on the hot path.
        """
        return [
            Route("/v1/{name:str}", _Endpoint(self._tracking)),
            Route("/webhook/{write_key:str}", _Endpoint(self._webhook)),
            Route("/v1/{rest:path}", _Endpoint(_not_found, post_only=False)),
            Route("/webhook/{rest:path}", _Endpoint(_not_found, post_only=False)),
        ]


SUCCESS_BODY = orjson.dumps({"success": True})
_TOO_DEEP = "a message is nested too deeply"
_JSON_HEADERS = [(b"content-type", b"application/json")]


class _ClientGone(Exception):
    """The client disconnected before its body was complete."""


class _Call:
    """One request as the endpoints see it: method, path parameters, headers, body, answer."""

    __slots__ = ("_headers", "path_params", "receive", "_send")

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # ASGI names are lower-case bytes; the first occurrence wins, as in Starlette.
        self._headers: dict[bytes, bytes] = dict(reversed(scope["headers"]))
        self.path_params: dict[str, Any] = scope.get("path_params", {})
        self.receive = receive
        self._send = send

    def header(self, name: bytes) -> str | None:
        value = self._headers.get(name)
        return None if value is None else value.decode("latin-1")

    async def answer(
        self, status: int, body: bytes, headers: dict[str, str] | None = None
    ) -> None:
        raw_headers = [*_JSON_HEADERS, (b"content-length", str(len(body)).encode())]
        if headers:
            raw_headers += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        await self._send({"type": "http.response.start", "status": status, "headers": raw_headers})
        await self._send({"type": "http.response.body", "body": body})


class _Endpoint:
    """A raw ASGI endpoint behind a Starlette route (all methods routed; non-POST is a 405)."""

    def __init__(
        self, handler: Callable[[_Call], Awaitable[None]], *, post_only: bool = True
    ) -> None:
        self._handler = handler
        self._post_only = post_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        call = _Call(scope, receive, send)
        if self._post_only and scope["method"] != "POST":
            error = IngestError(405, "method_not_allowed", "use POST", headers={"Allow": "POST"})
            await call.answer(error.status, error_body(error), error.headers)
            return
        await self._handler(call)


async def _not_found(call: _Call) -> None:
    error = IngestError(404, "not_found", "no such endpoint")
    await call.answer(error.status, error_body(error))
