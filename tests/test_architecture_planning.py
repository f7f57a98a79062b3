"""The planner package (``core/planning/``) is pure like the rest of core, and its modules stay
small enough to read: one per message type, shared pieces named for what they hold.

(Apart from ``test_architecture.py``, which checks ``core/*.py``, so that both can grow
without touching each other.)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.test_architecture import CORE, FORBIDDEN, _imports

PLANNING = CORE / "planning"
MAX_PLANNING_MODULE_LINES = 400


def _planning_modules() -> list[Path]:
    return sorted(PLANNING.glob("*.py"))


@pytest.mark.parametrize("path", _planning_modules(), ids=lambda p: p.name)
def test_planning_module_imports_no_io(path: Path) -> None:
    bad = sorted(
        name for name in _imports(path)
        if any(name == f or name.startswith(f + ".") for f in FORBIDDEN)
    )
    assert bad == [], f"planning/{path.name} imports {bad}"


@pytest.mark.parametrize("path", _planning_modules(), ids=lambda p: p.name)
def test_planning_modules_stay_small(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_PLANNING_MODULE_LINES, (
        f"planning/{path.name} has {lines} lines (at most {MAX_PLANNING_MODULE_LINES}): split it "
        "by what it holds"
    )


def test_core_has_no_other_subpackage_unchecked() -> None:
    # The import checks glob core/ and core/planning/ only: a new subpackage needs its own.
    assert {p.parent.name for p in CORE.glob("*/__init__.py")} == {"planning"}


def test_planner_module_is_a_facade() -> None:
    # core/planner.py only re-exports the planning package's entry points.
    tree = ast.parse((CORE / "planner.py").read_text(encoding="utf-8"))
    defined = [
        node for node in tree.body
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
    ]
    assert defined == []
    assert {"dispatch.py", "rules.py", "settings_check.py"} <= {p.name for p in _planning_modules()}
