"""What browsers need besides the tracking paths (see docs/browser.md): CORS answers, the
settings analytics.js loads from its CDN, and analytics.js itself when the operator installed it.

CORS decisions. A preflight carries no write key (no Authorization header, no body), so it is
answered for the origins *some* source allows ("*" by default); the actual request, which names
its source, is then held to that source's own ``allowed_origins``: a refused origin gets 403
``origin_not_allowed`` without CORS headers, and nothing is stored. Requests without an
``Origin`` header (servers, SDKs) are not browsers and are not checked. Answers allow no
credentials: the service uses no cookies.

Who answers what. Under /v1/, ingest/app.py answers the preflights, the CORS headers and the
settings route itself with the functions here (it runs before Starlette's middleware, so no CORS
middleware is involved); analytics.js and its bundles are ordinary Starlette routes
(`AnalyticsJs.routes`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Scope

from freshsales_destination.ingest.responses import IngestError, error_response
from freshsales_destination.ingest.sources import SourceRegistry

log = logging.getLogger(__name__)

# What analytics.js sends: Authorization (Basic writeKey:), Content-Type (text/plain), and on
# retries X-Retry-Count; Content-Encoding for clients that gzip.
ALLOWED_HEADERS = ("authorization", "content-type", "content-encoding", "x-retry-count")
PREFLIGHT_MAX_AGE = "7200"  # Chromium's ceiling
_TOKEN = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
_PREFIX = re.compile(r"^(?:/[A-Za-z0-9._~!$&'()*+,;=:@%-]+)*/?$")
_HOST = re.compile(
    r"^(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.?|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$"
)


def allow_origin(origin: str, allowed: frozenset[str] | None) -> dict[str, str] | None:
    """The CORS headers of an answer to `origin` when `allowed` (None: any origin) lets it
    read the answer; None when it may not."""
    if allowed is None:
        return {"Access-Control-Allow-Origin": "*", "Access-Control-Expose-Headers": "Retry-After"}
    if origin in allowed:
        return {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Expose-Headers": "Retry-After",
            "Vary": "Origin",
        }
    return None


def preflight_headers(
    origin: str | None, allowed: frozenset[str] | None, methods: str, requested: str | None
) -> dict[str, str]:
    """A preflight's answer: the methods and headers the path takes, and the origin when some
    source allows it (without it the browser stops the request)."""
    headers = {
        "Access-Control-Allow-Methods": methods,
        "Access-Control-Allow-Headers": ", ".join(_allowed_headers(requested)),
        "Access-Control-Max-Age": PREFLIGHT_MAX_AGE,
        "Vary": "Origin, Access-Control-Request-Headers",
    }
    if origin is not None:
        cors = allow_origin(origin, allowed)
        if cors is not None:
            headers["Access-Control-Allow-Origin"] = cors["Access-Control-Allow-Origin"]
    return headers


def _allowed_headers(requested: str | None) -> list[str]:
    """The headers analytics.js sends, and any others the page asks for (a client may add its
    own through analytics.js' ``headers`` option; the service ignores them)."""
    names = list(ALLOWED_HEADERS)
    for part in (requested or "").split(","):
        name = part.strip().lower()
        if name and _TOKEN.match(name) and name not in names and len(names) < 32:
            names.append(name)
    return names


def public_api_host(
    scope: Scope, header: Callable[[bytes], str | None], *, trust_proxy: bool
) -> tuple[str, str]:
    """``(protocol, apiHost)`` of this service's tracking API as a browser reaches it:
    ``host[:port]`` + proxy prefix + mount point + ``/v1``, without a scheme, as Segment
    writes ``apiHost``.

    ``X-Forwarded-Proto``/``-Host``/``-Prefix`` (their first value) count only with
    `trust_proxy`: otherwise anyone could make the settings point browsers elsewhere.
    """
    protocol = "https" if scope.get("scheme") == "https" else "http"
    host = header(b"host")
    prefix = ""
    if trust_proxy:
        forwarded_prefix = (header(b"x-forwarded-prefix") or "").split(",")[0].strip()
        if _PREFIX.match(forwarded_prefix):
            prefix = forwarded_prefix.rstrip("/")
        forwarded_proto = (header(b"x-forwarded-proto") or "").split(",")[0].strip().lower()
        if forwarded_proto in ("http", "https"):
            protocol = forwarded_proto
        forwarded_host = (header(b"x-forwarded-host") or "").split(",")[0].strip()
        if forwarded_host and _HOST.match(forwarded_host):
            host = forwarded_host
    if not host or not _HOST.match(host):
        server = scope.get("server") or ("127.0.0.1", None)
        name = f"[{server[0]}]" if ":" in str(server[0]) else str(server[0])
        host = name if server[1] is None else f"{name}:{server[1]}"
    root = str(scope.get("root_path") or "").rstrip("/")
    return protocol, f"{host}{prefix}{root}/v1"


def cdn_settings(write_key: str, protocol: str, api_host: str) -> dict[str, Any]:
    """The settings analytics.js loads from ``<cdn>/v1/projects/<writeKey>/settings``: the
    Segment.io destination only (no device-mode destinations, middleware or remote plugins to
    fetch), pointing at this service, and no metrics (analytics.js would send them to Segment)."""
    return {
        "integrations": {
            "Segment.io": {
                "apiKey": write_key,
                "apiHost": api_host,
                "protocol": protocol,
                "unbundledIntegrations": [],
                "addBundledMetadata": True,
                "maybeBundledConfigIds": {},
            }
        },
        "plan": {
            "track": {"__default": {"enabled": True, "integrations": {}}},
            "identify": {"__default": {"enabled": True}},
            "group": {"__default": {"enabled": True}},
        },
        "edgeFunction": {},
        "analyticsNextEnabled": True,
        "middlewareSettings": {},
        "enabledMiddleware": {},
        "metrics": {"sampleRate": 0},
        "legacyVideoPluginsEnabled": False,
        "remotePlugins": [],
    }


def settings_body(write_key: str, protocol: str, api_host: str) -> bytes:
    return orjson.dumps(cdn_settings(write_key, protocol, api_host))


# -- analytics.js ---------------------------------------------------------------------------

_BUNDLE = re.compile(r"^[A-Za-z0-9_-]+\.bundle\.[0-9a-f]+\.js$")
_KEY_PLACEHOLDER = b'"__WRITE_KEY__"'
_SCRIPT_HEADERS = {"Cache-Control": "public, max-age=300"}
_SCRIPT_TYPE = "text/javascript; charset=utf-8"


def _not_installed() -> Response:
    return error_response(
        IngestError(404, "not_found", "analytics.js is not served here ([browser] analytics_js_path)")
    )


class AnalyticsJs:
    """Serves an npm-installed ``@segment/analytics-next``'s ``dist/umd/standalone.js`` as
    Segment's CDN does: with the write key of its URL in place of ``__WRITE_KEY__``, and the
    chunks it loads on demand from ``<cdn>/analytics-next/bundles/`` (the files beside it)."""

    def __init__(self, path: Path | None, registry: SourceRegistry) -> None:
        self.path = path
        self.registry = registry
        self._cache: tuple[tuple[int, int], bytes] | None = None
        if path is not None and not path.is_file():
            log.warning(
                "[browser] analytics_js_path %s is not a file: /analytics.js/v1/... answers 404",
                path,
            )

    def _read(self) -> bytes | None:
        assert self.path is not None
        try:
            stat = self.path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
            if self._cache is not None and self._cache[0] == stamp:
                return self._cache[1]
            data = self.path.read_bytes()
        except OSError as exc:
            log.warning("cannot read [browser] analytics_js_path %s: %s", self.path, exc.strerror)
            return None
        self._cache = (stamp, data)
        return data

    async def script(self, request: Request) -> Response:
        write_key = request.path_params["write_key"]
        if self.path is None:
            return _not_installed()
        source = self.registry.lookup(write_key)
        if source is None or not source.tracking_api:
            return error_response(IngestError(404, "not_found", "no source has this write key"))
        data = await run_in_threadpool(self._read)
        if data is None:
            return _not_installed()
        body = data.replace(_KEY_PLACEHOLDER, orjson.dumps(write_key), 1)
        return Response(body, headers=_SCRIPT_HEADERS, media_type=_SCRIPT_TYPE)

    async def bundle(self, request: Request) -> Response:
        name = request.path_params["name"]
        if self.path is None:
            return _not_installed()
        if not _BUNDLE.match(name):
            return error_response(IngestError(404, "not_found", "no such endpoint"))
        path = self.path.parent / name
        try:
            data = await run_in_threadpool(path.read_bytes)
        except OSError:
            return error_response(IngestError(404, "not_found", "no such bundle"))
        return Response(data, headers=_SCRIPT_HEADERS, media_type=_SCRIPT_TYPE)

    def routes(self) -> list[Route]:
        return [
            Route(
                "/analytics.js/v1/{write_key}/analytics.min.js", self.script, methods=["GET"]
            ),
            Route("/analytics-next/bundles/{name}", self.bundle, methods=["GET"]),
        ]
