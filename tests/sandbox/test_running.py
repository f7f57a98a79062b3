from __future__ import annotations

import time
from pathlib import Path

import httpx2
import pytest

from freshsales_destination.sandbox import SandboxOptions
from freshsales_destination.sandbox.testing import running_sandbox

OPTIONS = SandboxOptions(api_key="real-key", app_token="real-token")
AUTH = {"Authorization": "Token token=real-key"}


def test_real_server_suite_round_trip_and_counts() -> None:
    with running_sandbox(OPTIONS) as sandbox:
        assert sandbox.base_url == sandbox.root_url + "/crm/sales"
        with httpx2.Client(base_url=sandbox.base_url, headers=AUTH, timeout=5) as client:
            created = client.post("/api/contacts/upsert", json={"unique_identifier": {"emails": "r@x.io"},
                                                                 "contact": {"first_name": "R"}})
            assert created.status_code == 200 and "x-ratelimit-limit" in created.headers
            assert client.get(f"/api/contacts/{created.json()['contact']['id']}").status_code == 200
            tracked = client.post("/track/events", json={"application_token": "real-token", "sdk": "python",
                                                          "identifier": "r@x.io", "event": {"name": "e"}})
            assert tracked.status_code == 200
            admin = httpx2.get(sandbox.root_url + "/_sandbox/requests", headers=AUTH, timeout=5).json()
        assert admin["api_call_count"] == 3
        assert sandbox.api_call_count() == 3
        assert [e["route"] for e in sandbox.request_log()] == [
            "/api/contacts/upsert", "/api/contacts/70000000001", "/track/events"]
        assert len(sandbox.request_log(include_admin=True)) == 4
        assert len(sandbox.state.records["contacts"]) == 1


def test_real_server_classic_base_url_and_dropped_connection() -> None:
    with running_sandbox(OPTIONS.with_changes(product="classic")) as sandbox:
        assert sandbox.base_url == sandbox.root_url
        with httpx2.Client(base_url=sandbox.base_url, headers=AUTH, timeout=5) as client:
            client.post("/_sandbox/script", json={"path": "/api/leads", "responses": [{"action": "drop"}]})
            with pytest.raises(httpx2.TransportError):
                client.post("/api/leads", json={"lead": {"last_name": "L"}})
            ok = client.post("/api/leads", json={"lead": {"last_name": "L"}})
            assert ok.status_code == 200
        assert sandbox.state.requests[-2].outcome == "fault_drop"


def test_real_server_slow_answer_times_the_client_out() -> None:
    with running_sandbox(OPTIONS) as sandbox:
        with httpx2.Client(base_url=sandbox.base_url, headers=AUTH, timeout=0.2) as client:
            client.post("/_sandbox/script", json={"path": "/api/selector/owners",
                                                   "responses": [{"action": "slow", "seconds": 3}]})
            with pytest.raises(httpx2.TimeoutException):
                client.get("/api/selector/owners")


def test_sqlite_persistence_survives_restart(tmp_path: Path) -> None:
    options = OPTIONS.with_changes(data_path=tmp_path / "sandbox.db")
    with running_sandbox(options) as sandbox:
        with httpx2.Client(base_url=sandbox.base_url, headers=AUTH, timeout=5) as client:
            contact = client.post("/api/contacts", json={"contact": {"email": "keep@x.io"}}).json()["contact"]
            client.post("/api/sales_accounts", json={"sales_account": {"name": "Kept"}})
            gone = client.post("/api/contacts", json={"contact": {"email": "gone@x.io"}}).json()["contact"]
            client.delete(f"/api/contacts/{gone['id']}")
    with running_sandbox(options) as sandbox:
        with httpx2.Client(base_url=sandbox.base_url, headers=AUTH, timeout=5) as client:
            assert client.get(f"/api/contacts/{contact['id']}").json()["contact"]["email"] == "keep@x.io"
            assert client.get(f"/api/contacts/{gone['id']}").status_code == 404
            again = client.post("/api/sales_accounts", json={"sales_account": {"name": "Kept"}})
            assert again.status_code == 400
            new = client.post("/api/contacts", json={"contact": {"email": "new@x.io"}}).json()["contact"]
            assert new["id"] > gone["id"]


def test_slow_write_is_applied_after_the_client_gave_up() -> None:
    with running_sandbox(OPTIONS) as sandbox:
        with httpx2.Client(base_url=sandbox.base_url, headers=AUTH, timeout=0.2) as client:
            client.post("/_sandbox/script", json={"path": "/api/contacts", "responses": [
                {"action": "slow", "seconds": 0.5}]})
            with pytest.raises(httpx2.TimeoutException):
                client.post("/api/contacts", json={"contact": {"email": "late@x.io"}})
        deadline = time.monotonic() + 5
        while not sandbox.state.records["contacts"] and time.monotonic() < deadline:
            time.sleep(0.02)
        (contact,) = sandbox.state.records["contacts"].values()
        assert contact["email"] == "late@x.io"
        assert sandbox.request_log()[-1]["outcome"] == "scripted"
