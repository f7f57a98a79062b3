"""An identify's ``company`` and ``deal``, and the link from a contact to a sales account.

Suite (and Classic contacts): the sales account and the deal are upserted by name and linked
to the person. A Classic lead carries them as nested objects instead (``fields.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from freshsales_destination.core.operations import OperationKind, ref
from freshsales_destination.core.planning.builder import PlanBuilder, text
from freshsales_destination.core.planning.fields import entries_on_lead, nested_on_lead
from freshsales_destination.core.traits import (
    ACCOUNT_ALIASES,
    DEAL_ALIASES,
    FieldMapping,
    map_object,
)


def _named_object(
    b: PlanBuilder, traits: Mapping[str, Any], key: str, prefix: str
) -> tuple[str, dict[str, Any]] | None:
    source = f"{prefix}.{key}"
    if key not in traits:
        return None
    raw = traits[key]
    if isinstance(raw, str) and raw.strip():
        return raw.strip(), {"name": raw}
    if not isinstance(raw, dict):
        b.note(source, "dropped", f"{key} must be an object with a name (or a name)")
        return None
    name = text(raw.get("name"))
    if name is None:
        if raw:
            b.drop_all(raw, source, f"{key} has no name, and Freshsales finds it by name")
        else:
            b.note(source, "dropped", f"{key} is empty")
        return None
    return name, raw


def company(
    b: PlanBuilder, traits: Mapping[str, Any], prefix: str, record_type: str, person_fields: dict[str, Any]
) -> tuple[str, FieldMapping] | None:
    """``traits.company``: nested in a Classic lead's fields (None), else (name, its fields)."""
    found = _named_object(b, traits, "company", prefix)
    if found is None:
        return None
    name, raw = found
    source = f"{prefix}.company"
    mapping = FieldMapping()
    mapping.sources["sales_account.name"] = f"{source}.name"
    map_object(
        raw,
        entity="sales_accounts",
        schema=b.schema,
        source_prefix=source,
        aliases=ACCOUNT_ALIASES,
        skip={"name": ""},
        out=mapping,
    )
    if record_type == "lead":
        b.entries.extend(entries_on_lead(mapping.entries, "company", "sales_account."))
        person_fields["company"] = nested_on_lead(name, mapping)
        b.note(f"{source}.name", "mapped", "the company rides on the Classic lead", "lead.company.name")
        return None
    b.note(f"{source}.name", "used", "the sales account is upserted by name", "sales_account.name")
    b.entries.extend(mapping.entries)
    return name, mapping


def upsert_account(b: PlanBuilder, name: str, mapping: FieldMapping) -> None:
    """The sales account's upsert by name (providing ``account:<name>``)."""
    fields = {"name": name, **mapping.merged()}
    b.add(
        OperationKind.UPSERT_SALES_ACCOUNT,
        "sales_account",
        key={"name": name},
        fields=dict(sorted(fields.items())),
        provides=f"account:{name}",
    )


def account_ops(b: PlanBuilder, name: str, mapping: FieldMapping) -> None:
    """The sales account's upsert by name, and its link to the person."""
    upsert_account(b, name, mapping)
    link(b, ref(f"account:{name}"), name)


def link(b: PlanBuilder, account: Any, name: str) -> None:
    """Add the account to the contact's accounts (primary only if it has none, by default)."""
    steal = b.settings.mapping.company_becomes_primary
    primary = steal or not (b.identity is not None and b.identity.sales_account_ids)
    b.add(
        OperationKind.LINK_SALES_ACCOUNT,
        "contact",
        key={"id": ref("person")},
        fields={"sales_account_id": account, "is_primary": primary},
    )
    b.note(
        "sales_account",
        "info",
        f"{name!r} is added to the contact's accounts in Freshsales, which stay linked"
        + (
            ", as its primary account (mapping.company_becomes_primary)"
            if steal
            else "; it becomes primary only if the contact has none"
        ),
    )


def deal(
    b: PlanBuilder, traits: Mapping[str, Any], prefix: str, record_type: str, person_fields: dict[str, Any]
) -> tuple[str, FieldMapping] | None:
    """``traits.deal``: nested in a Classic lead's fields (None), else (name, its fields)."""
    found = _named_object(b, traits, "deal", prefix)
    if found is None:
        return None
    name, raw = found
    source = f"{prefix}.deal"
    mapping = FieldMapping()
    mapping.sources["deal.name"] = f"{source}.name"
    map_object(
        raw,
        entity="deals",
        schema=b.schema,
        source_prefix=source,
        aliases=DEAL_ALIASES,
        skip={"name": ""},
        out=mapping,
    )
    if "amount" not in mapping.fields:
        b.note(f"{source}.amount", "info", "no amount: Freshsales needs one to create the deal")
    if record_type == "lead":
        b.entries.extend(entries_on_lead(mapping.entries, "deal", "deal."))
        person_fields["deal"] = nested_on_lead(name, mapping)
        b.note(f"{source}.name", "mapped", "the deal rides on the Classic lead", "lead.deal.name")
        return None
    b.note(f"{source}.name", "used", "the deal is upserted by name", "deal.name")
    b.entries.extend(mapping.entries)
    return name, mapping


def deal_op(b: PlanBuilder, name: str, mapping: FieldMapping, *, account: str | None) -> None:
    """The deal's upsert by name, linked to the person (and to the identify's account)."""
    fields = {"name": name, **mapping.merged(), "contacts_added_list": [ref("person")]}
    if account is not None:
        fields["sales_account_id"] = ref(f"account:{account}")
    b.add(
        OperationKind.UPSERT_DEAL,
        "deal",
        key={"name": name},
        fields=dict(sorted(fields.items())),
        provides=f"deal:{name}",
    )
    b.note(
        "deal",
        "info",
        f"deal {name!r} is linked to the contact" + (f" and to {account!r}" if account else ""),
    )


__all__ = ["account_ops", "company", "deal", "deal_op", "link"]
