"""Custom field handling: where a mapped value goes (a standard field or ``custom_field``),
and what a Classic lead's nested ``company`` and ``deal`` objects may carry (standard fields only).

Mapping trait values to fields is ``core/traits.py`` (``map_object``); this module holds the
planner's own decisions about those fields.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from freshsales_destination.core.explanation import ExplanationEntry
from freshsales_destination.core.schema import FieldDef
from freshsales_destination.core.traits import FieldMapping

CUSTOM_PREFIX = "cf_"


def is_custom(fdef: FieldDef) -> bool:
    return fdef.name.startswith(CUSTOM_PREFIX)


def field_target(entity: str, fdef: FieldDef) -> str:
    """The explanation's name for a field: ``sales_account.custom_field.cf_x`` or ``sales_account.x``."""
    return f"{entity}.custom_field.{fdef.name}" if is_custom(fdef) else f"{entity}.{fdef.name}"


def put_field(mapping: FieldMapping, fdef: FieldDef, value: Any) -> None:
    """Store ``value`` in the standard fields or in ``custom_field``, as the field is."""
    if is_custom(fdef):
        mapping.custom[fdef.name] = value
    else:
        mapping.fields[fdef.name] = value


def nested_on_lead(name: str, mapping: FieldMapping) -> dict[str, Any]:
    """The object riding on a Classic lead (``company``, ``deal``): its name and standard fields."""
    return {"name": name, **dict(sorted(mapping.fields.items()))}


def entries_on_lead(
    entries: Iterable[ExplanationEntry], what: str, target_prefix: str
) -> list[ExplanationEntry]:
    """A nested object's explanation as it rides on a Classic lead: custom fields are dropped
    (the lead's ``what`` carries standard fields only) and targets under ``target_prefix``
    (``sales_account.``, ``deal.``) move under ``lead.<what>.``."""
    out: list[ExplanationEntry] = []
    for entry in entries:
        if entry.outcome == "mapped" and entry.target and ".custom_field." in entry.target:
            entry = ExplanationEntry(
                entry.source,
                "dropped",
                f"a Classic lead's {what} carries standard fields only",
                entry.target,
            )
        elif entry.target and entry.target.startswith(target_prefix):
            entry = ExplanationEntry(
                entry.source,
                entry.outcome,
                entry.reason,
                f"lead.{what}." + entry.target[len(target_prefix) :],
            )
        out.append(entry)
    return out


__all__ = [
    "entries_on_lead",
    "field_target",
    "is_custom",
    "nested_on_lead",
    "put_field",
]
