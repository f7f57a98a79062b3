"""Assembles the running service: store, ingest, health routes and the ``serve`` command."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import shlex
import shutil
import stat
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from http import HTTPStatus
from pathlib import Path
from typing import Annotated, Any

import httpx2
import typer
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.types import Receive, Scope, Send

from freshsales_destination.admin.app import operations_routes
from freshsales_destination.config import (
    ENV_PREFIX,
    Settings,
    apply_env_overrides,
    load_settings,
    settings_from_dict,
)
from freshsales_destination.delivery.engine import DeliveryEngine, DeliveryThread
from freshsales_destination.errors import ConfigError, FreshsalesDestinationError, StoreError
from freshsales_destination.housekeeping import Housekeeper
from freshsales_destination.ingest.app import Ingest, route_path
from freshsales_destination.ingest.browser import AnalyticsJs
from freshsales_destination.ingest.committer import GroupCommitter
from freshsales_destination.ingest.responses import IngestError, error_response, json_response
from freshsales_destination.ingest.sort_loop import InboxSorting, SortPolicy
from freshsales_destination.ingest.sorting import IngestCounters, Sorter
from freshsales_destination.ingest.sources import SourceRegistry
from freshsales_destination.observe.logs import (
    LOG_FORMATS,
    LOG_LEVELS,
    configure_from_env,
    configure_logging,
)
from freshsales_destination.observe.metrics import (
    INGEST_TRACKING,
    INGEST_WEBHOOK,
    MULTIPROC_ENV,
    metrics_routes,
)
from freshsales_destination.private_files import FILE_MODE, private_dir, write_private
from freshsales_destination.routing import without_slash_redirects
from freshsales_destination.store.base import Store
from freshsales_destination.store.factory import open_store

log = logging.getLogger("freshsales_destination")

_ERROR_CODES = {404: ("not_found", "no such endpoint"), 405: ("method_not_allowed", "")}


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (unknown path, wrong method) as JSON ``{code, message}``."""
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    code, message = _ERROR_CODES.get(status, ("", ""))
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "error"
    code = code or phrase.lower().replace(" ", "_").replace("-", "_")
    headers = dict(exc.headers or {})
    if status == 405:
        allowed = headers.get("Allow") or headers.get("allow")
        message = f"use {allowed}" if allowed else "method not allowed"
    message = message or (exc.detail if isinstance(exc.detail, str) and exc.detail else phrase)
    return error_response(IngestError(status, code, message, headers=headers))


async def _server_error(request: Request, exc: Exception) -> Response:
    """The last-resort 500 as JSON (Starlette still logs the exception and re-raises it)."""
    return error_response(
        IngestError(500, "internal_error", "the request could not be processed")
    )


class ServiceApp(Starlette):
    """Starlette for health, mounts and errors; the tracking API and webhook are dispatched
    to `Ingest` before the framework's middleware and router (they answer every error
    themselves, as JSON ``{code, message}``)."""

    def __init__(self, ingest: Ingest, **options: Any) -> None:
        super().__init__(**options)
        self.ingest = ingest

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = route_path(scope)
            if self.ingest.owns(path):
                scope["app"] = self
                started = time.perf_counter()
                await self.ingest.handle(path, scope, receive, send)
                timer = INGEST_TRACKING if path.startswith("/v1/") else INGEST_WEBHOOK
                timer.observe(time.perf_counter() - started)
                return
        await super().__call__(scope, receive, send)


def health_routes(store: Store) -> list[Route]:
    """``GET /healthz`` (the process answers) and ``GET /readyz`` (the store is writable)."""

    async def healthz(request: Request) -> Response:
        return json_response({"status": "alive"})

    async def readyz(request: Request) -> Response:
        try:
            await asyncio.get_running_loop().run_in_executor(None, store.ping)
        except StoreError as exc:
            return json_response({"code": "store_unavailable", "message": exc.message}, 503)
        return json_response({"status": "ready"})

    return [Route("/healthz", healthz, methods=["GET"]), Route("/readyz", readyz, methods=["GET"])]


def build_worker_app(
    settings: Settings,
    store: Store,
    *,
    now: Callable[[], float] = time.time,
    transport: httpx2.AsyncBaseTransport | None = None,
) -> Starlette:
    """The `worker` role: delivery (and housekeeping) only; HTTP serves just ``/healthz``,
    ``/readyz`` and ``/metrics``, never the tracking API. The store must be open."""
    engine = DeliveryEngine.from_settings(settings, store, now=now, transport=transport)
    housekeeper = Housekeeper(store, dedup_days=settings.store.dedup_days, now=now)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        housekeeper.start()
        delivery = DeliveryThread(engine)
        delivery.start()
        try:
            yield
        finally:
            await delivery.stop()
            await housekeeper.stop()
            if getattr(app.state, "owns_store", False):
                store.close()

    app = Starlette(
        routes=[*health_routes(store), *metrics_routes(store, settings)],
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
    )
    without_slash_redirects(app)
    app.state.store = store
    app.state.settings = settings
    app.state.engine = engine
    return app


def build_app(
    settings: Settings,
    store: Store,
    *,
    now: Callable[[], float] = time.time,
    deliver: bool | None = None,
    transport: httpx2.AsyncBaseTransport | None = None,
    mounts: Sequence[Mount] = (),
) -> ServiceApp:
    """The ASGI application: tracking API, webhook, health, the admin API (admin/app.py), and
    delivery in the background.

    The store must be open. `deliver` defaults to ``settings.delivery.enabled``; `transport`
    lets the Freshsales client reach an in-process sandbox.
    """
    engine: DeliveryEngine | None = None
    if deliver if deliver is not None else settings.delivery.enabled:
        engine = DeliveryEngine.from_settings(settings, store, now=now, transport=transport)
    server = settings.server
    counters = IngestCounters()
    committer = GroupCommitter(
        store, window=server.commit_window, max_pending=server.max_pending_messages,
        writers=getattr(store, "concurrent_commits", 1),
    )
    sorting = InboxSorting(
        store,
        Sorter(max_message_bytes=server.max_message_bytes, counters=counters),
        policy=SortPolicy(
            idle_after=server.sort_idle_after,
            busy_share=server.sort_busy_share,
            chunk_messages=server.sort_chunk_messages,
            max_unsorted=server.max_unsorted_messages,
        ),
        activity=committer.last_activity,
    )
    committer.sorting = sorting
    ingest = Ingest(
        registry=SourceRegistry(settings),
        committer=committer,
        limits=server,
        counters=counters,
        now=now,
    )

    housekeeper = Housekeeper(store, dedup_days=settings.store.dedup_days, now=now)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await committer.start()
        await sorting.start()
        housekeeper.start()
        delivery = DeliveryThread(engine) if engine is not None else None
        if delivery is not None:
            delivery.start()
        try:
            yield
        finally:
            if delivery is not None:
                await delivery.stop()
            await housekeeper.stop()
            await committer.stop()
            await sorting.stop()
            if getattr(app.state, "owns_store", False):
                store.close()

    app = ServiceApp(
        ingest,
        routes=[
            *health_routes(store),
            *metrics_routes(store, settings),
            *AnalyticsJs(settings.browser.analytics_js_path, ingest.registry).routes(),
            *operations_routes(settings, store, now=now),
            *mounts,
        ],
        lifespan=lifespan,
        # Every error answer of the service is JSON {code, message}; a mounted sandbox keeps
        # its own handlers (and Freshsales' shapes).
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
    )
    without_slash_redirects(app)  # no redirect built from the Host header: unknown is 404
    app.state.ingest = ingest
    app.state.committer = committer
    app.state.sorting = sorting
    app.state.store = store
    app.state.settings = settings
    app.state.engine = engine
    return app


SECRETS_FILE = "embedded-secrets.json"


def _load_or_create_secrets(data_dir: Path) -> tuple[dict[str, str], bool]:
    """The embedded mode's generated keys, kept (mode 0600) so a restart keeps them; and
    whether they were generated just now.

    A file that exists but cannot be used stops the start (`ConfigError`): generating new keys
    over it would silently lock out every client holding the old write key.
    """
    path = data_dir / SECRETS_FILE
    private_dir(data_dir)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        keys = {name: f"{prefix}_{secrets.token_urlsafe(18)}" for name, prefix in _SECRET_NAMES.items()}
        write_private(path, json.dumps(keys).encode())
        return keys, True
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ConfigError(_damaged(path, "it is not valid JSON")) from None
    if not isinstance(data, dict):
        raise ConfigError(_damaged(path, "it is not a JSON object"))
    missing = [name for name in _SECRET_NAMES if not isinstance(data.get(name), str) or not data[name]]
    if missing:
        raise ConfigError(_damaged(path, f"it lacks {', '.join(missing)}"))
    if stat.S_IMODE(path.stat().st_mode) != FILE_MODE:
        os.chmod(path, FILE_MODE)
    return {name: data[name] for name in _SECRET_NAMES}, False


def embedded_keys(data_dir: Path) -> dict[str, str]:
    """The embedded mode's keys under `data_dir` (made on first use, as `serve` makes them)."""
    return _load_or_create_secrets(data_dir)[0]


def _damaged(path: Path, why: str) -> str:
    return (
        f"{path} is damaged ({why}). Restore it from a backup; or move it away to have new keys "
        "generated, knowing that clients still sending the old write key will then be refused."
    )


_SECRET_NAMES = {
    "write_key": "wk",
    "sandbox_api_key": "sbk",
    "sandbox_app_token": "sbt",
    "admin_token": "adm",
}


def embedded_settings(
    data_dir: Path,
    host: str | None,
    port: int | None,
    keys: dict[str, str],
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Settings of the zero-configuration mode: SQLite under `data_dir`, the built-in sandbox.

    ``FSD_*`` variables apply as with a configuration file (server, store, delivery), and
    `host` and `port` (the command line's) over them. The source and the sandbox destination
    are the embedded mode's own: an override of them is refused, naming the variable.
    """
    environ = os.environ if environ is None else environ
    for name in sorted(environ):
        if name.startswith((f"{ENV_PREFIX}SOURCES", f"{ENV_PREFIX}DESTINATIONS")):
            raise ConfigError(
                f"{name}: without --config the source and the sandbox destination are "
                "generated; use a configuration file (--config) to set your own"
            )
    data: dict[str, Any] = {
        "server": {"admin_token": keys["admin_token"]},
        "store": {"url": f"sqlite:///{data_dir / 'queue.db'}"},
        "sources": [
            {"write_key": keys["write_key"], "destination": "sandbox", "name": "default"}
        ],
        "destinations": {
            "sandbox": {
                "product": "suite",
                # Reached in-process (ASGI transport); the host name is never resolved.
                "base_url": "http://embedded-sandbox/crm/sales",
                "allow_custom_base_url": True,
                "api_key": keys["sandbox_api_key"],
                "app_token": keys["sandbox_app_token"],
            }
        },
    }
    data = apply_env_overrides(data, environ)
    server = data["server"] if isinstance(data.get("server"), dict) else {}
    if host is not None:
        server["host"] = host
    if port is not None:
        server["port"] = port
    return settings_from_dict(data)


def build_embedded_app(
    data_dir: Path,
    host: str | None = None,
    port: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[Starlette, dict[str, str]]:
    """The whole product in one process: ingest, delivery, and the sandbox as Freshsales.

    `host` and `port` override ``server.host`` and ``server.port`` (defaults, then ``FSD_*``
    variables from `environ`, by default the process's); ``app.state.settings.server`` holds
    the address to serve on. ``app.state.secrets_created`` tells whether the keys were
    generated by this call (first start), ``app.state.secrets_path`` where they are kept.
    """
    keys, created = _load_or_create_secrets(data_dir)
    settings = embedded_settings(data_dir, host, port, keys, environ)
    sandbox = embedded_sandbox(data_dir, keys["sandbox_api_key"], keys["sandbox_app_token"])
    store = open_store(settings.store.url, pool_size=settings.store.pool_size)
    app = build_app(
        settings,
        store,
        transport=httpx2.ASGITransport(app=sandbox),
        mounts=[Mount("/sandbox", app=sandbox)],
    )
    app.state.secrets_created = created
    app.state.secrets_path = data_dir / SECRETS_FILE
    return app, keys


def embedded_sandbox(data_dir: Path, api_key: str, app_token: str) -> Any:
    """The embedded service's sandbox (an ASGI app over ``sandbox.db`` in `data_dir`): what
    its destination reaches in-process, and what `check` without --config reaches too."""
    from freshsales_destination.sandbox import SandboxOptions
    from freshsales_destination.sandbox import build_app as build_sandbox

    return build_sandbox(
        SandboxOptions(
            api_key=api_key, app_token=app_token, product="suite",
            data_path=data_dir / "sandbox.db",
        )
    )


def mask(secret: str) -> str:
    """The first four characters of a secret and an ellipsis."""
    return secret[:4] + "…"


def _banner(
    host: str, port: int, keys: dict[str, str], secrets_path: Path, *, show_key: bool
) -> str:
    """The start-up text. The write key and the admin token appear in full only when
    `show_key` (first start, or a terminal): otherwise stdout may end in a log (journald), so
    they are masked."""
    url = f"http://{host}:{port}"
    file = shlex.quote(str(secrets_path))

    def from_file(name: str) -> str:
        return f"$(python3 -c \"import json;print(json.load(open({str(secrets_path)!r}))['{name}'])\")"

    if show_key:
        key_line = (
            f"  write key: {keys['write_key']} (kept in {file})\n"
            f"  admin token: {keys['admin_token']} (for /admin/v1 and /dashboard)\n"
        )
        write_key = keys["write_key"]
        admin_token = keys["admin_token"]
    else:
        key_line = (
            f"  write key: {mask(keys['write_key'])} (in full in {file})\n"
            f"  admin token: {mask(keys['admin_token'])} (in full in {file})\n"
        )
        write_key = from_file("write_key")
        admin_token = from_file("admin_token")
    return (
        "\nfreshsales-destination is running on embedded defaults:\n"
        f"  store    SQLite in {shlex.quote(str(secrets_path.parent))}, "
        "Freshsales = the built-in sandbox at /sandbox\n"
        f"{key_line}\n"
        "Send an event:\n"
        f"  curl -s -u \"{write_key}:\" -H 'Content-Type: application/json' \\\n"
        f"    -d '{{\"userId\":\"u1\",\"traits\":{{\"email\":\"ada@example.com\","
        f"\"firstName\":\"Ada\"}}}}' {url}/v1/identify\n"
        f"See it in the CRM (sandbox API key in {file}):\n"
        f"  curl -s -H \"Authorization: Token token={from_file('sandbox_api_key')}\" "
        f"{url}/sandbox/_sandbox/state\n"
        "What happened to it (the admin API; the dashboard logs in with the same token):\n"
        f"  curl -s -H \"Authorization: Bearer {admin_token}\" {url}/admin/v1/messages\n"
    )


def _printable(text: str) -> str:
    """`text` as stdout can encode it (the ellipsis becomes ``...`` on a non-UTF-8 stdout)."""
    encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
    try:
        text.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return text.replace("…", "...")
    return text


def _isatty() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):  # replaced or closed stdout
        return False


ROLES = ("all", "ingest", "worker")


def serve_command(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="TOML configuration file; none = embedded defaults."),
    ] = None,
    host: Annotated[str | None, typer.Option(help="Override server.host.")] = None,
    port: Annotated[int | None, typer.Option(help="Override server.port.")] = None,
    role: Annotated[
        str | None,
        typer.Option(
            help="Override server.role: all (ingest and delivery, the default), ingest (the "
            "tracking API and sorting, no delivery) or worker (delivery only; HTTP serves "
            "just /healthz, /readyz and /metrics). Any number of each on one PostgreSQL store.",
        ),
    ] = None,
    data_dir: Annotated[
        Path, typer.Option(help="Where embedded defaults keep their files (no --config).")
    ] = Path("data"),
    log_format: Annotated[
        str | None,
        typer.Option(
            help="console or json (default: console when stderr is a terminal, json "
            "otherwise). uvicorn's lines use the same format.",
        ),
    ] = None,
    log_level: Annotated[
        str, typer.Option(help="debug, info, warning or error.")
    ] = "info",
) -> None:
    """Run the ingest API and delivery (or one of them: --role). Without --config: embedded
    store and sandbox CRM."""
    if log_format is not None and log_format not in LOG_FORMATS:
        typer.echo(f"error: --log-format must be one of {', '.join(LOG_FORMATS)}", err=True)
        raise typer.Exit(2)
    if log_level.lower() not in LOG_LEVELS:
        typer.echo(f"error: --log-level must be one of {', '.join(LOG_LEVELS)}", err=True)
        raise typer.Exit(2)
    # One renderer for every line (ours and uvicorn's); request lines of the HTTP client may
    # carry people's emails (lookups), so it stays at warning (observe/logs.py).
    configure_logging(log_format, log_level)
    uvicorn_logs: dict[str, Any] = {"log_config": None, "log_level": log_level.lower()}
    if role is not None and role not in ROLES:
        typer.echo(f"error: --role must be one of {', '.join(ROLES)}", err=True)
        raise typer.Exit(2)
    if config is None:
        try:
            app, keys = build_embedded_app(data_dir, host, port)
            if (role or app.state.settings.server.role) != "all":
                app.state.store.close()
                raise ConfigError(
                    "server.role: without --config everything runs in one process (role all); "
                    "ingest and worker roles need a configuration file (--config)"
                )
        except FreshsalesDestinationError as exc:
            typer.echo(f"error: {exc.message}", err=True)
            raise typer.Exit(2) from None
        bind_host, bind_port = app.state.settings.server.host, app.state.settings.server.port
        # Printed, never logged. In full only on first start or on a terminal: a service's
        # stdout usually ends up in its log (journald).
        show_key = bool(app.state.secrets_created) or _isatty()
        typer.echo(_printable(
            _banner(bind_host, bind_port, keys, app.state.secrets_path, show_key=show_key)
        ))
        try:
            uvicorn.run(
                app, host=bind_host, port=bind_port, access_log=False, **uvicorn_logs,
                proxy_headers=app.state.settings.server.trust_proxy,
            )
        finally:
            app.state.store.close()
        return
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    role = role or settings.server.role
    problem = _role_problem(settings, role)
    if problem:
        typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(2)
    try:
        # Also creates or migrates the schema.
        store = open_store(settings.store.url, pool_size=settings.store.pool_size)
        app = _build_role_app(settings, store, role, single=settings.server.workers == 1)
    except FreshsalesDestinationError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    bind_host = host or settings.server.host
    bind_port = port if port is not None else settings.server.port
    if settings.server.workers > 1:
        # Each process opens the store itself; they coordinate through it (SQLite's write
        # lock, lanes and leases, the shared budget).
        store.close()
        os.environ[CONFIG_ENV] = str(config.resolve())
        os.environ[ROLE_ENV] = role
        # A scrape reaches any one process: each counts into this directory and /metrics
        # sums them all (observe/metrics.py).
        metrics_dir = tempfile.mkdtemp(prefix="freshsales-destination-metrics-")
        os.environ[MULTIPROC_ENV] = metrics_dir
        try:
            uvicorn.run(
                f"{__name__}:app_factory", factory=True, workers=settings.server.workers,
                host=bind_host, port=bind_port, access_log=False, **uvicorn_logs,
                proxy_headers=settings.server.trust_proxy,
            )
        finally:
            shutil.rmtree(metrics_dir, ignore_errors=True)
        return
    try:
        # X-Forwarded-* are believed only with server.trust_proxy (uvicorn's own reading of
        # them would otherwise change the scheme of requests from 127.0.0.1).
        uvicorn.run(
            app, host=bind_host, port=bind_port, access_log=False, **uvicorn_logs,
            proxy_headers=settings.server.trust_proxy,
        )
    finally:
        store.close()


def _role_problem(settings: Settings, role: str) -> str | None:
    """Why `settings` cannot run `role`, or None."""
    if role != "worker" and not settings.sources:
        return "sources: at least one [[sources]] table is required"
    if role == "worker":
        if not settings.delivery.enabled:
            return "server.role is worker but delivery.enabled is false: a worker only delivers"
        if not settings.destinations:
            return "destinations: a worker needs at least one [destinations.*] table"
    return None


def _build_role_app(settings: Settings, store: Store, role: str, *, single: bool) -> Starlette:
    if role == "worker":
        return build_worker_app(settings, store)
    # Role "all" delivers when delivery is enabled; "ingest" never. With several serving
    # processes (server.workers > 1) each builds its own app in `app_factory`.
    return build_app(settings, store, deliver=role == "all" and settings.delivery.enabled and single)


CONFIG_ENV = "FRESHSALES_DESTINATION_CONFIG"
ROLE_ENV = "FRESHSALES_DESTINATION_ROLE"


def app_factory() -> Starlette:
    """The app of one serving process when `server.workers` > 1 (configuration from the env)."""
    configure_from_env()
    settings = load_settings(Path(os.environ[CONFIG_ENV]))
    role = os.environ.get(ROLE_ENV) or settings.server.role
    store = open_store(settings.store.url, pool_size=settings.store.pool_size)
    app = _build_role_app(settings, store, role, single=True)
    app.state.owns_store = True
    return app
