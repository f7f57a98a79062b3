"""The pure core stays pure: no I/O library and no adapter is imported from `core/`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parent.parent / "src" / "freshsales_destination" / "core"

FORBIDDEN = (
    "httpx", "httpx2", "sqlite3", "psycopg", "psycopg_pool", "starlette", "uvicorn", "socket",
    "requests", "asyncio", "threading", "subprocess",
    "freshsales_destination.store", "freshsales_destination.ingest",
    "freshsales_destination.delivery", "freshsales_destination.sandbox",
    "freshsales_destination.freshsales", "freshsales_destination.service",
)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


@pytest.mark.parametrize("path", sorted(CORE.glob("*.py")), ids=lambda p: p.name)
def test_core_module_imports_no_io(path: Path) -> None:
    bad = sorted(
        name for name in _imports(path)
        if any(name == f or name.startswith(f + ".") for f in FORBIDDEN)
    )
    assert bad == [], f"{path.name} imports {bad}"


def test_the_check_sees_the_core() -> None:
    names = {p.name for p in CORE.glob("*.py")}
    assert {"planner.py", "segment.py", "retry.py", "budget.py"} <= names
