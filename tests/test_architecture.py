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


# -- delivery reaches the synchronous store only off its event loop ----------------------------

DELIVERY = CORE.parent / "delivery"
STORE_BASE = CORE.parent / "store" / "base.py"


def _store_methods() -> set[str]:
    tree = ast.parse(STORE_BASE.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "Store":
            return {
                item.name for item in node.body
                if isinstance(item, ast.FunctionDef) and not item.name.startswith("_")
            }
    raise AssertionError("store/base.py has no Store protocol")


def _receiver(node: ast.expr) -> str:
    """The last name of a call's receiver: `self.store.kv_get` -> "store"."""
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return ""


def _own_calls(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> list[ast.Call]:
    """Calls made by `fn` itself: not those of nested functions or lambdas (which run where
    they are passed, e.g. in `store_call` or as a `kv_update` transform)."""
    calls: list[ast.Call] = []
    todo: list[ast.AST] = list(fn.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        if isinstance(node, ast.Call):
            calls.append(node)
        todo.extend(ast.iter_child_nodes(node))
    return calls


# Receivers whose type the check cannot read from `__init__` (a Protocol, or `Any`).
IMPLEMENTATIONS = {"Budget": {"StoreBudget", "HealthObservingBudget"}}
UNTYPED_ATTRIBUTES = {"_budget": {"StoreBudget"}}


class _StoreUse:
    """Which calls reach the store: Store methods on a receiver named like a store, and every
    synchronous function or method under delivery/ that makes such a call, directly or through
    another. Calls are resolved by name: `self.m()` to the enclosing class, `self.a.m()` to the
    classes `a` is given in `__init__` (by annotation or construction), `f()` to a module-level
    function."""

    def __init__(self, trees: dict[str, ast.Module]) -> None:
        self.methods = _store_methods()
        classes = {
            node.name: node for tree in trees.values() for node in tree.body
            if isinstance(node, ast.ClassDef)
        }
        self.attributes: dict[str, set[str]] = {k: set(v) for k, v in UNTYPED_ATTRIBUTES.items()}
        for cls in classes.values():
            for item in cls.body:
                if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                    self._learn_attributes(item, set(classes))
        # (owner class or "" for a module function, name) -> the function
        self.functions: dict[tuple[str, str], ast.FunctionDef | ast.AsyncFunctionDef] = {}
        for tree in trees.values():
            for node in tree.body:
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    self.functions[("", node.name)] = node
                elif isinstance(node, ast.ClassDef):
                    for item in node.body:
                        if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                            self.functions[(node.name, item.name)] = item
        self.tainted: set[tuple[str, str]] = set()
        while True:
            found = {
                key for key, fn in self.functions.items()
                if isinstance(fn, ast.FunctionDef)
                and any(self.reaches_store(call, key[0]) for call in _own_calls(fn))
            }
            if found <= self.tainted:
                break
            self.tainted |= found

    def _learn_attributes(self, init: ast.FunctionDef, known: set[str]) -> None:
        annotations = {
            arg.arg: {n.id for n in ast.walk(arg.annotation) if isinstance(n, ast.Name)}
            for arg in init.args.args + init.args.kwonlyargs if arg.annotation is not None
        }
        for node in ast.walk(init):
            if not isinstance(node, ast.Assign | ast.AnnAssign):
                continue
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if not (isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name)
                        and target.value.id == "self" and node.value is not None):
                    continue
                names = _heads(node.value)
                for name in list(names):
                    names |= annotations.get(name, set())
                for name in list(names):
                    names |= IMPLEMENTATIONS.get(name, set())
                types = names & known
                if types:
                    self.attributes.setdefault(target.attr, set()).update(types)

    def owners(self, receiver: ast.expr, here: str) -> set[str]:
        """The delivery classes a receiver may be: `self`, `self.a` and a local `a` (by the
        attribute of that name), `Cls(...)`."""
        if isinstance(receiver, ast.Name):
            return {here} if receiver.id == "self" else self.attributes.get(receiver.id, set())
        if isinstance(receiver, ast.Attribute) and isinstance(receiver.value, ast.Name) \
                and receiver.value.id == "self":
            return self.attributes.get(receiver.attr, set())
        if isinstance(receiver, ast.Call) and isinstance(receiver.func, ast.Name):
            return {receiver.func.id}
        return set()

    def reaches_store(self, call: ast.Call, here: str) -> bool:
        func = call.func
        if isinstance(func, ast.Attribute):
            if func.attr in self.methods and "store" in _receiver(func.value).lower():
                return True
            return any((owner, func.attr) in self.tainted
                       for owner in self.owners(func.value, here))
        return isinstance(func, ast.Name) and ("", func.id) in self.tainted


def _heads(value: ast.expr) -> set[str]:
    """The names a value may be: `x` -> x, `Cls(...)` -> Cls, `a or Cls(...)` -> a, Cls."""
    if isinstance(value, ast.Name):
        return {value.id}
    if isinstance(value, ast.Call) and isinstance(value.func, ast.Name):
        return {value.func.id}
    if isinstance(value, ast.BoolOp):
        return {name for item in value.values for name in _heads(item)}
    if isinstance(value, ast.IfExp):
        return _heads(value.body) | _heads(value.orelse)
    return set()


def _delivery_trees() -> dict[str, ast.Module]:
    return {
        path.name: ast.parse(path.read_text(encoding="utf-8"))
        for path in sorted(DELIVERY.glob("*.py"))
    }


def _async_functions(tree: ast.Module) -> list[tuple[str, ast.AsyncFunctionDef]]:
    found: list[tuple[str, ast.AsyncFunctionDef]] = []
    for node in tree.body:
        if isinstance(node, ast.AsyncFunctionDef):
            found.append(("", node))
        elif isinstance(node, ast.ClassDef):
            found += [(node.name, item) for item in node.body
                      if isinstance(item, ast.AsyncFunctionDef)]
    return found


def _loop_violations() -> list[str]:
    trees = _delivery_trees()
    use = _StoreUse(trees)
    found: list[str] = []
    for name, tree in trees.items():
        for owner, node in _async_functions(tree):
            for call in _own_calls(node):
                if use.reaches_store(call, owner):
                    found.append(f"{name}:{call.lineno} {node.name}() calls "
                                 f"{ast.unparse(call.func)} on the event loop")
    return sorted(found)


def test_delivery_never_calls_the_store_on_its_event_loop() -> None:
    """Every store call (or sync helper making one) from an `async def` under delivery/ goes
    through `delivery/offloop.py` `store_call`, which runs it in a thread."""
    assert _loop_violations() == []


def test_the_store_check_sees_direct_and_indirect_calls() -> None:
    source = """
class Memory:
    def __init__(self, store: Store) -> None:
        self.store = store

    def identity(self, user):
        return self.store.kv_get("ns", user)

    def known(self, user):
        return self.identity(user) is not None

    def pure(self, data):
        return data.get("x")


class Worker:
    def __init__(self, memory: Memory) -> None:
        self.memory = memory

    async def bad(self):
        self.store.claim_lane("d")
        self.memory.known("u")

    async def indirect(self, memory, store):
        memory.identity("u")
        Memory(store).known("u")

    async def good(self, data):
        await store_call(self.store.claim_lane, "d")
        await store_call(self.memory.known, "u")
        self.memory.pure(data)
        data.get("identity")
"""
    tree = ast.parse(source)
    use = _StoreUse({"x.py": tree})
    assert {("Memory", "identity"), ("Memory", "known")} == use.tainted
    calls = {
        fn.name: sorted(ast.unparse(c.func) for c in _own_calls(fn) if use.reaches_store(c, owner))
        for owner, fn in _async_functions(tree)
    }
    assert calls == {
        "bad": ["self.memory.known", "self.store.claim_lane"],
        "indirect": ["Memory(store).known", "memory.identity"],
        "good": [],
    }
