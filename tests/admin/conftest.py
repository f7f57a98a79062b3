"""An admin test's service: ingest over real HTTP (uvicorn), delivery run on demand into the
sandbox, and the admin API on the same app, with a configured admin token."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
from pydantic import SecretStr

from freshsales_destination.config import Settings
from freshsales_destination.sandbox import SandboxOptions
from freshsales_destination.sandbox.testing import running_sandbox
from freshsales_destination.service import build_app
from freshsales_destination.store.sqlite import SQLiteStore
from tests.delivery.conftest import API_KEY, APP_TOKEN, Pipeline, delivery_settings
from tests.support.server import serve_in_thread

ADMIN_TOKEN = "adm_test_0123456789abcdef"


def with_admin_token(settings: Settings, token: str | None = ADMIN_TOKEN) -> Settings:
    server = settings.server.model_copy(
        update={"admin_token": SecretStr(token) if token is not None else None}
    )
    return settings.model_copy(update={"server": server})


@dataclass
class Admin:
    """The pipeline and an admin client (Bearer token) of the same service."""

    pipeline: Pipeline
    client: httpx2.Client

    @property
    def url(self) -> str:
        return self.pipeline.ingest_url

    def get(self, path: str, **params: Any) -> httpx2.Response:
        return self.client.get(path, params=params)

    def ok(self, path: str, **params: Any) -> Any:
        response = self.get(path, **params)
        assert response.status_code == 200, response.text
        return response.json()

    def post(self, path: str, body: Any) -> httpx2.Response:
        return self.client.post(path, json=body)

    def script(self, method: str, path: str, *answers: dict[str, Any]) -> None:
        sandbox = self.pipeline.sandbox
        response = httpx2.post(
            f"{sandbox.root_url}/_sandbox/script", headers=sandbox.auth_headers,
            json={"method": method, "path": path, "responses": list(answers)},
        )
        assert response.status_code == 200, response.text


def make_admin(tmp_path: Path, token: str | None = ADMIN_TOKEN) -> Iterator[Admin]:
    options = SandboxOptions(api_key=API_KEY, app_token=APP_TOKEN, product="suite")
    with running_sandbox(options) as sandbox:
        settings = with_admin_token(
            delivery_settings(tmp_path / "q.db", sandbox.base_url), token
        )
        store = SQLiteStore(tmp_path / "q.db")
        store.open()
        app = build_app(settings, store, deliver=False)
        with serve_in_thread(app) as url, httpx2.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}
        ) as client:
            yield Admin(Pipeline(url, store, settings, sandbox, app), client)
        store.close()


@pytest.fixture
def admin(tmp_path: Path) -> Iterator[Admin]:
    yield from make_admin(tmp_path)
