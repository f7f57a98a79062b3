"""npm packages for the real-client tests, installed once into a cache outside the repository.

``npm_package("@segment/analytics-node", "3.1.0")`` installs that exact version (scripts off)
under ``$XDG_CACHE_HOME/freshsales-destination/npm`` (default ``~/.cache/...``) the first time,
and reuses it after; concurrent test processes take turns on a lock file. A test skips only
when npm is not installed at all; an install that fails is a test failure.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "freshsales-destination" / "npm"


def node_or_skip() -> str:
    """The node executable; skips the test when Node.js or npm is not installed."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("Node.js and npm are not installed (CI has them)")
    return node


def npm_package(name: str, version: str) -> Path:
    """The directory whose ``node_modules`` holds `name` at exactly `version`."""
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed (CI has it)")
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name.lstrip("@"))
    prefix = cache_root() / f"{slug}-{version}"
    manifest = prefix / "node_modules" / name / "package.json"
    prefix.mkdir(parents=True, exist_ok=True)
    with open(prefix / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _installed(manifest, version):
            result = subprocess.run(
                [npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund",
                 "--ignore-scripts", "--loglevel=error", f"{name}@{version}"],
                capture_output=True, text=True, timeout=600,
            )
            if result.returncode != 0 or not _installed(manifest, version):
                raise RuntimeError(
                    f"npm could not install {name}@{version} into {prefix}:\n{result.stderr[-2000:]}"
                )
    return prefix


def _installed(manifest: Path, version: str) -> bool:
    try:
        return bool(json.loads(manifest.read_text(encoding="utf-8")).get("version") == version)
    except (OSError, ValueError):
        return False
