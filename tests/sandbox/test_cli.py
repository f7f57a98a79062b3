from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import pytest
import typer
from typer.testing import CliRunner

from freshsales_destination.sandbox.cli import sandbox_command


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()
    app.command("sandbox")(sandbox_command)
    app.command("noop")(lambda: None)
    return app


def test_help_lists_the_flags(app: typer.Typer) -> None:
    result = CliRunner().invoke(app, ["sandbox", "--help"], terminal_width=200)
    assert result.exit_code == 0
    for flag in ("--host", "--port", "--api-key", "--app-token", "--product", "--data", "--retry-after",
                 "--rate-limit-per-hour", "--rate-limit-per-minute", "--lenient", "--seed", "--error-rate",
                 "--tracking-api"):
        assert flag in result.output


def test_bad_product_and_seed_are_refused(app: typer.Typer, tmp_path) -> None:
    assert CliRunner().invoke(app, ["sandbox", "--product", "other"]).exit_code != 0
    assert CliRunner().invoke(app, ["sandbox", "--tracking-api", "maybe"]).exit_code != 0
    bad = tmp_path / "seed.toml"
    bad.write_text("[[contacts]]\nname = 'oops'\n")
    result = CliRunner().invoke(app, ["sandbox", "--seed", str(bad)])
    assert result.exit_code == 2 and "cf_" in result.output


def test_bad_error_body_and_status_are_refused(app: typer.Typer) -> None:
    result = CliRunner().invoke(app, ["sandbox", "--error-body", "html"])
    assert result.exit_code != 0 and "--error-body" in result.output
    result = CliRunner().invoke(app, ["sandbox", "--error-status", "404"])
    assert result.exit_code != 0 and "--error-status" in result.output


def test_console_script_serves_the_transient_500_when_asked() -> None:
    """The real console script, over HTTP: every call answers Freshsales' transient 500."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    script = Path(sys.executable).with_name("freshsales-destination")
    process = subprocess.Popen(
        [str(script), "sandbox", "--port", str(port), "--error-rate", "1",
         "--error-status", "500", "--error-body", "errors.message"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        auth = {"Authorization": "Token token=sandbox-api-key"}
        deadline = time.monotonic() + 60
        while True:
            try:
                faults = httpx2.get(f"{url}/_sandbox/faults", headers=auth, timeout=5).json()["faults"]
                break
            except httpx2.TransportError:
                assert process.poll() is None, "the sandbox exited"
                assert time.monotonic() < deadline, "the sandbox did not start"
                time.sleep(0.1)
        assert faults["error_body"] == "errors.message" and faults["error_statuses"] == [500]
        answer = httpx2.get(f"{url}/crm/sales/api/selector/owners", headers=auth, timeout=5)
        assert answer.status_code == 500
        assert answer.json() == {
            "errors": {"code": 500, "message": ["Something went wrong. Please try again later."]}
        }
    finally:
        process.terminate()
        process.wait(timeout=30)
