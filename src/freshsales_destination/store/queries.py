"""The stores' SQL, kept as data: named queries and ordered migrations, one set per dialect.

* ``store/sql/<dialect>.sql`` holds every query of a dialect as named blocks (as procrastinate
  keeps its ``queries.sql``): a line ``-- name: <name>`` starts a block, which runs to the next
  one. Whole-line ``--`` comments inside a block document it and are not sent to the server;
  ``{columns}`` stands for the ``columns`` block (a StoredMessage's columns, in field order).
* ``store/migrations/<dialect>/NNNN_<what>.sql`` are the migrations, applied in the order of
  their number, each once. The number is the version recorded in the database (SQLite's
  ``user_version``, PostgreSQL's ``schema_migrations``): a migration is never renumbered or
  edited once released, only added.
"""

from __future__ import annotations

import functools
import re
from importlib import resources
from types import MappingProxyType
from typing import Literal

Dialect = Literal["sqlite", "postgres"]

_PACKAGE = "freshsales_destination.store"

_NAME = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$")
_MIGRATION = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def parse_queries(text: str) -> dict[str, str]:
    """Named blocks of `text` (see the module docstring), `{columns}` filled in."""
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        match = _NAME.match(line)
        if match:
            name = match.group(1)
            if name in blocks:
                raise ValueError(f"query {name!r} is named twice")
            current = blocks[name] = []
        elif current is not None and not line.lstrip().startswith("--"):
            current.append(line.rstrip())
    queries = {name: "\n".join(lines).strip() for name, lines in blocks.items()}
    columns = queries.get("columns")
    if columns is not None:
        columns = " ".join(columns.split())
        queries = {name: query.replace("{columns}", columns) for name, query in queries.items()}
    return queries


@functools.cache
def queries(dialect: Dialect) -> MappingProxyType[str, str]:
    """Every named query of `dialect`."""
    text = resources.files(_PACKAGE).joinpath("sql", f"{dialect}.sql").read_text("utf-8")
    return MappingProxyType(parse_queries(text))


@functools.cache
def migrations(dialect: Dialect) -> MappingProxyType[int, str]:
    """version -> the SQL of that migration, for `dialect`; versions run 1, 2, ... without gaps."""
    folder = resources.files(_PACKAGE).joinpath("migrations", dialect)
    found: dict[int, str] = {}
    for entry in folder.iterdir():
        match = _MIGRATION.match(entry.name)
        if match is None:
            continue
        version = int(match.group(1))
        if version in found:
            raise ValueError(f"two {dialect} migrations are numbered {version}")
        found[version] = entry.read_text("utf-8")
    if sorted(found) != list(range(1, len(found) + 1)):
        raise ValueError(f"{dialect} migrations must be numbered 1, 2, ... without gaps")
    return MappingProxyType(dict(sorted(found.items())))
