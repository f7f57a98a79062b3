"""Files only the service's own user may read: the data directory (0700 when created here),
databases and secrets (0600, also when they already exist with looser modes).

The queue holds people's emails and traits; the secrets file holds the keys. Other users of the
machine have no business reading either.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

DIR_MODE = 0o700
FILE_MODE = 0o600
# SQLite's companions of a database file (created with the database file's own mode).
SQLITE_SIDECARS = ("-wal", "-shm", "-journal")


def private_dir(path: Path) -> None:
    """Create `path` (and its parents) if missing; the directory created here is 0700. An
    existing directory is left as it is: it may be the operator's own (a home, /var/lib/x)."""
    if path.is_dir():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=DIR_MODE)
    except FileExistsError:
        return
    os.chmod(path, DIR_MODE)  # mkdir's mode is masked by the umask; make it exact


def private_file(path: Path) -> None:
    """`path` exists (created empty if missing) with mode 0600."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) != FILE_MODE:
            os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)


def private_sqlite(path: Path) -> None:
    """A SQLite database file and its existing companions, 0600, in a private directory when
    the directory is created here. An empty file is a valid empty database for SQLite.

    A file this user may not change (another owner, a read-only mount) is left as it is, with
    a warning: opening it then succeeds or fails as it would have.
    """
    private_dir(path.parent)
    try:
        private_file(path)
        for suffix in SQLITE_SIDECARS:
            sidecar = path.with_name(path.name + suffix)
            if sidecar.exists() and stat.S_IMODE(sidecar.stat().st_mode) != FILE_MODE:
                os.chmod(sidecar, FILE_MODE)
    except PermissionError as exc:
        log.warning("could not make %s private (mode 0600): %s", path, exc.strerror)


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically (a 0600 temporary file, fsynced, renamed over it),
    so a crash never leaves a half-written file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def readable_by_others(path: Path) -> bool:
    """Whether a user other than the owner may read `path` (group or world read bit)."""
    try:
        return bool(path.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH))
    except OSError:
        return False
