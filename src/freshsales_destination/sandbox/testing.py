"""Serve the sandbox on a real port for tests: ``with running_sandbox(options) as sandbox: ...``."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.applications import Starlette

from freshsales_destination.sandbox.app import build_app
from freshsales_destination.sandbox.clock import Clock
from freshsales_destination.sandbox.errors import ConnectionDropped, SandboxError
from freshsales_destination.sandbox.options import SandboxOptions
from freshsales_destination.sandbox.state import SandboxState


class _DropFilter(logging.Filter):
    """Keep uvicorn from printing a traceback for each connection dropped on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, ConnectionDropped)


def quiet_dropped_connections() -> None:
    target = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _DropFilter) for f in target.filters):
        target.addFilter(_DropFilter())


@dataclass
class RunningSandbox:
    """A sandbox served by uvicorn in a background thread."""

    app: Starlette
    host: str
    port: int
    product: str

    @property
    def root_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What a client configures: ``/crm/sales`` appended for Suite, the bare host for Classic."""
        return self.root_url + ("/crm/sales" if self.product == "suite" else "")

    @property
    def tracking_url(self) -> str:
        return self.base_url

    @property
    def state(self) -> SandboxState:
        state: SandboxState = self.app.state.sandbox
        return state

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Token token={self.state.options.api_key}"}

    def request_log(self, *, include_admin: bool = False) -> list[dict[str, Any]]:
        with self.state.lock:
            return [e.to_json() for e in self.state.requests if include_admin or not e.admin]

    def api_call_count(self) -> int:
        return self.state.api_call_count()

    def reset(self) -> None:
        self.state.reset()

    def salesperson_edit(
        self, kind: str, record_id: int, *, custom_field: dict[str, Any] | None = None,
        sales_accounts: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Play a salesperson editing a record in the web app (no API call, no budget)."""
        from freshsales_destination.sandbox.crm_user import salesperson_edit

        return salesperson_edit(self.state, kind, record_id, custom_field=custom_field,
                                sales_accounts=sales_accounts)


def _free_socket(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.listen(128)
    return sock


@contextmanager
def running_sandbox(
    options: SandboxOptions | None = None, *, clock: Clock | None = None, startup_timeout: float = 10.0
) -> Iterator[RunningSandbox]:
    """Serve a fresh sandbox on 127.0.0.1 on a free port until the block exits."""
    options = options or SandboxOptions()
    host = "127.0.0.1"
    app = build_app(options, clock)
    sock = _free_socket(host)
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, host=host, port=port, log_config=None, log_level="warning", access_log=False,
                            lifespan="off", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    quiet_dropped_connections()
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="sandbox", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise SandboxError("the sandbox server did not start")
        time.sleep(0.01)
    try:
        yield RunningSandbox(app=app, host=host, port=port, product=options.product)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        store = app.state.sandbox.store
        if store is not None:
            store.close()
