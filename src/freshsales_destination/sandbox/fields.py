"""Field metadata per entity: built-in fields, custom fields seeded from a file, and the
validation and coercion of ``custom_field`` values."""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from freshsales_destination.sandbox.errors import SandboxConfigError, validation_error

ENTITIES = ("leads", "contacts", "sales_accounts", "deals", "sales_activities")
CUSTOM_TYPES = (
    "text",
    "textarea",
    "paragraph",
    "number",
    "decimal",
    "date",
    "checkbox",
    "dropdown",
    "multi_select_dropdown",
)
_TYPE_ALIASES = {"multi-select": "multi_select_dropdown", "multi_select": "multi_select_dropdown"}
BASE_MODELS = {
    "leads": "Lead",
    "contacts": "Contact",
    "sales_accounts": "SalesAccount",
    "deals": "Deal",
    "sales_activities": "SalesActivity",
}

DEFAULT_SEED: dict[str, list[dict[str, Any]]] = {
    "leads": [{"name": "cf_alternate_number", "label": "Alternate number", "type": "text"}],
    "contacts": [{"name": "cf_alternate_number", "label": "Alternate number", "type": "text"}],
}

# name, label, type, required: the built-in fields each entity reports in its metadata.
_STANDARD: dict[str, list[tuple[str, str, str, bool]]] = {
    "contacts": [
        ("first_name", "First name", "text", False),
        ("last_name", "Last name", "text", False),
        ("emails", "Emails", "email", False),
        ("job_title", "Job title", "text", False),
        ("work_number", "Work", "text", False),
        ("mobile_number", "Mobile", "text", False),
        ("address", "Address", "textarea", False),
        ("city", "City", "text", False),
        ("state", "State", "text", False),
        ("zipcode", "Zipcode", "text", False),
        ("country", "Country", "text", False),
        ("time_zone", "Time zone", "dropdown", False),
        ("external_id", "External ID", "text", False),
        ("owner_id", "Sales owner", "dropdown", False),
        ("lead_source_id", "Source", "dropdown", False),
        ("contact_status_id", "Status", "dropdown", False),
        ("lifecycle_stage_id", "Lifecycle stage", "dropdown", False),
        ("sales_accounts", "Accounts", "auto_complete", False),
        ("medium", "Medium", "text", False),
        ("keyword", "Keyword", "text", False),
        ("tags", "Tags", "multi_select_dropdown", False),
    ],
    "leads": [
        ("first_name", "First name", "text", False),
        ("last_name", "Last name", "text", True),
        ("email", "Email", "email", False),
        ("job_title", "Job title", "text", False),
        ("work_number", "Work", "text", False),
        ("mobile_number", "Mobile", "text", False),
        ("address", "Address", "textarea", False),
        ("city", "City", "text", False),
        ("country", "Country", "text", False),
        ("owner_id", "Sales owner", "dropdown", False),
        ("lead_source_id", "Source", "dropdown", False),
        ("medium", "Medium", "text", False),
        ("keyword", "Keyword", "text", False),
        ("company", "Company", "group_field", False),
        ("deal", "Deal", "group_field", False),
    ],
    "sales_accounts": [
        ("name", "Name", "text", True),
        ("website", "Website", "text", False),
        ("phone", "Phone", "text", False),
        ("address", "Address", "textarea", False),
        ("city", "City", "text", False),
        ("state", "State", "text", False),
        ("zipcode", "Zipcode", "text", False),
        ("country", "Country", "text", False),
        ("number_of_employees", "Number of employees", "number", False),
        ("annual_revenue", "Annual revenue", "number", False),
        ("industry_type_id", "Industry type", "dropdown", False),
        ("business_type_id", "Business type", "dropdown", False),
        ("owner_id", "Sales owner", "dropdown", False),
        ("tags", "Tags", "multi_select_dropdown", False),
    ],
    "deals": [
        ("name", "Name", "text", True),
        ("amount", "Deal value", "number", True),
        ("currency_id", "Currency", "dropdown", False),
        ("sales_account_id", "Account", "auto_complete", False),
        ("contacts", "Contacts", "auto_complete", False),
        ("deal_pipeline_id", "Deal pipeline", "dropdown", False),
        ("deal_stage_id", "Deal stage", "dropdown", False),
        ("owner_id", "Sales owner", "dropdown", False),
        ("expected_close", "Expected close date", "date", False),
        ("probability", "Probability (%)", "number", False),
        ("tags", "Tags", "multi_select_dropdown", False),
    ],
    "sales_activities": [
        ("title", "Title", "text", True),
        ("sales_activity_type_id", "Activity type", "dropdown", True),
        ("start_date", "Start date", "date_time_split", True),
        ("end_date", "End date", "date_time_split", True),
        ("targetable", "Related to", "auto_complete", True),
        ("notes", "Notes", "textarea", False),
        ("owner_id", "Owner", "dropdown", False),
    ],
}


@dataclass(frozen=True)
class FieldSpec:
    name: str
    label: str
    type: str
    default: bool
    required: bool = False
    choices: tuple[str, ...] = ()
    id: int = 0
    position: int = 0
    base_model: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "name": self.name,
            "label": self.label,
            "type": self.type,
            "default": self.default,
            "actionable": True,
            "position": self.position,
            "required": self.required,
            "visible": True,
            "quick_add_position": None,
            "base_model": self.base_model,
            "field_group": None,
            "choices": [
                {"id": index + 1, "value": value, "position": index + 1}
                for index, value in enumerate(self.choices)
            ],
        }


@dataclass
class FieldRegistry:
    """All field specs per entity, built-in first, then custom."""

    fields: dict[str, list[FieldSpec]] = field(default_factory=dict)

    def for_entity(self, entity: str) -> list[FieldSpec]:
        return self.fields.get(entity, [])

    def custom(self, entity: str) -> dict[str, FieldSpec]:
        return {f.name: f for f in self.for_entity(entity) if not f.default}

    def add_custom(self, entity: str, spec: dict[str, Any]) -> FieldSpec:
        if entity not in ENTITIES:
            raise SandboxConfigError(f"unknown entity {entity!r} in the custom field seed")
        existing = self.fields.setdefault(entity, [])
        made = _custom_spec(entity, spec, position=len(existing) + 1, field_id=_field_id(entity, len(existing)))
        self.fields[entity] = [f for f in existing if f.name != made.name] + [made]
        return made

    def label_map(self, entity: str) -> dict[str, str]:
        """Lower-cased label → internal name, used by the tracking API's visitor properties."""
        return {f.label.lower(): f.name for f in self.for_entity(entity)}


def _field_id(entity: str, index: int) -> int:
    return 80_000_000_000 + ENTITIES.index(entity) * 1_000 + index + 1


def _custom_spec(entity: str, raw: dict[str, Any], position: int, field_id: int) -> FieldSpec:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not raw["name"]:
        raise SandboxConfigError(f"custom field for {entity} needs a string 'name'")
    name = raw["name"]
    if not name.startswith("cf_"):
        raise SandboxConfigError(f"custom field {name!r} must start with 'cf_'")
    ftype = _TYPE_ALIASES.get(str(raw.get("type", "text")), str(raw.get("type", "text")))
    if ftype not in CUSTOM_TYPES:
        raise SandboxConfigError(f"custom field {name!r} has unknown type {ftype!r}")
    choices = raw.get("choices", [])
    if not isinstance(choices, list) or not all(isinstance(c, str | int) for c in choices):
        raise SandboxConfigError(f"custom field {name!r}: choices must be a list of strings")
    if ftype in ("dropdown", "multi_select_dropdown") and not choices:
        raise SandboxConfigError(f"custom field {name!r} of type {ftype} needs choices")
    label = str(raw.get("label") or name[3:].replace("_", " ").capitalize())
    return FieldSpec(
        name=name,
        label=label,
        type=ftype,
        default=False,
        required=bool(raw.get("required", False)),
        choices=tuple(str(c) for c in choices),
        id=field_id,
        position=position,
        base_model=BASE_MODELS[entity],
    )


def load_seed(path: Path | None) -> dict[str, list[dict[str, Any]]]:
    """Read a TOML or JSON seed: ``{entity: [{name, label, type, choices}, ...]}``."""
    if path is None:
        return DEFAULT_SEED
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SandboxConfigError(f"cannot read custom field seed {path}: {exc}") from exc
    try:
        data: Any = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise SandboxConfigError(f"cannot parse custom field seed {path}: {exc}") from exc
    if isinstance(data, dict) and isinstance(data.get("custom_fields"), dict):
        data = data["custom_fields"]
    if not isinstance(data, dict):
        raise SandboxConfigError("the custom field seed must map entity names to lists of fields")
    for entity, specs in data.items():
        if entity not in ENTITIES or not isinstance(specs, list):
            raise SandboxConfigError(f"seed key {entity!r}: expected one of {ENTITIES} with a list")
    return data


def build_registry(seed: dict[str, list[dict[str, Any]]]) -> FieldRegistry:
    registry = FieldRegistry()
    for entity in ENTITIES:
        registry.fields[entity] = [
            FieldSpec(name, label, ftype, True, required, (), _field_id(entity, i), i + 1, BASE_MODELS[entity])
            for i, (name, label, ftype, required) in enumerate(_STANDARD[entity])
        ]
    for entity, specs in seed.items():
        for spec in specs:
            registry.add_custom(entity, spec)
    return registry


_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")


def coerce_value(spec: FieldSpec, value: Any) -> Any:
    """The stored form of ``value`` for ``spec``; raises ``ValueError`` with the expected kind."""
    if value is None:
        return None
    kind = spec.type
    if kind in ("text", "textarea", "paragraph"):
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ValueError("text")
        return str(value)
    if kind == "number":
        if isinstance(value, bool):
            raise ValueError("a number")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
            return int(value.strip())
        raise ValueError("a number")
    if kind == "decimal":
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError("a decimal")
        try:
            number = Decimal(str(value).strip())
        except InvalidOperation as exc:
            raise ValueError("a decimal") from exc
        if not number.is_finite():
            raise ValueError("a decimal")
        return decimal_string(number)
    if kind == "date":
        if not isinstance(value, str) or not _DATE.match(value):
            raise ValueError("a date (YYYY-MM-DD)")
        try:
            return date.fromisoformat(value[:10]).isoformat()
        except ValueError as exc:
            raise ValueError("a date (YYYY-MM-DD)") from exc
    if kind == "checkbox":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ValueError("true or false")
    if kind == "dropdown":
        if isinstance(value, bool) or str(value) not in spec.choices:
            raise ValueError(f"one of {list(spec.choices)}")
        return str(value)
    if kind == "multi_select_dropdown":
        items = value.split(";") if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(i, str | int) for i in items):
            raise ValueError("a list of choices")
        picked = [str(i).strip() for i in items if str(i).strip()]
        if any(p not in spec.choices for p in picked):
            raise ValueError(f"values among {list(spec.choices)}")
        return ";".join(picked)
    return value


def decimal_string(number: Decimal | int | float | str) -> str:
    """Freshsales prints money as ``"5600.0"``: at least one decimal place."""
    text = format(Decimal(str(number)).normalize(), "f")
    if "." not in text:
        text += ".0"
    return text


def validate_custom_fields(
    registry: FieldRegistry, entity: str, values: Any, *, strict: bool
) -> dict[str, Any]:
    """Check and coerce a ``custom_field`` object; strict mode answers 400, lenient drops."""
    if values is None:
        return {}
    if not isinstance(values, dict):
        if strict:
            raise validation_error("The type for custom_field is invalid.")
        return {}
    known = registry.custom(entity)
    out: dict[str, Any] = {}
    problems: list[str] = []
    for name, value in values.items():
        spec = known.get(name)
        if spec is None:
            problems.append(f"Custom field {name} is invalid")
            continue
        try:
            out[name] = coerce_value(spec, value)
        except ValueError as exc:
            problems.append(f"Custom field {name} must be {exc}")
    if problems and strict:
        raise validation_error(*problems)
    return out


def parse_datetime(value: Any) -> bool:
    """True when ``value`` is an ISO date or date-time string."""
    if not isinstance(value, str):
        return False
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True
