"""npm packages the browser tests need, installed once into a cache outside the repository
(``$XDG_CACHE_HOME/freshsales-destination/npm``, by default ``~/.cache/...``) and reused."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

ANALYTICS_NEXT_VERSION = "1.84.3"


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "freshsales-destination" / "npm"


def npm_install(package: str, version: str) -> Path:
    """The folder holding ``node_modules/<package>`` at exactly `version`, installed now if
    the cache does not hold it yet (into a temporary folder renamed into place, so a run
    stopped halfway or two runs at once never leave a partial install behind)."""
    name = package.replace("@", "").replace("/", "-")
    target = cache_root() / f"{name}-{version}"
    if (target / "node_modules" / package / "package.json").is_file():
        return target
    npm = shutil.which("npm")
    if npm is None:
        raise FileNotFoundError("npm")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        done = subprocess.run(
            [npm, "install", "--prefix", str(staging), "--no-audit", "--no-fund",
             "--ignore-scripts", "--no-package-lock", "--loglevel=error", f"{package}@{version}"],
            capture_output=True, text=True, timeout=600, check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"npm install {package}@{version} failed:\n{done.stderr[-4000:]}")
        try:
            staging.rename(target)
        except OSError:  # another run installed it meanwhile
            if not (target / "node_modules" / package / "package.json").is_file():
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target
