from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from freshsales_destination.sandbox import FakeClock, SandboxOptions, build_app

KEY = "test-key"
TOKEN = "test-app-token"
AUTH = {"Authorization": f"Token token={KEY}"}


class Api:
    """A TestClient bound to one sandbox, with the auth header and the Suite prefix filled in."""

    def __init__(self, client: TestClient, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self.state = client.app.state.sandbox  # type: ignore[attr-defined]

    def call(self, method: str, path: str, json: Any = None, **kwargs: Any) -> Any:
        headers = {**AUTH, **kwargs.pop("headers", {})}
        url = path if path.startswith("/_sandbox") else self.prefix + path
        return self.client.request(method, url, json=json, headers=headers, **kwargs)

    def get(self, path: str, **kw: Any) -> Any:
        return self.call("GET", path, **kw)

    def post(self, path: str, json: Any = None, **kw: Any) -> Any:
        return self.call("POST", path, json, **kw)

    def put(self, path: str, json: Any = None, **kw: Any) -> Any:
        return self.call("PUT", path, json, **kw)

    def delete(self, path: str, **kw: Any) -> Any:
        return self.call("DELETE", path, **kw)


MakeApi = Callable[..., Api]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_api(clock: FakeClock) -> Iterator[MakeApi]:
    clients: list[TestClient] = []

    def make(prefix: str | None = None, **changes: Any) -> Api:
        options = SandboxOptions(api_key=KEY, app_token=TOKEN, **changes)
        client = TestClient(build_app(options, clock))
        clients.append(client)
        if prefix is None:
            prefix = "/crm/sales/api" if options.product == "suite" else "/api"
        return Api(client, prefix)

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def api(make_api: MakeApi) -> Api:
    return make_api()


@pytest.fixture
def classic(make_api: MakeApi) -> Api:
    return make_api(product="classic")
