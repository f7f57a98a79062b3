"""The outer ASGI layer: auth, rate limits and their headers, scripted answers, faults, the
request log, and a last-resort 500 in the Freshsales error shape."""

from __future__ import annotations

import hmac
import logging
import math
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import anyio
import orjson
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from freshsales_destination.sandbox.errors import (
    ApiError,
    ConnectionDropped,
    errors_body,
    unauthorized,
)
from freshsales_destination.sandbox.ratelimit import Decision

if TYPE_CHECKING:
    from freshsales_destination.sandbox.state import SandboxState

logger = logging.getLogger("freshsales_destination.sandbox")
SUITE_PREFIX = "/crm/sales"


def normalise(path: str) -> str:
    """The route without the Suite prefix: ``/crm/sales/api/x`` → ``/api/x``."""
    if path == SUITE_PREFIX or path.startswith(SUITE_PREFIX + "/"):
        return path[len(SUITE_PREFIX):] or "/"
    return path


def route_path(scope: Scope) -> str:
    """The path as the sandbox's own routes see it: without the prefix it is mounted under.

    Under a Starlette ``Mount`` (the embedded service mounts the sandbox at ``/sandbox``) the
    ASGI ``path`` still carries that prefix and ``root_path`` holds it; Starlette's router strips
    it the same way (``starlette._utils.get_route_path``), so auth is decided on exactly the path
    that is routed.
    """
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if not root_path or not path.startswith(root_path):
        return path
    if path == root_path:
        return ""
    if path[len(root_path)] == "/":
        return path[len(root_path):]
    return path


def classify(route: str) -> str:
    if route == "/_sandbox" or route.startswith("/_sandbox/"):
        return "admin"
    if route == "/api" or route.startswith("/api/"):
        return "api"
    if route.startswith("/track/"):
        return "track"
    return "other"


def authorised(scope: Scope, api_key: str) -> bool:
    """Whether the request carries the API key, compared in constant time (as bytes: a header
    may hold any byte, and compare_digest refuses non-ASCII str)."""
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            return hmac.compare_digest(bytes(value), f"Token token={api_key}".encode())
    return False


class SandboxMiddleware:
    def __init__(self, app: ASGIApp, state: SandboxState) -> None:
        self.app = app
        self.state = state

    def _rate_headers(self, decision: Decision) -> list[tuple[bytes, bytes]]:
        options = self.state.options
        if options.reset_format == "delta":
            reset = str(max(math.ceil(decision.reset_at - self.state.clock()), 0))
        elif options.reset_format == "dmyHis":
            tz = timezone(timedelta(minutes=options.utc_offset_minutes))
            reset = datetime.fromtimestamp(math.ceil(decision.reset_at), tz).strftime("%d%m%y%H%M%S")
        else:
            reset = str(math.ceil(decision.reset_at))
        return [
            (b"x-ratelimit-limit", str(decision.limit).encode()),
            (b"x-ratelimit-remaining", str(decision.remaining).encode()),
            (b"x-ratelimit-reset", reset.encode()),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = self.state
        method: str = scope["method"]
        path = route_path(scope)
        route = normalise(path)
        kind = classify(route)
        query = scope.get("query_string", b"").decode("latin-1")
        status_box = {"status": 0, "started": False}
        outcome: str | None = None
        extra_headers: list[tuple[bytes, bytes]] = []

        async def wrapped_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_box["status"] = message["status"]
                status_box["started"] = True
                names = {name.lower() for name, _ in message.get("headers", [])}
                headers = list(message.get("headers", [])) + [h for h in extra_headers if h[0] not in names]
                message = {**message, "headers": headers}
            await send(message)

        async def answer(status: int, body: Any, headers: dict[str, str] | None = None) -> None:
            content = orjson.dumps(body) if body is not None else b""
            raw = [(b"content-type", b"application/json"), (b"content-length", str(len(content)).encode())]
            raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
            await wrapped_send({"type": "http.response.start", "status": status, "headers": raw})
            await wrapped_send({"type": "http.response.body", "body": content})

        def log() -> None:
            state.log(method=method, path=path, route=route, query=query, status=status_box["status"],
                      kind=kind, admin=kind == "admin", outcome=outcome)

        try:
            if kind in ("api", "admin") and not authorised(scope, state.options.api_key):
                with state.lock:
                    extra_headers.extend(self._rate_headers(state.limiter.peek(state.options.api_key)))
                outcome = "unauthorized"
                error = unauthorized()
                await answer(error.status, error.body)
                return
            if kind not in ("api", "track"):
                with state.lock:
                    extra_headers.extend(self._rate_headers(state.limiter.peek(state.options.api_key)))
                await self._forward(scope, receive, wrapped_send, status_box)
                return
            with state.lock:
                decision = state.limiter.hit(state.options.api_key)
                extra_headers.extend(self._rate_headers(decision))
                scripted = state.faults.next_scripted(method, route) if decision.allowed else None
                fault = None if scripted is not None or not decision.allowed else state.faults.roll()
            if not decision.allowed:
                outcome = "rate_limited"
                headers = {"Retry-After": str(max(math.ceil(decision.retry_after), 1))} \
                    if state.options.retry_after else None
                await answer(429, {"error_code": 429}, headers)
                return
            delay = 0.0
            if scripted is not None:
                outcome = "scripted"
                if scripted.action == "respond":
                    await answer(scripted.status, scripted.body, scripted.headers)
                    return
                if scripted.action == "drop":
                    fault = "drop"
                elif scripted.action == "slow":
                    delay = scripted.seconds if scripted.seconds is not None else state.faults.slow_seconds
            if fault == "drop":
                outcome = "fault_drop"
                await wrapped_send({"type": "http.response.start", "status": 200,
                                    "headers": [(b"content-type", b"application/json"),
                                                (b"content-length", b"64")]})
                raise ConnectionDropped()
            if fault == "error":
                outcome = "fault_error"
                status, body = state.faults.error_answer()
                await answer(status, body)
                return
            if fault == "slow":
                outcome = "fault_slow"
                delay = state.faults.slow_seconds
            if delay:
                # Read the body first: the client may give up while we wait, and the request must
                # still be applied, as when a real server commits after the client timed out.
                receive = await self._buffered(receive)
                await anyio.sleep(delay)
            await self._forward(scope, receive, wrapped_send, status_box)
        except ConnectionDropped:
            raise
        except ClientDisconnect:
            outcome = outcome or "client_disconnected"
        except Exception:
            logger.exception("sandbox error on %s %s", method, route)
            if status_box["started"]:
                raise
            outcome = outcome or "crash"
            await answer(500, errors_body(500, ["Internal server error"]))
        finally:
            log()

    async def _buffered(self, receive: Receive) -> Receive:
        """Read the request body now and replay it later (up to the body limit, then pass on)."""
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            size += len(message.get("body", b""))
            if message["type"] != "http.request" or not message.get("more_body"):
                break
            if size > self.state.options.max_body_bytes:
                break
        pending = list(messages)

        async def replay() -> Message:
            if pending:
                return pending.pop(0)
            return await receive()

        return replay

    async def _forward(self, scope: Scope, receive: Receive, send: Send, status_box: dict[str, Any]) -> None:
        try:
            await self.app(scope, receive, send)
        except ApiError as error:  # raised outside the exception middleware (should not happen)
            if status_box["started"]:
                raise
            content = orjson.dumps(error.body)
            await send({"type": "http.response.start", "status": error.status,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": content})
