"""The admin routes never call the synchronous store on the event loop: inside an ``async def``
under admin/ (views.py aside: it is the synchronous read model), a read-model function or a
Store method is only ever passed to run_in_threadpool / store_call, never called."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.test_architecture import _own_calls, _store_methods

ADMIN = Path(__file__).resolve().parents[2] / "src" / "freshsales_destination" / "admin"
VIEWS = ADMIN / "views.py"


def _views_functions() -> set[str]:
    tree = ast.parse(VIEWS.read_text(encoding="utf-8"))
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")}


def blocking_calls(source: str) -> list[str]:
    """`views.f(...)` and `<...store>.m(...)` called by an async def itself."""
    views_fns, store_methods = _views_functions(), _store_methods()
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.AsyncFunctionDef):
            continue
        for call in _own_calls(node):
            func = call.func
            if not isinstance(func, ast.Attribute):
                continue
            receiver = func.value
            name = receiver.id if isinstance(receiver, ast.Name) else (
                receiver.attr if isinstance(receiver, ast.Attribute) else "")
            if (name == "views" and func.attr in views_fns) or (
                "store" in name.lower() and func.attr in store_methods
            ):
                found.append(f"{node.name}: {name}.{func.attr} (line {call.lineno})")
    return found


@pytest.mark.parametrize(
    "path", sorted(p for p in ADMIN.glob("*.py") if p != VIEWS), ids=lambda p: p.name
)
def test_admin_async_code_reaches_the_store_only_off_the_loop(path: Path) -> None:
    assert blocking_calls(path.read_text(encoding="utf-8")) == []


def test_the_check_finds_a_blocking_call() -> None:
    source = (
        "async def bad(self):\n"
        "    page = views.search(self.store, flt)\n"
        "    self.store.list_messages()\n"
        "    ok = await run_in_threadpool(views.search, self.store, flt)\n"
        "    fine = await run_in_threadpool(lambda: views.failures(self.store))\n"
    )
    assert sorted(blocking_calls(source)) == [
        "bad: store.list_messages (line 3)", "bad: views.search (line 2)"
    ]
