"""Every error answer of the service is JSON {code, message}, also outside /v1 and /webhook;
a mounted sandbox keeps Freshsales' shapes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from freshsales_destination.service import build_app, build_embedded_app
from freshsales_destination.store.sqlite import SQLiteStore
from tests.ingest.conftest import make_settings
from tests.support.server import free_port


async def _boom(request: Request) -> Response:
    raise RuntimeError("kaboom with a secret detail")


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    store = SQLiteStore(tmp_path / "q.db")
    store.open()
    extra = Mount("/extra", routes=[Route("/boom", _boom, methods=["GET"])])
    app = build_app(make_settings(tmp_path / "q.db"), store, deliver=False, mounts=[extra])
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client
    store.close()


def _is_code_message(response: Any) -> dict[str, str]:
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, str] = response.json()
    assert set(body) == {"code", "message"} and all(isinstance(v, str) and v for v in body.values())
    return body


@pytest.mark.parametrize("path", ["/", "/nope", "/healthz/extra", "/v2/track", "/admin",
                                  "/extra/nope", "/favicon.ico"])
def test_unknown_paths_are_json_404(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert _is_code_message(response) == {"code": "not_found", "message": "no such endpoint"}


@pytest.mark.parametrize(("method", "path"), [("POST", "/healthz"), ("DELETE", "/readyz"),
                                              ("PUT", "/healthz"), ("POST", "/extra/boom")])
def test_wrong_methods_are_json_405_with_allow(client: TestClient, method: str, path: str) -> None:
    response = client.request(method, path)
    assert response.status_code == 405
    body = _is_code_message(response)
    assert body["code"] == "method_not_allowed"
    assert "GET" in response.headers["allow"] and "GET" in body["message"]


def test_a_crash_is_a_json_500_without_details(client: TestClient) -> None:
    response = client.get("/extra/boom")
    assert response.status_code == 500
    body = _is_code_message(response)
    assert body["code"] == "internal_error" and "kaboom" not in response.text


def test_ingest_answers_are_unchanged(client: TestClient) -> None:
    assert client.get("/v1/track").json()["code"] == "method_not_allowed"
    assert client.post("/v1/nope").json() == {"code": "not_found", "message": "no such endpoint"}
    assert client.get("/healthz").json() == {"status": "alive"}


def test_the_mounted_sandbox_keeps_freshsales_shapes(tmp_path: Path) -> None:
    app, keys = build_embedded_app(tmp_path, "127.0.0.1", free_port())
    auth = {"Authorization": f"Token token={keys['sandbox_api_key']}"}
    try:
        with TestClient(app) as client:
            assert client.get("/sandbox/_sandbox/state").json() == {
                "login": "failed", "message": "Incorrect or expired API key"}
            missing = client.get("/sandbox/crm/sales/api/nothing-here", headers=auth)
            assert missing.status_code == 404 and "code" not in missing.json()
            outside = client.get("/nothing-here")
            assert outside.status_code == 404 and _is_code_message(outside)["code"] == "not_found"
    finally:
        app.state.store.close()
