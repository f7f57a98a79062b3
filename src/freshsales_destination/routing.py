"""Routing shared by the service and the sandbox: no redirect is ever built from the request.

Starlette's routers answer a path that matches only with (or without) a trailing slash by a
redirect to a URL built from the request's ``Host`` header: a client (or a cache in front of
the service) could be sent anywhere a forged ``Host`` says. These apps are APIs whose clients
use exact paths, so such a path is simply not found.
"""

from __future__ import annotations

from typing import Any

from starlette.routing import Mount, Router


def without_slash_redirects(app: Any) -> None:
    """Turn trailing-slash redirects off in `app`'s router and in every router mounted below
    it (a Starlette app, a Router, or a Mount's own routes)."""
    router = getattr(app, "router", app)
    if not isinstance(router, Router):
        return
    router.redirect_slashes = False
    for route in router.routes:
        if isinstance(route, Mount):
            without_slash_redirects(route.app)
