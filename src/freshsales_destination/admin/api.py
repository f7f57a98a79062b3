"""The admin API: JSON under ``/admin/v1/`` (issue 10; docs/operations.md "The admin API").

Every route needs the admin token (admin/auth.py: ``Authorization: Bearer``, or the
dashboard's session with its CSRF token for a POST; a cross-site POST is refused). Answers
are JSON; refusals are ``{code, message}`` (400 bad parameters, 401, 403, 404, 413, 415, 503
without a configured token or when the store is unavailable). The answers come from the read model (admin/views.py), called
off the event loop (the store is synchronous). Times are epoch seconds; a message's ``id`` is
the store's sequence number (``/admin/v1/messages/{id}``).

No answer holds a credential: views never returns one, and Freshsales calls are shown by
method, route and status.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from freshsales_destination.admin import auth, params, views
from freshsales_destination.admin.openapi import spec
from freshsales_destination.admin.params import BadParameter
from freshsales_destination.config import Settings
from freshsales_destination.errors import FreshsalesDestinationError, StoreError
from freshsales_destination.store.base import Store

log = logging.getLogger(__name__)

PREFIX = "/admin/v1"
MAX_BODY_BYTES = 1024 * 1024

Handler = Callable[[Request], Awaitable[Response]]


class ApiError(Exception):
    """A refusal other than a bad parameter: its status, code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def answer(body: Any, status: int = 200) -> Response:
    """JSON (dataclasses as objects), never cached: answers hold people's data."""
    return Response(
        orjson.dumps(body), status_code=status, media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def refusal(status: int, code: str, message: str) -> Response:
    return answer({"code": code, "message": message}, status)


class AdminApi:
    """The routes, over one store and the service's settings; `now` gives epoch seconds."""

    def __init__(
        self, settings: Settings, store: Store, *, now: Callable[[], float] = time.time
    ) -> None:
        self.settings = settings
        self.store = store
        self.now = now

    def routes(self) -> list[Route]:
        g = self._guarded
        return [
            Route(f"{PREFIX}/openapi.json", g(self.openapi), methods=["GET"]),
            Route(f"{PREFIX}/destinations", g(self.destinations), methods=["GET"]),
            Route(f"{PREFIX}/messages", g(self.messages), methods=["GET"]),
            Route(f"{PREFIX}/messages/{{id}}", g(self.message), methods=["GET"]),
            Route(f"{PREFIX}/stats", g(self.stats), methods=["GET"]),
            Route(f"{PREFIX}/failures", g(self.failures), methods=["GET"]),
            Route(f"{PREFIX}/dead-letters/retry", g(self.retry), methods=["POST"]),
            Route(f"{PREFIX}/dead-letters/drop", g(self.drop), methods=["POST"]),
            Route(f"{PREFIX}/explain", g(self.explain), methods=["POST"]),
        ]

    def _guarded(self, handler: Handler) -> Handler:
        """`handler` behind the admin credentials, with its refusals as JSON."""

        async def guarded(request: Request) -> Response:
            denied = auth.refusal(request, self.settings, now=self.now())
            if denied is not None:
                return denied
            try:
                return await handler(request)
            except BadParameter as exc:
                return refusal(400, exc.code, exc.message)
            except ApiError as exc:
                return refusal(exc.status, exc.code, exc.message)
            except StoreError as exc:
                # Its text may name the database: logged by kind only, never answered.
                log.warning("admin API %s: the store is unavailable (%s)",
                            request.url.path, type(exc).__name__)
                return refusal(503, "store_unavailable", "the store is unavailable; try again")

        guarded.__name__ = handler.__name__
        guarded.__doc__ = handler.__doc__
        return guarded

    # -- reading ---------------------------------------------------------------------------

    async def openapi(self, request: Request) -> Response:
        """This API's and the ingest API's OpenAPI description."""
        params.only_known(list(request.query_params), (), "parameter")
        return answer(spec())

    async def destinations(self, request: Request) -> Response:
        """Each destination's health, budget, backlog and what was learned."""
        params.only_known(list(request.query_params), (), "parameter")
        found = await run_in_threadpool(views.destinations, self.store, self.settings, self.now())
        return answer({"destinations": found})

    async def messages(self, request: Request) -> Response:
        """Messages matching the filters, newest first, a page at a time."""
        flt, limit, cursor = params.search(request.query_params, now=self.now())
        try:
            page = await run_in_threadpool(views.search, self.store, flt, limit=limit, cursor=cursor)
        except ValueError:
            raise BadParameter(
                "cursor is not one this API gave (pass next_cursor from the previous page "
                "unchanged, with the same filters)", "invalid_cursor",
            ) from None
        return answer({"messages": page.items, "next_cursor": page.next_cursor})

    async def message(self, request: Request) -> Response:
        """One message's journey."""
        params.only_known(list(request.query_params), (), "parameter")
        seq = params.message_seq(request.path_params["id"])
        found = await run_in_threadpool(views.journey, self.store, self.settings, seq)
        if found is None:
            raise ApiError(404, "not_found", f"there is no message {seq}")
        return answer(found)

    async def stats(self, request: Request) -> Response:
        """Counts per destination and bucket of time, and delivery latency."""
        params.only_known(list(request.query_params), ("window",), "parameter")
        window = params.window(request.query_params.get("window"))
        found = await run_in_threadpool(
            views.stats, self.store, self.settings, window, self.now()
        )
        return answer({"window": window, "destinations": found})

    async def failures(self, request: Request) -> Response:
        """Failure and discard reasons grouped, with counts and samples."""
        query = request.query_params
        params.only_known(list(query), ("destination", "since"), "parameter")
        destination = params.text("destination", query.get("destination"))
        since = params.timestamp("since", query.get("since"), now=self.now())
        found = await run_in_threadpool(
            lambda: views.failures(self.store, destination=destination, since=since)
        )
        return answer({"failures": found})

    # -- steering ----------------------------------------------------------------------------

    async def retry(self, request: Request) -> Response:
        """Dead letters matching the filter back to pending; how many changed."""
        flt = params.dead_letter_filter(await _json_body(request), now=self.now())
        changed = await run_in_threadpool(views.retry_dead, self.store, flt, self.now())
        return answer({"action": "retry", "changed": changed})

    async def drop(self, request: Request) -> Response:
        """Dead letters matching the filter marked dropped; how many changed."""
        flt = params.dead_letter_filter(await _json_body(request), now=self.now())
        changed = await run_in_threadpool(views.drop_dead, self.store, flt, self.now())
        return answer({"action": "drop", "changed": changed})

    async def explain(self, request: Request) -> Response:
        """What the planner does with a posted event, or with a stored message."""
        body = await _json_body(request)
        if not isinstance(body, dict):
            raise BadParameter("the body must be a JSON object: an event, {\"event\": {...}}, "
                               "{\"id\": N} or {\"message_id\": \"...\"}", "invalid_body")
        if "id" in body or "message_id" in body:
            return answer(await self._explain_stored(body))
        if "event" in body:
            params.only_known(body, ("event", "destination"), "field")
            event, destination = body["event"], params.text("destination", body.get("destination"))
            if not isinstance(event, dict):
                raise BadParameter("event must be a JSON object (a Segment message)", "invalid_body")
        else:
            params.only_known(list(request.query_params), ("destination",), "parameter")
            event, destination = body, request.query_params.get("destination") or None
        names = ", ".join(sorted(self.settings.destinations)) or "none"
        if destination is not None and destination not in self.settings.destinations:
            raise BadParameter(f"destination must be one of {names}", "unknown_destination")
        if destination is None and len(self.settings.destinations) != 1:
            raise BadParameter(
                f"name the destination (\"destination\" beside \"event\", or ?destination= "
                f"for a bare event); configured: {names}", "destination_required",
            )
        try:
            found = await run_in_threadpool(
                views.explain_event, self.store, self.settings, destination, event
            )
        except StoreError:
            raise
        except FreshsalesDestinationError as exc:
            raise BadParameter(exc.message[:500], "invalid_event") from None
        return answer(found)

    async def _explain_stored(self, body: dict[str, Any]) -> dict[str, Any]:
        """``{"id": N}`` (the store's id) or ``{"message_id": "..."}`` (the event's own
        messageId; with ``destination`` when several destinations hold it)."""
        params.only_known(body, ("id", "message_id", "destination"), "field")
        if "id" in body and "message_id" in body:
            raise BadParameter("give id or message_id, not both", "ambiguous_filter")
        if "id" in body:
            seq = params.message_seq(body["id"])
            label = f"message {seq}"
        else:
            message_id = params.text("message_id", body["message_id"])
            if message_id is None:
                raise BadParameter("message_id must be a non-empty string")
            flt = views.MessageFilter(
                message_id=message_id, destination=params.text("destination", body.get("destination"))
            )
            page = await run_in_threadpool(views.search, self.store, flt, limit=2, cursor=None)
            if len(page.items) > 1:
                names = sorted({item.destination for item in page.items})
                raise BadParameter(
                    f"several stored messages have this message_id ({', '.join(names)}): "
                    "add destination, or use id", "ambiguous_filter",
                )
            if not page.items:
                raise ApiError(404, "not_found", "no stored message has this message_id")
            seq = page.items[0].id
            label = "this message_id"
        found = await run_in_threadpool(views.explain_stored, self.store, self.settings, seq)
        if found is None:
            raise ApiError(404, "not_found", f"there is no {label}")
        return found


async def _json_body(request: Request) -> Any:
    """The request's JSON body (``application/json``, at most `MAX_BODY_BYTES`)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json":
        raise ApiError(415, "unsupported_media_type", "send JSON with Content-Type: application/json")
    size = 0
    chunks: list[bytes] = []
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ApiError(413, "body_too_large", f"the body is larger than {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    try:
        return orjson.loads(b"".join(chunks))
    except orjson.JSONDecodeError:
        raise BadParameter("the body is not valid JSON", "invalid_json") from None
