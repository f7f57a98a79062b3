"""Delivery speaks the core's vocabularies: statuses, unit outcomes and operation kinds are enum
members (core/statuses.py, core/operations.py), whose values are the stored strings."""

from __future__ import annotations

import ast
import json
import logging
import sqlite3
from pathlib import Path

import pytest

from freshsales_destination.core.operations import OperationKind
from freshsales_destination.core.statuses import MessageStatus, PlanStatus, UnitOutcome
from freshsales_destination.delivery.events_route import TRACKING_KINDS
from freshsales_destination.delivery.executor import RECORD_KINDS

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "freshsales_destination"
MODULES = sorted((PACKAGE / "delivery").glob("*.py")) + [
    PACKAGE / "housekeeping.py", PACKAGE / "explain.py",
]
VOCABULARY = {str(v) for e in (MessageStatus, PlanStatus, UnitOutcome, OperationKind) for v in e}
# What holds a status, a unit outcome or an operation kind in delivery's code (an explanation
# entry's ``.outcome`` is another vocabulary: core/explanation.py ``Outcome``).
ATTRIBUTES = {"status", "kind"}
NAMES = {"status", "outcome", "kind"}


def _holds(node: ast.expr) -> bool:
    if isinstance(node, ast.Attribute):
        return node.attr in ATTRIBUTES
    return isinstance(node, ast.Name) and node.id in NAMES


def _strings(node: ast.expr) -> set[str]:
    """The string constants `node` is or directly lists (a tuple, set or list literal)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.Tuple | ast.Set | ast.List):
        return {s for element in node.elts for s in _strings(element)}
    return set()


def _bare(path: Path) -> list[str]:
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(_holds(side) for side in sides):
                for side in sides:
                    found += [f"line {node.lineno}: {s!r}" for s in _strings(side) & VOCABULARY]
        elif isinstance(node, ast.keyword) and node.arg == "status":
            found += [f"line {node.value.lineno}: status={s!r}" for s in _strings(node.value)]
        elif (
            isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id in ("frozenset", "set", "tuple")
        ):
            # tables of kinds or statuses: frozenset({...})
            for arg in node.args:
                found += [f"line {arg.lineno}: {s!r}" for s in _strings(arg) & VOCABULARY]
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_no_bare_status_outcome_or_kind(path: Path) -> None:
    assert _bare(path) == []


def test_the_check_finds_bare_strings(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        'KINDS = frozenset({"track_event"})\n'
        'if op.kind == "alias" or outcome in ("stop", "budget"):\n'
        '    store.finish(seqs, status="dead")\n'
        'if exc.kind == "throttled" or entry.outcome == "dropped":\n'  # other vocabularies
        '    pass\n',
        encoding="utf-8",
    )
    assert sorted(_bare(sample)) == [
        "line 1: 'track_event'", "line 2: 'alias'", "line 2: 'budget'", "line 2: 'stop'",
        "line 3: status='dead'",
    ]


def test_the_kind_tables_hold_the_same_strings() -> None:
    assert all(isinstance(k, OperationKind) for k in RECORD_KINDS | TRACKING_KINDS)
    assert RECORD_KINDS == {
        "upsert_contact", "upsert_lead", "upsert_sales_account", "link_sales_account",
        "upsert_deal", "update_lifecycle_stage", "forget_contact", "lookup_person",
    }
    assert TRACKING_KINDS == {"track_event", "track_page_view"}


@pytest.mark.parametrize(
    "member", [MessageStatus.DEAD, UnitOutcome.FELL_BACK, OperationKind.UPSERT_DEAL],
    ids=str,
)
def test_members_write_as_their_strings(member: MessageStatus | UnitOutcome | OperationKind) -> None:
    # JSON, f-strings, log lines and sqlite see the plain value.
    value = member.value
    assert json.dumps({member: member}) == json.dumps({value: value})
    line = logging.LogRecord("x", logging.INFO, __file__, 1, "%s %r", (member, str(member)), None)
    assert f"{member}" == str(member) == value and line.getMessage() == f"{value} {value!r}"
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (s TEXT)")
    db.execute("INSERT INTO t VALUES (?)", (member,))
    assert db.execute("SELECT s, typeof(s) FROM t").fetchone() == (value, "text")
