"""The README's first command: `serve` with no configuration shows events reaching a CRM."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import pytest

from tests.support.server import free_port

pytestmark = pytest.mark.slow


def test_serve_without_config_delivers_to_the_builtin_sandbox(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FSD_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "freshsales_destination", "serve", "--port", str(port)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx2.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx2.TransportError:
                pass
            assert time.monotonic() < deadline, "the service did not start"
            assert proc.poll() is None, "the service exited"
            time.sleep(0.1)
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
        contacts: list[dict[str, object]] = []
        deadline = time.monotonic() + 20
        while not contacts and time.monotonic() < deadline:
            state = httpx2.get(f"{base}/sandbox/_sandbox/state", headers=headers).json()
            contacts = state["records"]["contacts"]
            time.sleep(0.2)
        assert contacts and contacts[0]["first_name"] == "Ada"
        assert httpx2.get(f"{base}/readyz").status_code == 200
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=15)
    # The write key is shown once on the terminal (stdout), never in the log (stderr).
    assert len(re.findall(re.escape(write_key), out)) >= 1
    assert write_key not in err
    assert secrets_["sandbox_api_key"] not in err
