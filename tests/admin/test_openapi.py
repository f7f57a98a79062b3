"""/admin/v1/openapi.json: a valid OpenAPI document, behind the token, describing every
mounted admin route (and nothing under /admin/v1 that is not mounted) and the ingest API."""

from __future__ import annotations

import re
from pathlib import Path

import httpx2
import pytest
from openapi_spec_validator import validate
from starlette.routing import Route

from freshsales_destination.admin.app import operations_routes
from tests.admin.conftest import ADMIN_TOKEN, Admin
from tests.admin.openapi_check import assert_conforms
from tests.delivery.conftest import WRITE_KEY
from tests.ingest.conftest import make_settings

BEARER = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def served(admin: Admin) -> dict[str, object]:
    response = admin.get("/admin/v1/openapi.json")
    assert response.status_code == 200, response.text
    document: dict[str, object] = response.json()
    return document


def mounted_admin_routes(admin: Admin) -> set[tuple[str, str]]:
    """(path template, method) of every route the running app mounts under /admin/v1."""
    found = set()
    for route in admin.pipeline.app.routes:
        if isinstance(route, Route) and route.path.startswith("/admin/v1/"):
            for method in route.methods or ():
                if method != "HEAD":
                    found.add((route.path, method.lower()))
    return found


def test_the_document_is_valid_openapi(admin: Admin) -> None:
    document = served(admin)
    validate(document)
    assert document["openapi"] == "3.1.0"
    assert_conforms(document, "/admin/v1/openapi.json")


def test_it_is_behind_the_token(admin: Admin) -> None:
    response = httpx2.get(f"{admin.url}/admin/v1/openapi.json")
    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized"


def test_every_mounted_admin_route_is_described_and_nothing_more(admin: Admin) -> None:
    document = served(admin)
    paths = document["paths"]
    assert isinstance(paths, dict)
    described = {
        (path, method) for path, item in paths.items() if path.startswith("/admin/v1/")
        for method in item
    }
    mounted = mounted_admin_routes(admin)
    assert len(mounted) >= 9
    assert mounted == described


def test_operations_routes_are_all_under_admin_or_described(tmp_path: Path) -> None:
    """What admin/app.py mounts (also later additions: the dashboard, /metrics) is either in
    the description or outside /admin/v1 (HTML pages and Prometheus' text are not JSON APIs)."""
    settings = make_settings(tmp_path / "q.db")
    from freshsales_destination.admin.openapi import spec
    from freshsales_destination.store.sqlite import SQLiteStore

    store = SQLiteStore(tmp_path / "q.db")
    store.open()
    try:
        routes = operations_routes(settings, store)
    finally:
        store.close()
    paths = spec()["paths"]
    for route in routes:
        if isinstance(route, Route) and route.path.startswith("/admin/v1/"):
            assert route.path in paths, route.path


def test_every_described_ingest_path_exists(admin: Admin) -> None:
    """Each described non-admin path answers something other than 404 (and 405) on the app."""
    document = served(admin)
    paths = document["paths"]
    assert isinstance(paths, dict)
    ingest = [p for p in paths if not p.startswith("/admin/")]
    assert {"/v1/identify", "/v1/batch", "/webhook/{writeKey}", "/healthz"} <= set(ingest)
    for path in ingest:
        concrete = re.sub(r"\{[^}]+\}", WRITE_KEY, path)
        for method in paths[path]:
            response = httpx2.request(method.upper(), f"{admin.url}{concrete}",
                                      content=b"{}", headers={"Content-Type": "application/json"})
            assert response.status_code not in (404, 405), (method, path, response.text)


@pytest.mark.parametrize("path", ["/v1/identify", "/v1/track", "/v1/batch"])
def test_ingest_operations_use_the_write_key_not_the_admin_token(admin: Admin, path: str) -> None:
    document = served(admin)
    operation = document["paths"][path]["post"]  # type: ignore[index]
    assert {"writeKey": []} in operation["security"]
    response = httpx2.post(f"{admin.url}{path}", json={}, headers=BEARER)
    assert response.status_code == 401  # the admin token is no write key
