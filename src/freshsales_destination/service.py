"""Assembles the running service: store, ingest, health routes and the ``serve`` command."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Annotated

import typer
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from freshsales_destination.config import Settings, load_settings
from freshsales_destination.errors import ConfigError, StoreError
from freshsales_destination.ingest.app import Ingest
from freshsales_destination.ingest.committer import GroupCommitter
from freshsales_destination.ingest.responses import json_response
from freshsales_destination.ingest.sources import SourceRegistry
from freshsales_destination.store.base import Store
from freshsales_destination.store.factory import open_store

log = logging.getLogger("freshsales_destination")


def build_app(
    settings: Settings,
    store: Store,
    *,
    now: Callable[[], float] = time.time,
) -> Starlette:
    """The ASGI application: tracking API, webhook, health. The store must be open."""
    committer = GroupCommitter(
        store,
        window=settings.server.commit_window,
        max_pending=settings.server.max_pending_messages,
    )
    ingest = Ingest(
        registry=SourceRegistry(settings), committer=committer, limits=settings.server, now=now
    )

    async def healthz(request: Request) -> Response:
        return json_response({"status": "alive"})

    async def readyz(request: Request) -> Response:
        try:
            await asyncio.get_running_loop().run_in_executor(None, store.ping)
        except StoreError as exc:
            return json_response({"code": "store_unavailable", "message": exc.message}, 503)
        return json_response({"status": "ready"})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await committer.start()
        try:
            yield
        finally:
            await committer.stop()

    app = Starlette(
        routes=[
            *ingest.routes(),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.ingest = ingest
    app.state.committer = committer
    app.state.store = store
    app.state.settings = settings
    return app


def serve_command(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="TOML configuration file; none = embedded defaults."),
    ] = None,
    host: Annotated[str | None, typer.Option(help="Override server.host.")] = None,
    port: Annotated[int | None, typer.Option(help="Override server.port.")] = None,
) -> None:
    """Run the ingest API (and delivery) on the configured store."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    if not settings.sources:
        typer.echo(
            "error: no [[sources]] configured; pass --config FILE (see README.md)", err=True
        )
        raise typer.Exit(2)
    store = open_store(settings.store.url)
    app = build_app(settings, store)
    bind_host = host or settings.server.host
    bind_port = port if port is not None else settings.server.port
    try:
        uvicorn.run(app, host=bind_host, port=bind_port, access_log=False, log_level="info")
    finally:
        store.close()
