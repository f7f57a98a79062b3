"""The README's first command: `serve` with no configuration shows events reaching a CRM."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import pytest
import uvicorn

from freshsales_destination import service
from tests.support.server import free_port

pytestmark = pytest.mark.slow


def _start(cwd: Path, port: int) -> subprocess.Popen[str]:
    """`serve` with no configuration, stdout and stderr on pipes (not a terminal)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FSD_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "freshsales_destination", "serve", "--port", str(port)],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
        encoding="utf-8",
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            if httpx2.get(f"{base}/healthz").status_code == 200:
                return proc
        except httpx2.TransportError:
            pass
        if time.monotonic() >= deadline or proc.poll() is not None:
            proc.kill()
            out, err = proc.communicate(timeout=15)
            raise AssertionError(f"the service did not start:\n{out}\n{err}")
        time.sleep(0.1)


def _stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    proc.terminate()
    out, err = proc.communicate(timeout=15)
    return out, err


def test_serve_without_config_delivers_to_the_builtin_sandbox(tmp_path: Path) -> None:
    port = free_port()
    proc = _start(tmp_path, port)
    try:
        base = f"http://127.0.0.1:{port}"
        secrets_ = json.loads((tmp_path / "data" / "embedded-secrets.json").read_text())
        write_key = secrets_["write_key"]
        assert (tmp_path / "data" / "embedded-secrets.json").stat().st_mode & 0o077 == 0
        response = httpx2.post(
            f"{base}/v1/identify",
            json={"userId": "u1", "traits": {"email": "ada@example.com", "firstName": "Ada"}},
            auth=(write_key, ""),
        )
        assert response.status_code == 200 and response.json() == {"success": True}
        headers = {"Authorization": f"Token token={secrets_['sandbox_api_key']}"}
        # The mounted sandbox asks for its key like the standalone one.
        assert httpx2.get(f"{base}/sandbox/_sandbox/state").status_code == 401
        assert httpx2.get(f"{base}/sandbox/crm/sales/api/contacts/1").status_code == 401
        contacts: list[dict[str, object]] = []
        deadline = time.monotonic() + 20
        while not contacts and time.monotonic() < deadline:
            state = httpx2.get(f"{base}/sandbox/_sandbox/state", headers=headers).json()
            contacts = state["records"]["contacts"]
            time.sleep(0.2)
        assert contacts and contacts[0]["first_name"] == "Ada"
        assert httpx2.get(f"{base}/readyz").status_code == 200
    finally:
        out, err = _stop(proc)
    # At first start the write key is shown on stdout, never in the log (stderr).
    assert len(re.findall(re.escape(write_key), out)) >= 1
    assert write_key not in err
    assert secrets_["sandbox_api_key"] not in err

    # A restart (same data directory, stdout not a terminal): the same keys, masked on stdout.
    port = free_port()
    proc = _start(tmp_path, port)
    try:
        response = httpx2.post(
            f"http://127.0.0.1:{port}/v1/identify",
            json={"userId": "u2", "traits": {"email": "bob@example.com"}}, auth=(write_key, ""),
        )
        assert response.status_code == 200
    finally:
        out, err = _stop(proc)
    assert json.loads((tmp_path / "data" / "embedded-secrets.json").read_text()) == secrets_
    assert write_key not in out and write_key not in err
    assert secrets_["sandbox_api_key"] not in out + err
    assert f"write key: {write_key[:4]}…" in out
    assert str(Path("data") / "embedded-secrets.json") in out


def _serve_in_process(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], data_dir: Path,
    *, tty: bool,
) -> str:
    """Run `serve_command` without a server; what it printed."""
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: None)
    monkeypatch.setattr(service, "_isatty", lambda: tty)
    service.serve_command(config=None, host=None, port=free_port(), data_dir=data_dir)
    return capsys.readouterr().out


def test_the_write_key_is_masked_on_a_restart_unless_stdout_is_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    data_dir = tmp_path / "state"
    first = _serve_in_process(monkeypatch, capsys, data_dir, tty=False)
    kept = json.loads((data_dir / "embedded-secrets.json").read_text())
    key, admin = kept["write_key"], kept["admin_token"]
    assert key in first and admin in first  # generated just now: shown once
    again = _serve_in_process(monkeypatch, capsys, data_dir, tty=False)
    assert key not in again and admin not in again
    assert f"{key[:4]}…" in again and str(data_dir / "embedded-secrets.json") in again
    assert f"admin token: {admin[:4]}…" in again
    on_terminal = _serve_in_process(monkeypatch, capsys, data_dir, tty=True)
    assert key in on_terminal and admin in on_terminal
    assert key not in caplog.text and admin not in caplog.text  # never logged
