"""The ``deal`` rule action: a deal upserted by a name made from the event, with its amount."""

from __future__ import annotations

from typing import Any

from freshsales_destination.core.mapping_settings import (
    DealRule,
    DestinationSettings,
    template_placeholders,
)
from freshsales_destination.core.operations import OperationKind, ref
from freshsales_destination.core.planning.actions import EventCall, RuleHandler
from freshsales_destination.core.planning.builder import PlanBuilder
from freshsales_destination.core.planning.people import ensure_person
from freshsales_destination.core.planning.result import Stop
from freshsales_destination.core.planning.templates import render
from freshsales_destination.core.schema import FieldDef, FieldSchema
from freshsales_destination.core.statuses import PlanStatus
from freshsales_destination.core.traits import coerce

_AMOUNT = FieldDef(name="amount", type="decimal")


def deal_stage_id(schema: FieldSchema, rule: DealRule, where: str) -> Any:
    """The stage's id when the rule names one, else None."""
    if not rule.stage:
        return None
    return schema.require("deal_stages", rule.stage, f"{where}.stage")


def check(rule: DealRule, where: str, settings: DestinationSettings, schema: FieldSchema) -> None:
    deal_stage_id(schema, rule, where)


def apply(b: PlanBuilder, rule: DealRule, call: EventCall) -> None:
    where, props, person = call.where, call.props, call.person
    deal_name = render(b, rule.name, call.label, call.name, props)
    if deal_name is None:
        needed = ", ".join("|".join(alts) for alts in template_placeholders(rule.name))
        raise Stop(PlanStatus.DISCARDED, "deal_name_unavailable", f"{where}.name needs {needed}")
    fields: dict[str, Any] = {"name": deal_name}
    amount_def = b.schema.entity("deals").get("amount") or _AMOUNT
    for prop in rule.amount_property:
        if prop in props:
            result = coerce(props[prop], amount_def, b.schema)
            if result.ok:
                fields["amount"] = result.value
                b.note(f"properties.{prop}", "mapped", "the deal's amount", "deal.amount")
                break
            b.note(f"properties.{prop}", "dropped", result.reason, "deal.amount")
    if "amount" not in fields:
        b.note("properties", "info", f"no amount in {', '.join(rule.amount_property)}: Freshsales needs one to create the deal")
    if rule.stage:
        fields["deal_stage_id"] = deal_stage_id(b.schema, rule, where)
    if person.record_type == "lead":
        b.note("deal", "info", "Classic leads cannot be linked to deals: the deal is not linked to the person")
    else:
        ensure_person(b, person, "the deal is linked to the person")
        fields["contacts_added_list"] = [ref("person")]
        if b.identity is not None and b.identity.sales_account_ids:
            fields["sales_account_id"] = b.identity.sales_account_ids[0]
            b.note("deal", "info", "linked to the person's primary sales account", "deal.sales_account_id")
    b.add(OperationKind.UPSERT_DEAL, "deal", key={"name": deal_name}, fields=dict(sorted(fields.items())), provides=f"deal:{deal_name}")


HANDLER = RuleHandler(check=check, apply=apply)

__all__ = ["HANDLER", "apply", "check", "deal_stage_id"]
