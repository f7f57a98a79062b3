"""Opens the store a ``store.url`` names."""

from __future__ import annotations

from urllib.parse import urlsplit

from freshsales_destination.errors import ConfigError
from freshsales_destination.store.base import Store
from freshsales_destination.store.sqlite import SQLiteStore


def open_store(url: str) -> Store:
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        store = SQLiteStore.from_url(url)
    else:
        raise ConfigError(f"store.url scheme {scheme!r} is not supported yet (use sqlite:///)")
    store.open()
    return store
