"""Real ``freshsales-destination`` processes for tests: start, wait until ready, stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx2


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without ``FSD_*`` overrides, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FSD_")}
    env.update(extra)
    return env


def start_cli(args: Sequence[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """``python -m freshsales_destination ARGS`` with stdout and stderr into `log`."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "freshsales_destination", *args],
            stdout=out, stderr=subprocess.STDOUT, env=env or clean_env(),
        )


def start_serve(
    config: Path, role: str, port: int, log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    return start_cli(
        ["serve", "--config", str(config), "--role", role, "--port", str(port)], log, env
    )


def wait_ready(
    url: str,
    process: subprocess.Popen[bytes],
    log: Path,
    *,
    timeout: float = 60.0,
    headers: dict[str, str] | None = None,
) -> None:
    """Until ``GET url`` answers 200; fails with the process's log if it exits first."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx2.get(url, timeout=5, headers=headers).status_code == 200:
                return
        except httpx2.TransportError:
            pass
        if process.poll() is not None:
            raise AssertionError(f"{url}: the process exited ({process.returncode}):\n"
                                 + log.read_text(errors="replace")[-4000:])
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} not ready:\n" + log.read_text(errors="replace")[-4000:])
        time.sleep(0.1)


def stop(process: subprocess.Popen[bytes], *, timeout: float = 30.0) -> None:
    """SIGTERM, then SIGKILL if it does not exit within `timeout`."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
