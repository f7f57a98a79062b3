"""HTTP plumbing shared by the route modules: JSON bodies within limits, responses, wrappers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from freshsales_destination.sandbox.errors import ApiError, not_found, validation_error

if TYPE_CHECKING:
    from freshsales_destination.sandbox.state import SandboxState

Handler = Callable[["SandboxState", Request, dict[str, Any]], tuple[int, Any]]


def json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    content = b"" if payload is None and status == 204 else orjson.dumps(payload)
    return Response(content, status_code=status, headers=headers, media_type="application/json")


def sandbox_state(request: Request) -> SandboxState:
    state: SandboxState = request.app.state.sandbox
    return state


async def read_json(request: Request, state: SandboxState, *, allow_empty: bool = True) -> dict[str, Any]:
    """The request's JSON object; 413 past the size limit, 400 for anything that is not an object."""
    limit = state.options.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, {"errors": {"code": 413, "message": ["Request entity too large"]}})
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, {"errors": {"code": 413, "message": ["Request entity too large"]}})
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        if allow_empty:
            return {}
        raise validation_error("Request body can't be blank")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise validation_error("Invalid JSON in request body") from exc
    if not isinstance(data, dict):
        raise validation_error("Request body must be a JSON object")
    return data


def includes(request: Request) -> set[str]:
    return {part.strip() for part in request.query_params.get("include", "").split(",") if part.strip()}


def path_id(request: Request, name: str = "id") -> int:
    value = request.path_params.get(name)
    if not isinstance(value, int):
        raise not_found()
    return value


def endpoint(
    handler: Handler, *, body: bool = False, classic_only: bool = False
) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a synchronous handler: product check, body parsing, the state lock, the JSON answer."""
    from freshsales_destination.sandbox.bulk import settle_due

    async def run(request: Request) -> Response:
        state = sandbox_state(request)
        if classic_only and state.options.product != "classic":
            raise not_found()
        data = await read_json(request, state) if body else {}
        with state.lock:
            settle_due(state)  # bulk jobs whose time has come are written before anything is read
            status, payload = handler(state, request, data)
        return json_response(status, payload)

    run.__name__ = handler.__name__
    return run
