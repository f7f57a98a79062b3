"""The sandbox mounted under a prefix (as the embedded service mounts it at /sandbox) asks for
the API key exactly as the standalone sandbox does."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from freshsales_destination import service
from freshsales_destination.sandbox import FakeClock, SandboxOptions, build_app
from freshsales_destination.sandbox.middleware import route_path
from tests.sandbox.conftest import AUTH, KEY, TOKEN
from tests.support.server import free_port

PROTECTED = [
    ("GET", "/_sandbox/state"),
    ("GET", "/_sandbox/requests"),
    ("POST", "/_sandbox/reset"),
    ("GET", "/crm/sales/api/contacts/1"),
    ("GET", "/api/contacts/1"),
    ("POST", "/crm/sales/api/contacts"),
    ("GET", "/crm/sales/api/settings/contacts/fields"),
]


def _new_contact(client: TestClient, prefix: str, headers: dict[str, str]) -> int:
    response = client.post(f"{prefix}/crm/sales/api/contacts",
                           json={"contact": {"first_name": "Ada", "email": "ada@x.io"}},
                           headers=headers)
    assert response.status_code in (200, 201), response.text
    return int(response.json()["contact"]["id"])


@pytest.fixture
def mounted() -> Iterator[TestClient]:
    sandbox = build_app(SandboxOptions(api_key=KEY, app_token=TOKEN, product="suite"), FakeClock())
    outer = Starlette(routes=[Mount("/sandbox", app=sandbox)])
    outer.state.sandbox = sandbox.state.sandbox
    with TestClient(outer) as client:
        yield client


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_a_mounted_sandbox_refuses_calls_without_the_key(
    mounted: TestClient, method: str, path: str
) -> None:
    response = mounted.request(method, "/sandbox" + path, json={})
    assert response.status_code == 401
    assert response.json() == {"login": "failed", "message": "Incorrect or expired API key"}
    wrong = mounted.request(method, "/sandbox" + path, json={},
                            headers={"Authorization": "Token token=guess"})
    assert wrong.status_code == 401


def test_a_mounted_sandbox_answers_with_the_key_and_logs_its_own_routes(
    mounted: TestClient,
) -> None:
    contact_id = _new_contact(mounted, "/sandbox", AUTH)
    got = mounted.get(f"/sandbox/crm/sales/api/contacts/{contact_id}", headers=AUTH)
    assert got.status_code == 200 and got.json()["contact"]["first_name"] == "Ada"
    state = mounted.get("/sandbox/_sandbox/state", headers=AUTH)
    assert state.status_code == 200 and len(state.json()["records"]["contacts"]) == 1
    entries = mounted.get("/sandbox/_sandbox/requests", headers=AUTH).json()["requests"]
    assert [(e["path"], e["kind"]) for e in entries][:2] == [
        ("/crm/sales/api/contacts", "api"), (f"/crm/sales/api/contacts/{contact_id}", "api")
    ]
    assert mounted.app.state.sandbox.api_call_count() == 2  # type: ignore[attr-defined]


def test_scripted_answers_match_the_route_under_a_mount(mounted: TestClient) -> None:
    script = {"method": "GET", "path": "/api/contacts/7",
              "responses": [{"status": 503, "body": {"errors": {"message": "scripted"}}}]}
    assert mounted.post("/sandbox/_sandbox/script", json=script, headers=AUTH).status_code < 300
    response = mounted.get("/sandbox/crm/sales/api/contacts/7", headers=AUTH)
    assert response.status_code == 503


@pytest.mark.parametrize(
    ("path", "root_path", "expected"),
    [
        ("/_sandbox/state", "", "/_sandbox/state"),
        ("/sandbox/_sandbox/state", "/sandbox", "/_sandbox/state"),
        ("/sandbox", "/sandbox", ""),
        ("/sandboxx/_sandbox/state", "/sandbox", "/sandboxx/_sandbox/state"),
        ("/_sandbox/state", "/sandbox", "/_sandbox/state"),  # servers that strip it themselves
    ],
)
def test_route_path_strips_the_mount_prefix_as_starlette_routes_it(
    path: str, root_path: str, expected: str
) -> None:
    scope = {"type": "http", "path": path, "root_path": root_path}
    assert route_path(scope) == expected
    from starlette._utils import get_route_path

    assert route_path(scope) == get_route_path(scope)


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    app, keys = service.build_embedded_app(tmp_path, "127.0.0.1", free_port())
    try:
        with TestClient(app) as client:
            yield client, keys
    finally:
        app.state.store.close()


def test_the_embedded_service_sandbox_needs_the_key(
    embedded: tuple[TestClient, dict[str, str]],
) -> None:
    client, keys = embedded
    headers = {"Authorization": f"Token token={keys['sandbox_api_key']}"}
    for path in ("/sandbox/_sandbox/state", "/sandbox/crm/sales/api/contacts/1",
                 "/sandbox/api/contacts/1", "/sandbox/_sandbox/requests"):
        assert client.get(path).status_code == 401, path
        assert client.get(path, headers={"Authorization": "Token token=guess"}).status_code == 401
        assert client.get(path, headers={"Authorization": f"Token token={keys['write_key']}"}
                          ).status_code == 401
    assert client.get("/sandbox/_sandbox/state", headers=headers).status_code == 200
    contact_id = _new_contact(client, "/sandbox", headers)
    got = client.get(f"/sandbox/crm/sales/api/contacts/{contact_id}", headers=headers)
    assert got.status_code == 200 and got.json()["contact"]["email"] == "ada@x.io"
