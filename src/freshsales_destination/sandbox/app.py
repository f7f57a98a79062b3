"""``build_app``: the Starlette application that emulates Freshsales."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount

from freshsales_destination.routing import without_slash_redirects
from freshsales_destination.sandbox.admin import admin_routes
from freshsales_destination.sandbox.clock import Clock, system_clock
from freshsales_destination.sandbox.errors import ApiError
from freshsales_destination.sandbox.middleware import SandboxMiddleware
from freshsales_destination.sandbox.options import SandboxOptions
from freshsales_destination.sandbox.routes import api_routes, tracking_routes
from freshsales_destination.sandbox.state import SandboxState
from freshsales_destination.sandbox.web import json_response


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return json_response(exc.status, exc.body, exc.headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return json_response(exc.status_code, {"error_code": exc.status_code})


def build_app(options: SandboxOptions | None = None, clock: Clock | None = None) -> Starlette:
    """The emulator as an ASGI app; the live ``SandboxState`` is ``app.state.sandbox``."""
    options = options or SandboxOptions()
    state = SandboxState.create(options, clock or system_clock)
    api = api_routes()
    track = tracking_routes()
    admin = admin_routes()
    app = Starlette(
        routes=[
            Mount("/crm/sales", routes=[Mount("/api", routes=api), Mount("/track", routes=track),
                                        Mount("/_sandbox", routes=admin)]),
            Mount("/api", routes=api),
            Mount("/track", routes=track),
            Mount("/_sandbox", routes=admin),
        ],
        middleware=[Middleware(SandboxMiddleware, state=state)],
        exception_handlers={ApiError: _api_error, HTTPException: _http_error},
    )
    without_slash_redirects(app)  # no redirect built from the Host header
    app.state.sandbox = state
    return app
