"""`serve` without a configuration honours FSD_* overrides like with one: the port it binds
and the one its banner prints are the overridden port; a bad override stops it, named."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import pytest

from tests.support.server import free_port

pytestmark = pytest.mark.slow


def _env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FSD_")}
    env.update(overrides)
    return env


def test_fsd_server_port_applies_without_a_configuration(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "freshsales_destination", "serve"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        encoding="utf-8", env=_env(FSD_SERVER__PORT=str(port), FSD_DELIVERY__WORKERS="2"),
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx2.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    break
            except httpx2.TransportError:
                pass
            assert proc.poll() is None, proc.communicate(timeout=10)
            assert time.monotonic() < deadline, "the service did not start on the port"
            time.sleep(0.1)
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=15)
    assert f"http://127.0.0.1:{port}/v1/identify" in out
    assert ":8080" not in out


def test_a_command_line_port_wins_over_the_environment(tmp_path: Path) -> None:
    from freshsales_destination.service import build_embedded_app

    built, _ = build_embedded_app(
        tmp_path / "data", None, 9999, environ={"FSD_SERVER__PORT": "7777",
                                                "FSD_SERVER__HOST": "0.0.0.0"})
    try:
        assert built.state.settings.server.port == 9999
        assert built.state.settings.server.host == "0.0.0.0"
    finally:
        built.state.store.close()


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("FSD_SERVER__PROT", "there is no setting server.prot"),
        ("FSD_SOURCES__0__WRITE_KEY", "use a configuration file"),
        ("FSD_DESTINATIONS__SANDBOX__API_KEY", "use a configuration file"),
    ],
)
def test_a_bad_override_stops_the_embedded_start_named(
    tmp_path: Path, name: str, says: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "freshsales_destination", "serve", "--port", str(free_port())],
        cwd=tmp_path, capture_output=True, text=True, encoding="utf-8", timeout=60,
        env=_env(**{name: "s3cr3t-value"}),
    )
    assert result.returncode == 2
    assert f"error: {name}: " in result.stderr and says in result.stderr
    assert "Traceback" not in result.stderr
    assert "s3cr3t-value" not in result.stdout + result.stderr
