"""The Segment-compatible tracking API and the Webhooks-destination endpoint.

Flow of one request: limits and encoding (body.py) -> JSON -> write key (sources.py) ->
per-message normalisation (core/segment.py) -> group commit (committer.py) -> 200.
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
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from freshsales_destination.config import ServerConfig
from freshsales_destination.core.segment import (
    MESSAGE_TYPES,
    TRACKING_TYPES,
    RequestTimes,
    normalize,
)
from freshsales_destination.errors import StoreError, StoreSaturated
from freshsales_destination.ingest.body import read_limited
from freshsales_destination.ingest.committer import GroupCommitter
from freshsales_destination.ingest.responses import IngestError, error_response, json_response
from freshsales_destination.ingest.sources import (
    Source,
    SourceRegistry,
    authenticate,
    basic_auth_user,
    unauthorized,
    verify_signature,
)
from freshsales_destination.store.base import NewMessage

log = logging.getLogger(__name__)

SINGLE_TYPES = ("identify", "track", "page", "screen", "group", "alias")
ACCEPTED_MEDIA = ("application/json", "text/plain", "")
ANY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


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

    # -- request plumbing ----------------------------------------------------------------------

    async def _read_body(self, request: Request) -> bytes:
        """The body within the request limit, gzip inflated; refused before JSON parsing."""
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media not in ACCEPTED_MEDIA:
            raise IngestError(
                415, "unsupported_media_type", "Content-Type must be application/json"
            )
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limits.max_request_bytes:
            raise IngestError(
                413, "request_too_large",
                f"request body is larger than {self.limits.max_request_bytes} bytes",
            )
        return await read_limited(
            request.stream(),
            encoding=request.headers.get("content-encoding"),
            limit=self.limits.max_request_bytes,
        )

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
        times = RequestTimes.of(
            datetime.fromtimestamp(now, UTC), batch.get("sentAt") if batch else None
        )
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

    async def _commit(self, rows: list[NewMessage]) -> dict[str, Any]:
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
        return {"success": True}

    # -- endpoints -----------------------------------------------------------------------------

    async def single(self, request: Request) -> Response:
        kind = request.path_params["type"]
        return await self._handle(request, lambda body: ([body], kind, None))

    async def batch(self, request: Request) -> Response:
        def unpack(body: dict[str, Any]) -> tuple[list[Any], str | None, dict[str, Any] | None]:
            items = body.get("batch")
            if not isinstance(items, list):
                raise IngestError(400, "invalid_batch", "batch must be a JSON array of messages")
            if len(items) > self.limits.max_batch_messages:
                raise IngestError(
                    413, "batch_too_large",
                    f"a batch holds at most {self.limits.max_batch_messages} messages",
                )
            return items, None, body

        return await self._handle(request, unpack)

    async def _handle(
        self,
        request: Request,
        unpack: Callable[[dict[str, Any]], tuple[list[Any], str | None, dict[str, Any] | None]],
    ) -> Response:
        self.counters.requests += 1
        try:
            # Refuse an unknown Basic-auth key before reading the body.
            user = _basic_user(request)
            if user is not None and self.registry.lookup(user) is None:
                raise unauthorized()
            body = self._parse(await self._read_body(request))
            if not isinstance(body, dict):
                raise IngestError(400, "invalid_body", "the body must be a JSON object")
            source = authenticate(self.registry, request.headers, body)
            items, forced_type, batch = unpack(body)
            rows = self._rows(
                source, items, forced_type=forced_type, batch=batch, allowed_types=TRACKING_TYPES
            )
            return json_response(await self._commit(rows))
        except IngestError as exc:
            self.counters.refused += 1
            return error_response(exc)
        except ClientDisconnect:
            self.counters.refused += 1
            return error_response(
                IngestError(400, "client_disconnected", "the client went away mid-request")
            )
        except Exception:  # noqa: BLE001 - never answer a client with a bare 500 page
            log.exception("unexpected failure while ingesting a request")
            return error_response(_internal_error())

    async def webhook(self, request: Request) -> Response:
        self.counters.requests += 1
        try:
            source = self.registry.lookup(request.path_params["write_key"])
            if source is None:
                raise unauthorized()
            raw_body = await self._read_body(request)
            # The signature is checked on the bytes before anything is parsed.
            if source.webhook_secret is not None and not verify_signature(
                source.webhook_secret, raw_body, request.headers.get("x-signature")
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
            return json_response(await self._commit(rows))
        except IngestError as exc:
            self.counters.refused += 1
            return error_response(exc)
        except ClientDisconnect:
            self.counters.refused += 1
            return error_response(
                IngestError(400, "client_disconnected", "the client went away mid-request")
            )
        except Exception:  # noqa: BLE001 - never answer a client with a bare 500 page
            log.exception("unexpected failure while ingesting a webhook request")
            return error_response(_internal_error())

    def routes(self) -> list[Route]:
        """Ingest routes; every answer under /v1 and /webhook is JSON ``{code, message}``."""
        return [
            Route("/v1/batch", _post_only(self.batch), methods=ANY_METHOD),
            Route("/v1/import", _post_only(self.batch), methods=ANY_METHOD),
            Route("/v1/{type:str}", _post_only(self._single_or_404), methods=ANY_METHOD),
            Route("/webhook/{write_key:str}", _post_only(self.webhook), methods=ANY_METHOD),
            Route("/v1/{rest:path}", _not_found, methods=ANY_METHOD),
            Route("/webhook/{rest:path}", _not_found, methods=ANY_METHOD),
        ]

    async def _single_or_404(self, request: Request) -> Response:
        if request.path_params["type"] not in SINGLE_TYPES:
            return await _not_found(request)
        return await self.single(request)


_TOO_DEEP = "a message is nested too deeply"


def _internal_error() -> IngestError:
    return IngestError(500, "internal_error", "the request could not be processed")


async def _not_found(request: Request) -> Response:
    return error_response(IngestError(404, "not_found", "no such endpoint"))


def _post_only(
    endpoint: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    async def only_post(request: Request) -> Response:
        if request.method != "POST":
            return error_response(
                IngestError(
                    405, "method_not_allowed", "use POST", headers={"Allow": "POST"}
                )
            )
        return await endpoint(request)

    return only_post


def _basic_user(request: Request) -> str | None:
    return basic_auth_user(request.headers.get("authorization"))
