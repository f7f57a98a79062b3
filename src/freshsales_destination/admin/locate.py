"""Which service the operator commands look at: a configuration file, or the embedded store.

``status``, ``explain``, ``messages`` and ``dead-letters`` take ``--config FILE``; without it
they look where ``serve`` without ``--config`` keeps its files (``--data-dir``, ``./data`` by
default): the generated keys (``embedded-secrets.json``) and the SQLite queue (``queue.db``).
They never create either: when nothing is there, the error says where they looked and what to
pass. ``FSD_*`` variables apply as they do for ``serve``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from freshsales_destination.config import Settings, load_settings
from freshsales_destination.errors import ConfigError
from freshsales_destination.store.base import Store
from freshsales_destination.store.factory import open_store

DEFAULT_DATA_DIR = Path("data")


@dataclass(frozen=True)
class Target:
    settings: Settings
    where: str  # for messages: the file, or the embedded data directory


def find_target(config: Path | None, data_dir: Path = DEFAULT_DATA_DIR) -> Target:
    """The settings of `config`, or of the embedded service under `data_dir`.

    Raises `ConfigError` naming the file or the places looked at."""
    if config is not None:
        return Target(load_settings(config), str(config))
    from freshsales_destination.service import _SECRET_NAMES, SECRETS_FILE, embedded_settings

    where = data_dir.resolve()
    secrets_path = where / SECRETS_FILE
    queue = where / "queue.db"
    if not secrets_path.is_file() or not queue.is_file():
        missing = secrets_path if not secrets_path.is_file() else queue
        raise ConfigError(
            f"no --config given, and no embedded service in {where} ({missing.name} is "
            "missing; `freshsales-destination serve` without --config creates it there). "
            "Pass --config FILE, or --data-dir DIR where `serve` keeps its files"
        )
    try:
        keys = json.loads(secrets_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {secrets_path}: {type(exc).__name__}") from None
    if not isinstance(keys, dict) or not all(isinstance(keys.get(n), str) for n in _SECRET_NAMES):
        raise ConfigError(f"{secrets_path} is damaged (it lacks a generated key)")
    settings = embedded_settings(where, None, None, {n: keys[n] for n in _SECRET_NAMES})
    return Target(settings, f"the embedded service in {where}")


def open_target_store(target: Target) -> Store:
    """The target's store, opened (a `StoreError` when it cannot be reached)."""
    return open_store(target.settings.store.url, pool_size=target.settings.store.pool_size)


__all__ = ["DEFAULT_DATA_DIR", "Target", "find_target", "open_target_store"]
