"""group: the sales account upserted by name, linked to the contact the user is known as."""

from __future__ import annotations

from freshsales_destination.core.operations import ref
from freshsales_destination.core.planning.builder import PlanBuilder, text
from freshsales_destination.core.planning.company_deal import link, upsert_account
from freshsales_destination.core.planning.fields import field_target, put_field
from freshsales_destination.core.planning.result import Stop
from freshsales_destination.core.statuses import PlanStatus
from freshsales_destination.core.traits import (
    ACCOUNT_ALIASES,
    FieldMapping,
    camel_to_snake,
    coerce,
    map_object,
)


def group(b: PlanBuilder) -> None:
    traits = b.obj("traits")
    group_id = text(b.event.get("groupId"))
    name = text(traits.get("name")) if isinstance(traits.get("name"), str) else None
    if name is None:
        reason = "group needs traits.name: the sales account is upserted by name"
        b.drop_all(traits, "traits", f"event discarded: {reason}")
        raise Stop(PlanStatus.DISCARDED, "missing_group_name", reason)
    mapping = FieldMapping()
    mapping.sources["sales_account.name"] = "traits.name"
    b.note("traits.name", "used", "the sales account is upserted by name", "sales_account.name")
    _group_id(b, group_id, mapping)
    map_object(
        traits,
        entity="sales_accounts",
        schema=b.schema,
        source_prefix="traits",
        aliases=ACCOUNT_ALIASES,
        skip={"name": ""},
        out=mapping,
    )
    b.entries.extend(mapping.entries)
    upsert_account(b, name, mapping)
    if not b.known:
        b.note("userId", "info", "the user is not known yet: the account is not linked to a contact")
    elif b.identity is not None and b.identity.record_type == "lead":
        b.note("userId", "info", "the user is a Classic lead: leads carry their company; not linked")
    else:
        link(b, ref(f"account:{name}"), name)


def _group_id(b: PlanBuilder, group_id: str | None, mapping: FieldMapping) -> None:
    """Keep ``groupId`` in the field ``mapping.group_id_field`` names, when it is set."""
    setting = b.settings.mapping.group_id_field
    if setting:
        fdef = b.schema.entity("sales_accounts").find((setting, camel_to_snake(setting)), setting)
        if fdef is None:
            b.note("groupId", "dropped", f"no field named {setting} on sales_accounts (mapping.group_id_field)")
        elif group_id is None:
            b.note("groupId", "dropped", "the group call has no groupId")
        else:
            result = coerce(group_id, fdef, b.schema)
            target = field_target("sales_account", fdef)
            if result.ok:
                put_field(mapping, fdef, result.value)
                mapping.sources[target] = "groupId"
                b.note("groupId", "mapped", "kept in mapping.group_id_field", target)
            else:
                b.note("groupId", "dropped", result.reason, target)
    elif group_id is not None:
        b.note("groupId", "dropped", "not stored: set mapping.group_id_field to keep it")


__all__ = ["group"]
