"""The planner's tables and vocabularies: message types, rule handlers, StrEnums."""

from __future__ import annotations

import ast
import json
import typing
from pathlib import Path

import pytest

from freshsales_destination.core import planner
from freshsales_destination.core.explanation import Status
from freshsales_destination.core.mapping_settings import (
    AutoRule,
    DealRule,
    DestinationSettings,
    DropRule,
    EventRule,
    LifecycleStageRule,
    NoteRule,
    SalesActivityRule,
    TrackApiRule,
)
from freshsales_destination.core.operations import (
    OPERATION_KINDS,
    PERSON_UPSERT_KINDS,
    Operation,
    OperationKind,
)
from freshsales_destination.core.planning import Plan, check_settings, plan
from freshsales_destination.core.planning.dispatch import MESSAGE_PLANNERS
from freshsales_destination.core.planning.rules import RULE_HANDLERS, check_rule
from freshsales_destination.core.schema import MappingConfigError, default_schema
from freshsales_destination.core.segment import MESSAGE_TYPES
from freshsales_destination.core.statuses import MessageStatus, PlanStatus, UnitOutcome

WORKER = Path(__file__).resolve().parents[2] / "src" / "freshsales_destination" / "delivery" / "worker.py"


def test_the_facade_is_the_package() -> None:
    assert planner.plan is plan
    assert planner.check_settings is check_settings
    assert planner.Plan is Plan


def test_every_message_type_has_a_planner() -> None:
    assert set(MESSAGE_PLANNERS) == set(MESSAGE_TYPES)


def test_every_actionable_rule_has_one_handler() -> None:
    (union, *_) = typing.get_args(EventRule)
    rule_types = set(typing.get_args(union))
    assert set(RULE_HANDLERS) == rule_types - {AutoRule, DropRule}
    assert set(RULE_HANDLERS) == {TrackApiRule, NoteRule, SalesActivityRule, LifecycleStageRule, DealRule}


@pytest.mark.parametrize("rule", [AutoRule(), DropRule(action="drop")], ids=["auto", "drop"])
def test_auto_and_drop_need_no_check(rule: object) -> None:
    check_rule(rule, "mapping.track_default", DestinationSettings(), default_schema("suite"))


def test_check_settings_and_planning_refuse_a_rule_alike() -> None:
    # Both go through the rule's handler: the same error, word for word.
    settings = DestinationSettings.build(
        "suite", False, {"track_events": {"Won": {"action": "deal", "stage": "Nope"}}}
    )
    schema = default_schema("suite")
    with pytest.raises(MappingConfigError) as checked:
        check_settings(settings, schema)
    event = {"type": "track", "event": "Won", "userId": "a@b.co", "messageId": "m",
             "properties": {"revenue": 5}}
    with pytest.raises(MappingConfigError) as planned:
        plan(event, settings, schema)
    assert (checked.value.message, checked.value.kind, checked.value.name) == (
        planned.value.message, planned.value.kind, planned.value.name,
    )


def test_operation_kinds_are_the_stored_strings() -> None:
    assert [str(k) for k in OPERATION_KINDS] == [
        "upsert_contact", "upsert_lead", "lookup_person", "upsert_sales_account",
        "link_sales_account", "upsert_deal", "track_event", "track_page_view", "create_note",
        "create_sales_activity", "update_lifecycle_stage", "forget_contact", "alias",
    ]
    assert "upsert_lead" in PERSON_UPSERT_KINDS and "upsert_deal" not in PERSON_UPSERT_KINDS
    op = Operation(kind=OperationKind.UPSERT_DEAL, entity="deal", key={"name": "D"})
    data = op.to_json()
    assert type(data["kind"]) is str and json.dumps(data["kind"]) == '"upsert_deal"'
    back = Operation.from_json(json.loads(json.dumps(data)))
    assert back == op and back.kind is OperationKind.UPSERT_DEAL


def test_plan_status_is_written_as_its_string() -> None:
    result = plan({"type": "nope"}, DestinationSettings(), default_schema("suite"))
    assert result.status == "discarded" and result.status is PlanStatus.DISCARDED
    assert type(result.to_json()["explanation"]["status"]) is str
    assert Status is PlanStatus


def test_status_values() -> None:
    assert {str(s) for s in PlanStatus} == {"planned", "discarded", "filtered"}
    assert {str(s) for s in MessageStatus} == {
        "pending", "delivered", "skipped", "discarded", "filtered", "dead", "dropped",
    }
    assert {str(o) for o in UnitOutcome} == {
        "done", "failed", "fell back", "stop", "budget", "replan",
    }
    # A plan that is not carried out finishes its message with the plan's status.
    assert {PlanStatus.DISCARDED, PlanStatus.FILTERED} <= set(MessageStatus)


def _returned_strings(function: ast.AST) -> set[str]:
    return {
        node.value.value
        for node in ast.walk(function)
        if isinstance(node, ast.Return) and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    }


def test_the_worker_s_unit_outcomes_are_unit_outcomes() -> None:
    # delivery/worker.py returns UnitOutcome members, never bare strings.
    tree = ast.parse(WORKER.read_text(encoding="utf-8"))
    checked = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.AsyncFunctionDef | ast.FunctionDef) and node.name in (
            "_run_unit", "_replan",
        ):
            checked.add(node.name)
            assert _returned_strings(node) == set(), node.name
            assert node.returns is not None and ast.unparse(node.returns) == "UnitOutcome"
    assert checked == {"_run_unit", "_replan"}
