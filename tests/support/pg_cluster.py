"""A throw-away PostgreSQL cluster for tests that stop and start the server.

`initdb` refuses to run as root, so as root the cluster belongs to the ``postgres`` user and
its commands run through ``runuser``. `ThrowawayCluster.unavailable()` says why none can be
made here (no server binaries, root without a ``postgres`` user), for a skip.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

BIN_DIRS = [Path(f"/usr/lib/postgresql/{v}/bin") for v in (17, 16, 15, 14, 13)]


def _bin_dir() -> Path | None:
    for path in BIN_DIRS:
        if (path / "initdb").exists() and (path / "pg_ctl").exists():
            return path
    found = shutil.which("initdb")
    return Path(found).parent if found else None


class ThrowawayCluster:
    def __init__(self, port: int) -> None:
        bin_dir = _bin_dir()
        assert bin_dir is not None, ThrowawayCluster.unavailable()
        self.bin = bin_dir
        self.port = port
        self.root = Path(tempfile.mkdtemp(prefix="fsd-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._user: str | None = None
        if os.geteuid() == 0:
            self._user = "postgres"
            entry = pwd.getpwnam("postgres")
            os.chown(self.root, entry.pw_uid, entry.pw_gid)

    @staticmethod
    def unavailable() -> str | None:
        if _bin_dir() is None:
            return "no PostgreSQL server binaries (initdb, pg_ctl)"
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                return "running as root and there is no postgres user to run initdb as"
            if shutil.which("runuser") is None:
                return "running as root without runuser"
        return None

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 120) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if self._user is not None:
            command = ["runuser", "-u", self._user, "--", *command]
        subprocess.run(command, check=True, timeout=timeout, cwd=self.root,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync",
                  "-E", "UTF8")

    def start(self) -> None:
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} "
                   "-c max_connections=100")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options,
                  "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass  # not running
        shutil.rmtree(self.root, ignore_errors=True)
