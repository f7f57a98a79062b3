"""Lookup, filtered search and full-text search over the sandbox's records."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from freshsales_destination.sandbox.companies import render_account, render_deal
from freshsales_destination.sandbox.errors import validation_error
from freshsales_destination.sandbox.people import (
    email_key,
    record_emails,
    render_contact,
    render_lead,
)
from freshsales_destination.sandbox.records import page_params, paginate, visible
from freshsales_destination.sandbox.state import EMAIL_KINDS, NAME_KINDS, SandboxState

ENTITY_KINDS = {"contact": "contacts", "lead": "leads", "sales_account": "sales_accounts", "deal": "deals"}


def _kind(state: SandboxState, entity: str) -> str:
    name = entity.strip()
    singular = {plural: single for single, plural in ENTITY_KINDS.items()}.get(name, name)
    if singular not in ENTITY_KINDS or (singular == "lead" and state.options.product != "classic"):
        raise validation_error(f"Invalid entity {entity}")
    return ENTITY_KINDS[singular]


def render_any(state: SandboxState, kind: str, record: dict[str, Any]) -> dict[str, Any]:
    if kind == "contacts":
        return render_contact(state, record, set())
    if kind == "leads":
        return render_lead(record)
    if kind == "sales_accounts":
        return render_account(record)
    return render_deal(state, record, set())


def _values(state: SandboxState, record: dict[str, Any], field: str) -> list[str]:
    """The comparable values of ``field`` on ``record`` (several for emails)."""
    if field in ("email", "emails"):
        return [email_key(state, v) for v in record_emails(record)]
    if field == "phone":
        return [str(record[k]) for k in ("mobile_number", "work_number", "phone") if record.get(k)]
    if field == "name" and "display_name" in record:
        return [str(record.get("display_name") or "").lower()]
    if field.startswith("cf_"):
        value = (record.get("custom_field") or {}).get(field)
    else:
        value = record.get(field)
    if value is None:
        return []
    if isinstance(value, list):
        return [str(v).lower() for v in value]
    return [str(value).lower()]


def _needle(state: SandboxState, field: str, value: Any) -> str:
    text = str(value).strip()
    return email_key(state, text) if field in ("email", "emails") else text.lower()


def _candidates(state: SandboxState, kind: str, field: str, needles: set[str]) -> list[dict[str, Any]]:
    """The records of ``kind`` that may equal one of ``needles`` on ``field``: from the table's
    index when it has one for ``field`` (emails of contacts and leads, names of accounts and
    deals), else the whole table. Always a superset of the matches, in table order for a
    single needle; the caller applies the comparison itself."""
    find: Callable[[str, str], list[dict[str, Any]]]
    if field in ("email", "emails") and kind in EMAIL_KINDS:
        find = state.with_email
    elif field == "name" and kind in NAME_KINDS:
        find = state.with_name
    else:
        return list(state.table(kind).values())
    if len(needles) == 1:
        return find(kind, next(iter(needles)))
    found: dict[int, dict[str, Any]] = {}
    for needle in needles:
        found.update((r["id"], r) for r in find(kind, needle))
    return list(found.values())


def lookup(state: SandboxState, query: Mapping[str, str]) -> dict[str, Any]:
    q, f, entities = query.get("q"), query.get("f"), query.get("entities")
    if not q or not f or not entities:
        raise validation_error("q, f and entities are required")
    out: dict[str, Any] = {}
    for entity in entities.split(","):
        if not entity.strip():
            continue
        kind = _kind(state, entity)
        needle = _needle(state, f, q)
        found = [
            render_any(state, kind, r) for r in _candidates(state, kind, f, {needle})
            if needle in _values(state, r, f) and visible(state, r)
        ]
        out[kind] = {kind: found}
    return out


def _field_of(attribute: str) -> str:
    # "contact_email.email" -> "email", "sales_account.name" -> "name", "cf_tier" -> "cf_tier"
    return attribute.split(".")[-1] if "." in attribute else attribute


_EQUALS = ("is_in", "is", "equals")


def _parts(state: SandboxState, raw: Any) -> tuple[str, Any, Any, set[str]]:
    """A filter rule's field, operator, value and the needles it compares (``_needle``)."""
    if not isinstance(raw, dict) or not isinstance(raw.get("attribute"), str):
        raise validation_error("Each filter_rule needs an attribute, an operator and a value")
    field = _field_of(raw["attribute"])
    operator = raw.get("operator", "is_in")
    value = raw.get("value")
    wanted = {_needle(state, field, v) for v in (value if isinstance(value, list) else [value]) if v is not None}
    return field, operator, value, wanted


def _rule(state: SandboxState, raw: Any) -> Callable[[dict[str, Any]], bool]:
    field, operator, value, wanted = _parts(state, raw)
    if operator in _EQUALS:
        return lambda r: bool(wanted & set(_values(state, r, field)))
    if operator in ("is_not_in", "is_not"):
        return lambda r: not (wanted & set(_values(state, r, field)))
    if operator == "contains":
        return lambda r: any(w in v for w in wanted for v in _values(state, r, field))
    if operator == "is_empty":
        return lambda r: not _values(state, r, field)
    if operator == "is_not_empty":
        return lambda r: bool(_values(state, r, field))
    if operator in ("is_after", "is_before"):
        bound = str(value)
        after = operator == "is_after"
        return lambda r: any((v > bound.lower()) if after else (v < bound.lower()) for v in _values(state, r, field))
    raise validation_error(f"Operator {operator} is invalid")


def filtered_search(
    state: SandboxState, entity: str, body: dict[str, Any], query: Mapping[str, str]
) -> dict[str, Any]:
    kind = _kind(state, entity)
    rules_raw = body.get("filter_rule", [])
    if not isinstance(rules_raw, list):
        raise validation_error("The type for filter_rule is invalid.")
    rules = [_rule(state, r) for r in rules_raw]
    # An equality rule narrows the records to check to its candidates (the sort below orders them).
    pool: list[dict[str, Any]] | None = None
    for raw in rules_raw:
        field, operator, _, wanted = _parts(state, raw)
        if operator in _EQUALS:
            pool = _candidates(state, kind, field, wanted)
            break
    if pool is None:
        pool = list(state.table(kind).values())
    items = [r for r in pool if visible(state, r) and all(rule(r) for rule in rules)]
    sort = body.get("sort") or query.get("sort") or "id"
    reverse = (body.get("sort_type") or query.get("sort_type") or "asc") == "desc"
    items.sort(key=lambda r: (str(r.get(sort) or ""), r["id"]), reverse=reverse)
    page, per_page = page_params(state, {**query, **{k: body[k] for k in ("page", "per_page") if k in body}})
    chunk, meta = paginate(items, page, per_page)
    return {kind: [{**render_any(state, kind, r), "partial": True} for r in chunk], "meta": meta}


def search(state: SandboxState, query: Mapping[str, str]) -> list[dict[str, Any]]:
    q = (query.get("q") or "").strip().lower()
    if not q:
        raise validation_error("q is required")
    include = query.get("include") or "contact,sales_account,deal"
    results: list[dict[str, Any]] = []
    for entity in include.split(","):
        entity = entity.strip()
        if entity == "user":
            for user in state.selectors["owners"]:
                if q in user["display_name"].lower() or q in user["email"].lower():
                    results.append({"id": user["id"], "type": "user", "name": user["display_name"],
                                    "email": user["email"], "avatar": None})
            continue
        if not entity:
            continue
        kind = _kind(state, entity)
        for record in state.table(kind).values():
            if not visible(state, record):
                continue
            name = str(record.get("display_name") or record.get("name") or "")
            emails = record_emails(record)
            if q in name.lower() or any(q in e.lower() for e in emails):
                results.append({"id": record["id"], "type": kind[:-1], "name": name,
                                "email": emails[0] if emails else None, "avatar": None})
    per_page = min(int(query.get("per_page") or 25) if str(query.get("per_page") or "").isdigit() else 25,
                   state.options.max_per_page)
    return results[:per_page]
