"""The example systemd units (deploy/systemd) pass `systemd-analyze verify` and start the
roles with options `serve` has. Skipped where systemd-analyze is not installed."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNITS = ROOT / "deploy" / "systemd"
INSTALLED = "/opt/freshsales-destination/.venv/bin/freshsales-destination"


def _exec_start(unit: Path) -> list[str]:
    for line in unit.read_text().splitlines():
        if line.startswith("ExecStart="):
            return shlex.split(line[len("ExecStart="):])
    raise AssertionError(f"{unit.name} has no ExecStart")


def test_units_run_the_roles_with_options_serve_has() -> None:
    ingest = _exec_start(UNITS / "freshsales-destination-ingest.service")
    worker = _exec_start(UNITS / "freshsales-destination-worker@.service")
    assert ingest[:2] == [INSTALLED, "serve"] and ingest[-2:] == ["--role", "ingest"]
    assert worker[:2] == [INSTALLED, "serve"] and worker[-4:] == ["--role", "worker", "--port", "%i"]
    help_text = subprocess.run(
        [sys.executable, "-m", "freshsales_destination", "serve", "--help"],
        capture_output=True, text=True, timeout=60, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    ).stdout
    for option in {arg for arg in ingest + worker if arg.startswith("--")}:
        assert option in help_text, option


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    # The units name the installed command; point them at this checkout's so that verify
    # (which checks that ExecStart is executable) judges the unit, not this machine's layout.
    command = Path(sys.executable).with_name("freshsales-destination")
    assert command.exists()
    for unit in UNITS.glob("*.service"):
        (tmp_path / unit.name).write_text(unit.read_text().replace(INSTALLED, str(command)))
    targets = [tmp_path / "freshsales-destination-ingest.service",
               tmp_path / "freshsales-destination-worker@8081.service"]
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *map(str, targets)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    problems = [line for line in (result.stdout + result.stderr).splitlines()
                if "freshsales-destination" in line]
    assert result.returncode == 0 and not problems, result.stdout + result.stderr
