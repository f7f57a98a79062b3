"""Opens the store a ``store.url`` names."""

from __future__ import annotations

from urllib.parse import urlsplit

from freshsales_destination.errors import ConfigError
from freshsales_destination.store.base import Store
from freshsales_destination.store.sqlite import SQLiteStore


def open_store(url: str, *, pool_size: int | None = None) -> Store:
    """``sqlite:///path.db`` or ``postgresql://user@host:5432/db[?schema=name]``; `pool_size`
    bounds a PostgreSQL store's connection pool (None: its default)."""
    scheme = urlsplit(url).scheme
    store: Store
    if scheme == "sqlite":
        store = SQLiteStore.from_url(url)
    elif scheme in ("postgresql", "postgres"):
        # Imported here so that the SQLite-only service never loads psycopg.
        from freshsales_destination.store.postgres import PostgresStore

        store = PostgresStore.from_url(url, pool_size=pool_size)
    else:
        raise ConfigError(
            f"store.url scheme {scheme!r} is not supported (use sqlite:/// or postgresql://)"
        )
    store.open()
    return store
