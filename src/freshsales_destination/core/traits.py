"""Trait names to Freshsales fields, and trait values to the field's type.

Every trait handled here yields exactly one explanation entry: mapped to a field, or dropped with
the reason (no such field, read-only, or the type the value could not be coerced to).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from freshsales_destination.core.explanation import ExplanationEntry
from freshsales_destination.core.schema import (
    SELECTOR_FOR_FIELD,
    SELECTOR_LABELS,
    EntitySchema,
    FieldDef,
    FieldSchema,
)

# Entity (settings name) -> how it is named in explanations.
SINGULAR = {
    "contacts": "contact",
    "leads": "lead",
    "sales_accounts": "sales_account",
    "deals": "deal",
}

# Fields Freshsales computes: a trait can never write them.
READ_ONLY = frozenset(
    {
        "id", "display_name", "avatar", "lead_score", "lead_quality", "customer_fit",
        "last_seen", "last_contacted", "last_contacted_mode", "email_status",
        "stage_updated_time", "created_at", "updated_at", "creater_id", "updater_id",
        "open_deals_amount", "open_deals_count", "won_deals_amount", "won_deals_count",
        "recent_note", "web_form_ids", "links", "is_deleted", "record_type_id",
        "base_currency_amount", "expected_deal_value", "age", "rotten_days", "has_products",
        "deal_prediction", "upcoming_activities_time", "system_tags", "team_user_ids",
    }
)

# Fields the planner sets itself from dedicated inputs.
MANAGED = {
    "emails": "the email is taken from traits.email (or an email userId)",
    "email": "the email is taken from traits.email (or an email userId)",
    "external_id": "external_id always holds the userId",
    "sales_accounts": "accounts are linked through traits.company or a group call",
    "sales_account_id": "accounts are linked through traits.company or a group call",
    "custom_field": "send each custom field as its own trait (for example cfAlternateNumber)",
    "company": "traits.company is an object with the account's name",
    "deal": "traits.deal is an object with the deal's name",
    "contacts_added_list": "the deal is linked to the person automatically",
    "contacts_removed_list": "contacts are never unlinked from deals",
    "name": "",  # only meaningful on accounts and deals, handled by the caller
}

# Reserved (and common) trait spellings -> the Freshsales field they fill.
PERSON_ALIASES: dict[str, str] = {
    "firstName": "first_name", "first_name": "first_name", "firstname": "first_name",
    "lastName": "last_name", "last_name": "last_name", "lastname": "last_name",
    "title": "job_title", "phone": "work_number",
    "mobile": "mobile_number", "mobilePhone": "mobile_number",
    "postalCode": "zipcode", "postal_code": "zipcode", "zip": "zipcode",
    "owner": "owner_id", "ownerEmail": "owner_id", "owner_email": "owner_id",
    "lifecycleStage": "lifecycle_stage_id", "lifecycle_stage": "lifecycle_stage_id",
    "leadSource": "lead_source_id", "lead_source": "lead_source_id",
    "contactStatus": "contact_status_id", "contact_status": "contact_status_id",
}

ACCOUNT_ALIASES: dict[str, str] = {
    "employees": "number_of_employees", "employee_count": "number_of_employees",
    "employeeCount": "number_of_employees",
    "industry": "industry_type_id", "postalCode": "zipcode", "postal_code": "zipcode",
    "zip": "zipcode",
    "owner": "owner_id", "ownerEmail": "owner_id", "owner_email": "owner_id",
}

DEAL_ALIASES: dict[str, str] = {
    "stage": "deal_stage_id", "dealStage": "deal_stage_id", "deal_stage": "deal_stage_id",
    "owner": "owner_id", "ownerEmail": "owner_id", "owner_email": "owner_id",
    "leadSource": "lead_source_id", "lead_source": "lead_source_id",
}

# Reserved traits that are deliberately not stored, with the reason.
RESERVED_DROPS: dict[str, str] = {
    "id": "the Segment id trait is not stored; the userId is kept as external_id",
    "createdAt": "created_at is set by Freshsales and is read-only",
    "created_at": "created_at is set by Freshsales and is read-only",
    "avatar": "the avatar is read-only in Freshsales",
    "userId": "the message's userId is used, not a trait",
    "anonymousId": "anonymous ids are not stored in Freshsales",
}

ADDRESS_PARTS: dict[str, str] = {
    "street": "address",
    "city": "city",
    "state": "state",
    "postalCode": "zipcode",
    "postal_code": "zipcode",
    "zip": "zipcode",
    "country": "country",
}

_CAMEL_1 = re.compile(r"(.)([A-Z][a-z]+)")
_CAMEL_2 = re.compile(r"([a-z0-9])([A-Z])")


def camel_to_snake(name: str) -> str:
    """``cfAlternateNumber`` -> ``cf_alternate_number``; snake_case names are unchanged."""
    return _CAMEL_2.sub(r"\1_\2", _CAMEL_1.sub(r"\1_\2", name)).lower()


def looks_like_email(value: Any) -> bool:
    return (
        isinstance(value, str)
        and re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", value.strip()) is not None
    )


# -- coercion -----------------------------------------------------------------------------------

TEXT_TYPES = frozenset(
    {"text", "textarea", "paragraph", "email", "url", "phone_number", "auto_complete"}
)


@dataclass(frozen=True)
class Coerced:
    ok: bool
    value: Any = None
    reason: str = ""


def _fail(reason: str) -> Coerced:
    return Coerced(ok=False, reason=reason)


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _finite_float(value: Any) -> float | None:
    try:
        if isinstance(value, bool):
            return None
        if isinstance(value, (int, float)):
            f = float(value)
        elif isinstance(value, str) and value.strip():
            f = float(value.strip())
        else:
            return None
    except (ValueError, OverflowError):
        return None
    return f if math.isfinite(f) else None


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d{1,30}\s*", value):
        return int(value)
    f = _finite_float(value)
    if f is not None and f.is_integer() and abs(f) < 2**63:
        return int(f)
    return None


def _parse_date(value: str) -> date | None:
    text = value.strip()
    try:
        if len(text) == 10:
            return date.fromisoformat(text)
        return datetime.fromisoformat(text.replace("Z", "+00:00")).date()
    except ValueError:
        return None


def _resolve_id(value: Any, fdef: FieldDef, schema: FieldSchema) -> Coerced:
    if isinstance(value, bool) or not isinstance(value, (int, str)) or value == "":
        return _fail(f"{fdef.name} takes an id or a name, not {_describe(value)}")
    text = str(value).strip()
    for choice in fdef.choices:
        if str(choice.id) == text or choice.value.casefold() == text.casefold():
            return Coerced(ok=True, value=choice.id)
    kind = SELECTOR_FOR_FIELD.get(fdef.name)
    items = schema.selector(kind) if kind else ()
    if kind is not None:
        found = schema.resolve(kind, text)
        if found is not None:
            return Coerced(ok=True, value=found)
    label = SELECTOR_LABELS.get(kind or "", fdef.name.removesuffix("_id").replace("_", " "))
    if not fdef.choices and not items:
        as_int = _as_int(value)
        if as_int is not None:
            return Coerced(ok=True, value=as_int)
        return _fail(
            f"{fdef.name} takes an id; the schema lists no {label}s to resolve {text!r} by name"
        )
    what = "with email" if kind == "owners" else "named"
    return _fail(f"{fdef.name}: no {label} {what} {text!r}")


def coerce(value: Any, fdef: FieldDef, schema: FieldSchema) -> Coerced:
    """``value`` converted to what Freshsales expects for ``fdef``, or the reason it can't be."""
    kind = fdef.type
    if value is None:
        return _fail("null: nothing to write")
    if kind in ("dropdown", "radio") and fdef.name.endswith("_id"):
        return _resolve_id(value, fdef, schema)
    if kind == "number":
        as_int = _as_int(value)
        if as_int is None:
            return _fail(f"{fdef.name} is a number field; {value!r} is not a whole number")
        return Coerced(ok=True, value=as_int)
    if kind == "decimal":
        f = _finite_float(value)
        if f is None:
            return _fail(f"{fdef.name} is a decimal field; {_describe(value)} is not a number")
        return Coerced(ok=True, value=int(f) if f.is_integer() and abs(f) < 2**53 else f)
    if kind == "date":
        if not isinstance(value, str) or (parsed := _parse_date(value)) is None:
            return _fail(f"{fdef.name} is a date field; expected YYYY-MM-DD or an ISO-8601 time")
        return Coerced(ok=True, value=parsed.isoformat())
    if kind in ("date_time_split", "datetime"):
        if not isinstance(value, str):
            return _fail(f"{fdef.name} is a date-time field; expected an ISO-8601 string")
        try:
            stamp = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return _fail(f"{fdef.name} is a date-time field; {value!r} is not ISO-8601")
        return Coerced(ok=True, value=stamp.isoformat())
    if kind == "checkbox":
        if isinstance(value, bool):
            return Coerced(ok=True, value=value)
        if isinstance(value, int) and value in (0, 1):
            return Coerced(ok=True, value=bool(value))
        if isinstance(value, str):
            low = value.strip().casefold()
            if low in ("true", "yes", "1", "on"):
                return Coerced(ok=True, value=True)
            if low in ("false", "no", "0", "off"):
                return Coerced(ok=True, value=False)
        return _fail(f"{fdef.name} is a checkbox; {value!r} is not true or false")
    if kind in ("dropdown", "radio"):
        if isinstance(value, (dict, list)) or isinstance(value, bool):
            return _fail(f"{fdef.name} is a dropdown; {_describe(value)} is not one of its choices")
        text = str(value).strip()
        if not fdef.choices:
            return Coerced(ok=True, value=text)
        for choice in fdef.choices:
            if choice.value.casefold() == text.casefold() or str(choice.id) == text:
                return Coerced(ok=True, value=choice.value)
        options = ", ".join(c.value for c in fdef.choices)
        return _fail(f"{fdef.name} is a dropdown; {text!r} is not one of its choices ({options})")
    if kind == "multi_select_dropdown":
        parts: list[Any]
        if isinstance(value, str):
            parts = [p for p in re.split(r"[;,]", value)]
        elif isinstance(value, list):
            parts = value
        else:
            return _fail(f"{fdef.name} is a multi-select; expected a list or a ';'-separated string")
        picked: list[str] = []
        for part in parts:
            if isinstance(part, (dict, list, bool)) or part is None:
                return _fail(f"{fdef.name} is a multi-select; {_describe(part)} is not a choice")
            text = str(part).strip()
            if not text:
                continue
            match = text
            if fdef.choices:
                hit = [c.value for c in fdef.choices if c.value.casefold() == text.casefold()]
                if not hit:
                    return _fail(f"{fdef.name} is a multi-select; {text!r} is not one of its choices")
                match = hit[0]
            if match not in picked:
                picked.append(match)
        return Coerced(ok=True, value=";".join(picked))
    if kind == "tags":
        if isinstance(value, str):
            items: list[Any] = value.split(",")
        elif isinstance(value, list):
            items = value
        else:
            return _fail(f"{fdef.name} takes a list of tags, not {_describe(value)}")
        tags: list[str] = []
        for item in items:
            if not isinstance(item, (str, int, float)) or isinstance(item, bool):
                return _fail(f"{fdef.name} takes a list of tags; {_describe(item)} is not a tag")
            tag = str(item).strip()
            if tag and tag not in tags:
                tags.append(tag)
        return Coerced(ok=True, value=tags)
    # text and every unknown type
    if isinstance(value, bool):
        return Coerced(ok=True, value="true" if value else "false")
    if isinstance(value, str):
        return Coerced(ok=True, value=value)
    if isinstance(value, int):
        return Coerced(ok=True, value=str(value))
    if isinstance(value, float):
        if not math.isfinite(value):
            return _fail(f"{fdef.name} is a text field; the number is not finite")
        return Coerced(ok=True, value=repr(value))
    return _fail(f"{fdef.name} is a text field; {_describe(value)} cannot be written to it")


# -- trait mapping ------------------------------------------------------------------------------


@dataclass
class FieldMapping:
    """The outcome of mapping one object of traits onto one entity."""

    fields: dict[str, Any] = field(default_factory=dict)
    custom: dict[str, Any] = field(default_factory=dict)
    entries: list[ExplanationEntry] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)  # field path -> trait path

    def has(self, name: str) -> bool:
        return name in self.fields

    def merged(self) -> dict[str, Any]:
        out = dict(sorted(self.fields.items()))
        if self.custom:
            out["custom_field"] = dict(sorted(self.custom.items()))
        return out


def _write(
    out: FieldMapping,
    source: str,
    value: Any,
    fdef: FieldDef,
    schema: FieldSchema,
    label: str,
    why: str,
) -> None:
    custom = fdef.name.startswith("cf_")
    path = f"{label}.custom_field.{fdef.name}" if custom else f"{label}.{fdef.name}"
    if path in out.sources:
        out.entries.append(
            ExplanationEntry(
                source, "dropped", f"{fdef.name} is already set from {out.sources[path]}", path
            )
        )
        return
    result = coerce(value, fdef, schema)
    if not result.ok:
        out.entries.append(ExplanationEntry(source, "dropped", result.reason, path))
        return
    if custom:
        out.custom[fdef.name] = result.value
    else:
        out.fields[fdef.name] = result.value
    out.sources[path] = source
    out.entries.append(ExplanationEntry(source, "mapped", why, path))


def map_object(
    values: Mapping[str, Any],
    *,
    entity: str,
    schema: FieldSchema,
    source_prefix: str,
    aliases: Mapping[str, str],
    skip: Mapping[str, str] | None = None,
    out: FieldMapping | None = None,
) -> FieldMapping:
    """Map ``values`` onto ``entity``'s fields.

    Keys are processed in sorted order, so the result does not depend on the input's key order.
    ``skip`` names keys the caller handles itself; they get no entry here.
    """
    out = out if out is not None else FieldMapping()
    label = SINGULAR.get(entity, entity)
    ent = schema.entity(entity)
    skip = skip or {}
    for key in sorted(values):
        if key in skip:
            continue
        source = f"{source_prefix}.{key}"
        value = values[key]
        if key == "address" and isinstance(value, Mapping):
            _map_address(value, ent, schema, source, label, out)
            continue
        if key in RESERVED_DROPS:
            out.entries.append(ExplanationEntry(source, "dropped", RESERVED_DROPS[key]))
            continue
        _map_one(key, value, ent, schema, source, label, aliases, out)
    return out


def _map_one(
    key: str,
    value: Any,
    ent: EntitySchema,
    schema: FieldSchema,
    source: str,
    label: str,
    aliases: Mapping[str, str],
    out: FieldMapping,
) -> None:
    snake = camel_to_snake(key)
    target = aliases.get(key)
    if target is not None:
        fdef = ent.get(target)
        why = f"{key} maps to {target}"
        if fdef is None:
            out.entries.append(
                ExplanationEntry(source, "dropped", f"no Freshsales field named {target} on {ent.entity}")
            )
            return
    else:
        fdef = ent.find((key, snake), key)
        why = "custom field" if fdef is not None and fdef.name.startswith("cf_") else "standard field"
        if fdef is not None:
            why = f"{why} {fdef.name} ({fdef.type})"
    if fdef is None:
        if snake.startswith("cf_"):
            reason = (
                f"no custom field named {snake} on {ent.entity} "
                "(custom fields must exist in Freshsales; they are never created)"
            )
        else:
            reason = f"no Freshsales field named {snake} on {ent.entity}"
        out.entries.append(ExplanationEntry(source, "dropped", reason))
        return
    if fdef.name in READ_ONLY:
        out.entries.append(
            ExplanationEntry(source, "dropped", f"{fdef.name} is read-only in Freshsales")
        )
        return
    if fdef.name in MANAGED and MANAGED[fdef.name]:
        out.entries.append(ExplanationEntry(source, "dropped", MANAGED[fdef.name]))
        return
    if fdef.name == "name" and ent.entity in ("contacts", "leads"):
        out.entries.append(ExplanationEntry(source, "dropped", "people have no name field"))
        return
    _write(out, source, value, fdef, schema, label, why)


def _map_address(
    address: Mapping[str, Any],
    ent: EntitySchema,
    schema: FieldSchema,
    source: str,
    label: str,
    out: FieldMapping,
) -> None:
    if not address:
        out.entries.append(ExplanationEntry(source, "dropped", "the address object is empty"))
    for part in sorted(address):
        sub = f"{source}.{part}"
        target = ADDRESS_PARTS.get(part)
        if target is None:
            out.entries.append(
                ExplanationEntry(sub, "dropped", f"address.{part} has no Freshsales field")
            )
            continue
        fdef = ent.get(target)
        if fdef is None:
            out.entries.append(
                ExplanationEntry(sub, "dropped", f"no Freshsales field named {target} on {ent.entity}")
            )
            continue
        _write(out, sub, address[part], fdef, schema, label, f"address.{part} maps to {target}")


__all__ = [
    "ACCOUNT_ALIASES",
    "DEAL_ALIASES",
    "PERSON_ALIASES",
    "Coerced",
    "FieldMapping",
    "camel_to_snake",
    "coerce",
    "looks_like_email",
    "map_object",
]
