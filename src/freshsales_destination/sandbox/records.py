"""Helpers shared by every entity: envelopes, typed attributes, ids and partial views."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from freshsales_destination.sandbox.errors import not_found, validation_error
from freshsales_destination.sandbox.fields import (
    decimal_string,
    parse_datetime,
    validate_custom_fields,
)
from freshsales_destination.sandbox.state import SandboxState

ENVELOPE_KEYS = {"unique_identifier", "include"}

# Attribute kinds: "str", "int", "bool", "str_list", "date", "datetime", "decimal", or "sel:<selector>".
Attrs = Mapping[str, str]
# An entity's ``_apply_*``: validate ``attrs`` against a copy of the record, then settle it (creating?).
Apply = Callable[[SandboxState, dict[str, Any], dict[str, Any], bool], None]


def unwrap(body: dict[str, Any], key: str) -> dict[str, Any]:
    """The resource attributes of a wrapped (``{"contact":{...}}``) or unwrapped body."""
    if key in body:
        inner = body[key]
        if not isinstance(inner, dict):
            raise validation_error(f"The type for {key} is invalid.")
        return inner
    return {k: v for k, v in body.items() if k not in ENVELOPE_KEYS}


def as_id(value: Any) -> int | None:
    """An integer id from an int or a digit string; ``None`` otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def human(name: str) -> str:
    text = name[:-3] if name.endswith("_id") else name
    return text.replace("_", " ")


def to_decimal(value: Any, label: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise validation_error(f"{label} is not a number")
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation as exc:
        raise validation_error(f"{label} is not a number") from exc
    if not number.is_finite():
        raise validation_error(f"{label} is not a number")
    return decimal_string(number)


def apply_attrs(state: SandboxState, record: dict[str, Any], attrs: dict[str, Any], spec: Attrs) -> None:
    """Copy known attributes into ``record`` after checking their types; unknown keys are ignored."""
    problems: list[str] = []
    for name, kind in spec.items():
        if name not in attrs:
            continue
        value = attrs[name]
        if value is None:
            record[name] = None
            continue
        try:
            record[name] = _coerce(state, name, kind, value)
        except _Invalid as exc:
            problems.append(str(exc))
    if problems:
        raise validation_error(*problems)


class _Invalid(Exception):
    pass


def _coerce(state: SandboxState, name: str, kind: str, value: Any) -> Any:
    bad = _Invalid(f"The type for {name} is invalid.")
    if kind == "str":
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise bad
        return str(value)
    if kind == "int":
        number = as_id(value)
        if number is None:
            raise bad
        return number
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise bad
    if kind == "str_list":
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad
        return list(value)
    if kind == "date":
        if not isinstance(value, str) or not re.match(r"^\d{4}-\d{2}-\d{2}", value) or not parse_datetime(value):
            raise _Invalid(f"{human(name).capitalize()} is not a valid date")
        return value[:10]
    if kind == "datetime":
        if not parse_datetime(value):
            raise _Invalid(f"{human(name).capitalize()} is not a valid date")
        return value
    if kind == "decimal":
        try:
            return to_decimal(value, human(name).capitalize())
        except Exception as exc:
            raise _Invalid(f"{human(name).capitalize()} is not a number") from exc
    if kind.startswith("sel:"):
        number = as_id(value)
        if number is None:
            raise bad
        selector = kind[4:]
        if number not in {int(item["id"]) for item in state.selectors.get(selector, [])}:
            raise _Invalid(f"Invalid {human(name)} provided.")
        return number
    raise bad  # pragma: no cover - programming error


def apply_custom(state: SandboxState, entity: str, record: dict[str, Any], attrs: dict[str, Any]) -> None:
    if "custom_field" not in attrs:
        return
    values = validate_custom_fields(state.fields, entity, attrs["custom_field"], strict=state.options.strict)
    if state.options.custom_fields == "replace":
        # The pessimistic reading of reference §13.2: the keys not sent are wiped.
        record["custom_field"] = dict(values)
        return
    merged = dict(record.get("custom_field") or {})
    merged.update(values)
    record["custom_field"] = merged


def draft(
    state: SandboxState, entity: str, record: dict[str, Any], attrs: dict[str, Any], spec: Attrs
) -> dict[str, Any]:
    """A copy of ``record`` with the typed attributes of ``spec`` and the custom fields of ``attrs`` applied."""
    candidate = dict(record)
    apply_attrs(state, candidate, attrs, spec)
    apply_custom(state, entity, candidate, attrs)
    return candidate


def public(record: dict[str, Any]) -> dict[str, Any]:
    """A copy without the sandbox's private (underscore) keys."""
    out = {"id": record.get("id")}
    out.update((k, copy.deepcopy(v)) for k, v in record.items() if not k.startswith("_") or k == "_destroy")
    return out


def stamp_new(state: SandboxState, record: dict[str, Any]) -> dict[str, Any]:
    now = state.now_iso()
    record.setdefault("id", state.new_id())
    record["created_at"] = now
    record["updated_at"] = now
    record["_created_epoch"] = state.clock()
    return record


def visible(state: SandboxState, record: dict[str, Any]) -> bool:
    """Whether lookups and searches see ``record`` yet (``lookup_delay`` after its creation).

    Records without a creation time (loaded from an older data file) are always visible.
    """
    delay = state.options.lookup_delay
    if delay <= 0:
        return True
    created = record.get("_created_epoch")
    return not isinstance(created, int | float) or state.clock() - created >= delay


def touch(state: SandboxState, record: dict[str, Any]) -> None:
    record["updated_at"] = state.now_iso()


def settle(state: SandboxState, record: dict[str, Any], candidate: dict[str, Any], creating: bool) -> None:
    """Make the validated ``candidate`` the record's content; an update also moves ``updated_at``."""
    if not creating:
        touch(state, candidate)
    record.clear()
    record.update(candidate)
    state.refresh(record)


def get_or_404(state: SandboxState, kind: str, record_id: int) -> dict[str, Any]:
    record = state.get(kind, record_id)
    if record is None:
        raise not_found()
    return record


def update_record(
    state: SandboxState, kind: str, key: str, record_id: int, body: dict[str, Any], apply: Apply
) -> dict[str, Any]:
    """Apply the (``key``-wrapped) ``body`` to an existing record of ``kind``; 404 when there is none."""
    record = get_or_404(state, kind, record_id)
    apply(state, record, unwrap(body, key), False)
    return state.save(kind, record)


def create_record(
    state: SandboxState, kind: str, attrs: dict[str, Any], new: Callable[[SandboxState], dict[str, Any]],
    apply: Apply,
) -> dict[str, Any]:
    """A fresh record of ``kind`` from ``new``, with ``attrs`` applied as a creation, saved."""
    record = new(state)
    apply(state, record, attrs, True)
    return state.save(kind, record)


def upsert_first(
    state: SandboxState, kind: str, matches: list[dict[str, Any]], attrs: dict[str, Any],
    new: Callable[[SandboxState], dict[str, Any]], apply: Apply,
) -> tuple[dict[str, Any], bool]:
    """Update the first of ``matches`` or create a record; returns (record, created)."""
    if matches:
        record = matches[0]
        apply(state, record, attrs, False)
        return state.save(kind, record), False
    return create_record(state, kind, attrs, new, apply), True


def require_text(attrs: dict[str, Any], name: str, label: str) -> None:
    value = attrs.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise validation_error(f"{label} can't be blank")


def unique_identifier(body: dict[str, Any], allowed: tuple[str, ...]) -> tuple[str, Any]:
    raw = body.get("unique_identifier")
    if not isinstance(raw, dict) or len(raw) != 1:
        raise validation_error(
            "unique_identifier must be an object with exactly one of: " + ", ".join(allowed)
        )
    ((key, value),) = raw.items()
    if key not in allowed:
        raise validation_error(f"{key} is not a valid unique identifier")
    if value is None or (isinstance(value, str) and not value.strip()) or isinstance(value, dict | list | bool):
        raise validation_error(f"The value for unique identifier {key} is invalid.")
    return key, value


def page_params(state: SandboxState, source: Mapping[str, Any]) -> tuple[int, int]:
    page = as_id(source.get("page", 1)) or 1
    per_page = as_id(source.get("per_page", 25)) or 25
    return max(page, 1), min(max(per_page, 1), state.options.max_per_page)


def paginate(items: list[Any], page: int, per_page: int) -> tuple[list[Any], dict[str, int]]:
    total = len(items)
    pages = max((total + per_page - 1) // per_page, 1)
    start = (page - 1) * per_page
    return items[start:start + per_page], {"total_pages": pages, "total": total}
