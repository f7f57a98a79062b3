"""The Freshsales field schema the planner maps against: fields per entity and selector lists.

Built from ``GET /api/settings/<entity>/fields`` responses and ``GET /api/selector/<name>``
responses (or from a cached copy of them). Pure data: nothing here talks to Freshsales.

``default_schema(product)`` is a built-in stand-in with the standard fields of each entity,
``cf_alternate_number`` (text) on leads and contacts, and the selector names Freshsales ships
with. Its selector ids are placeholders such as ``"<lifecycle_stages:Customer>"``: they show
what would be resolved, and are never meant to reach Freshsales.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from freshsales_destination.errors import FreshsalesDestinationError

ENTITIES: tuple[str, ...] = ("leads", "contacts", "sales_accounts", "deals")

SELECTOR_KINDS: tuple[str, ...] = (
    "owners",
    "lifecycle_stages",
    "lead_sources",
    "sales_activity_types",
    "deal_stages",
    "contact_statuses",
)

# Standard ``*_id`` fields whose values can be given by name and resolved through a selector.
SELECTOR_FOR_FIELD: dict[str, str] = {
    "owner_id": "owners",
    "lifecycle_stage_id": "lifecycle_stages",
    "lead_source_id": "lead_sources",
    "sales_activity_type_id": "sales_activity_types",
    "deal_stage_id": "deal_stages",
    "contact_status_id": "contact_statuses",
}

SELECTOR_LABELS: dict[str, str] = {
    "owners": "owner",
    "lifecycle_stages": "lifecycle stage",
    "lead_sources": "lead source",
    "sales_activity_types": "sales activity type",
    "deal_stages": "deal stage",
    "contact_statuses": "contact status",
}


class MappingConfigError(FreshsalesDestinationError):
    """The mapping settings name something the Freshsales account does not have."""

    def __init__(self, message: str | None = None, *, kind: str = "", name: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.name = name


@dataclass(frozen=True)
class Choice:
    id: int | str
    value: str


@dataclass(frozen=True)
class FieldDef:
    """One field of an entity, as ``settings/<entity>/fields`` describes it."""

    name: str
    type: str = "text"
    label: str = ""
    default: bool = True
    choices: tuple[Choice, ...] = ()

    @property
    def is_custom(self) -> bool:
        return self.name.startswith("cf_") and not self.default

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "label": self.label,
            "default": self.default,
            "choices": [{"id": c.id, "value": c.value} for c in self.choices],
        }


@dataclass(frozen=True)
class SelectorItem:
    """One entry of a selector list: ``name`` is the display name, or the email for owners."""

    id: int | str
    name: str
    aliases: tuple[str, ...] = ()

    def matches(self, wanted: str) -> bool:
        key = wanted.strip().casefold()
        if not key:
            return False
        return key == self.name.casefold() or any(key == a.casefold() for a in self.aliases)


def _normal_key(name: str) -> str:
    return name.replace("_", "").replace("-", "").casefold()


@dataclass(frozen=True)
class EntitySchema:
    entity: str
    fields: tuple[FieldDef, ...] = ()

    def get(self, name: str) -> FieldDef | None:
        for f in self.fields:
            if f.name == name:
                return f
        return None

    def find(self, candidates: tuple[str, ...], loose: str) -> FieldDef | None:
        """Exact names first, then a match ignoring case and underscores (deterministic)."""
        for name in candidates:
            found = self.get(name)
            if found is not None:
                return found
        key = _normal_key(loose)
        hits = sorted((f for f in self.fields if _normal_key(f.name) == key), key=lambda f: f.name)
        return hits[0] if hits else None


@dataclass(frozen=True)
class FieldSchema:
    entities: tuple[EntitySchema, ...] = ()
    selectors: tuple[tuple[str, tuple[SelectorItem, ...]], ...] = ()

    def entity(self, name: str) -> EntitySchema:
        for e in self.entities:
            if e.entity == name:
                return e
        return EntitySchema(entity=name)

    def selector(self, kind: str) -> tuple[SelectorItem, ...]:
        for k, items in self.selectors:
            if k == kind:
                return items
        return ()

    def resolve(self, kind: str, name: str) -> int | str | None:
        """The id of the selector entry named ``name`` (an email for owners), or None."""
        if not isinstance(name, str):
            return None
        for item in self.selector(kind):
            if item.matches(name):
                return item.id
        for item in self.selector(kind):
            if str(item.id) == name.strip():
                return item.id
        return None

    def require(self, kind: str, name: str, where: str) -> int | str:
        """Like :meth:`resolve`, for names from the settings: an unknown name is a config error."""
        found = self.resolve(kind, name)
        if found is None:
            label = SELECTOR_LABELS.get(kind, kind)
            known = ", ".join(sorted(i.name for i in self.selector(kind))) or "none in the schema"
            raise MappingConfigError(
                f"{where}: no {label} named {name!r} in Freshsales (known: {known})",
                kind=kind,
                name=name,
            )
        return found

    # -- (de)serialisation ---------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for e in self.entities:
            out[e.entity] = {"fields": [f.to_json() for f in e.fields]}
        sel: dict[str, Any] = {}
        for kind, items in self.selectors:
            rows: list[dict[str, Any]] = []
            for item in items:
                row: dict[str, Any] = {"id": item.id}
                if kind == "owners":
                    row["email"] = item.name
                    if item.aliases:
                        row["display_name"] = item.aliases[0]
                else:
                    row["name"] = item.name
                    if item.aliases:
                        row["internal_name"] = item.aliases[0]
                rows.append(row)
            sel[kind] = rows
        out["selectors"] = sel
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, product: str = "suite") -> FieldSchema:
        """Parse ``{"contacts": {"fields": [...]}, ..., "selectors": {...}}``.

        Entities and selectors that are absent come from :func:`default_schema`. With
        ``"base": "default"`` the listed fields are laid over the default ones (by name)
        instead of replacing them. Raises :class:`MappingConfigError` on a malformed file.
        """
        if not isinstance(data, Mapping):
            raise MappingConfigError("the schema must be a JSON object", kind="schema")
        base = default_schema(product)
        overlay = data.get("base") == "default"
        entities: list[EntitySchema] = []
        for name in ENTITIES:
            raw = data.get(name)
            if raw is None:
                entities.append(base.entity(name))
                continue
            parsed = _parse_fields(name, raw)
            if overlay:
                by_name = {f.name: f for f in base.entity(name).fields}
                for f in parsed:
                    by_name[f.name] = f
                parsed = tuple(by_name.values())
            entities.append(EntitySchema(entity=name, fields=parsed))
        raw_selectors = data.get("selectors") or {}
        if not isinstance(raw_selectors, Mapping):
            raise MappingConfigError("schema selectors must be a JSON object", kind="schema")
        selectors: list[tuple[str, tuple[SelectorItem, ...]]] = []
        for kind in SELECTOR_KINDS:
            raw = raw_selectors.get(kind)
            if raw is None:
                selectors.append((kind, base.selector(kind)))
            else:
                selectors.append((kind, _parse_selector(kind, raw)))
        return cls(entities=tuple(entities), selectors=tuple(selectors))


def _parse_fields(entity: str, raw: Any) -> tuple[FieldDef, ...]:
    rows = raw.get("fields") if isinstance(raw, Mapping) else raw
    if not isinstance(rows, list):
        raise MappingConfigError(f"schema {entity}: expected {{'fields': [...]}}", kind="schema")
    out: list[FieldDef] = []
    for row in rows:
        if not isinstance(row, Mapping) or not isinstance(row.get("name"), str):
            raise MappingConfigError(f"schema {entity}: every field needs a name", kind="schema")
        choices: list[Choice] = []
        for c in row.get("choices") or []:
            if isinstance(c, Mapping) and "id" in c and isinstance(c.get("value"), str):
                cid = c["id"]
                if isinstance(cid, (int, str)) and not isinstance(cid, bool):
                    choices.append(Choice(id=cid, value=c["value"]))
        name = row["name"]
        default = row.get("default")
        out.append(
            FieldDef(
                name=name,
                type=str(row.get("type") or "text"),
                label=str(row.get("label") or ""),
                default=bool(default) if default is not None else not name.startswith("cf_"),
                choices=tuple(choices),
            )
        )
    return tuple(out)


def _parse_selector(kind: str, raw: Any) -> tuple[SelectorItem, ...]:
    rows = raw
    if isinstance(raw, Mapping):  # the API's {"<name>": [...]} (or {"users": [...]})
        rows = raw.get("users" if kind == "owners" else kind, raw.get(kind))
    if not isinstance(rows, list):
        raise MappingConfigError(f"schema selector {kind}: expected a list", kind="schema")
    items: list[SelectorItem] = []
    for row in rows:
        if not isinstance(row, Mapping):
            continue
        rid = row.get("id")
        if isinstance(rid, bool) or not isinstance(rid, (int, str)):
            continue
        if kind == "owners":
            email = row.get("email")
            display = row.get("display_name")
            if not isinstance(email, str):
                continue
            aliases = (display,) if isinstance(display, str) and display else ()
            items.append(SelectorItem(id=rid, name=email, aliases=aliases))
        else:
            name = row.get("name")
            internal = row.get("internal_name")
            if not isinstance(name, str):
                continue
            aliases = (internal,) if isinstance(internal, str) and internal else ()
            items.append(SelectorItem(id=rid, name=name, aliases=aliases))
    return tuple(items)


# -- the built-in default schema --------------------------------------------------------------

_TEXT = "text"
_ID = "dropdown"  # standard *_id fields are dropdowns whose choices Freshsales fills in

_PERSON_COMMON: tuple[tuple[str, str], ...] = (
    ("first_name", _TEXT),
    ("last_name", _TEXT),
    ("job_title", _TEXT),
    ("work_number", _TEXT),
    ("mobile_number", _TEXT),
    ("address", "textarea"),
    ("city", _TEXT),
    ("state", _TEXT),
    ("zipcode", _TEXT),
    ("country", _TEXT),
    ("time_zone", _TEXT),
    ("external_id", _TEXT),
    ("owner_id", _ID),
    ("territory_id", _ID),
    ("lead_source_id", _ID),
    ("campaign_id", _ID),
    ("medium", _TEXT),
    ("keyword", _TEXT),
    ("facebook", _TEXT),
    ("twitter", _TEXT),
    ("linkedin", _TEXT),
)

_CONTACT_SUITE: tuple[tuple[str, str], ...] = (
    ("emails", _TEXT),
    ("contact_status_id", _ID),
    ("lifecycle_stage_id", _ID),
    ("lost_reason_id", _ID),
    ("subscription_status", _TEXT),
    ("work_email", _TEXT),
    ("tags", "tags"),
)

_CONTACT_CLASSIC: tuple[tuple[str, str], ...] = (
    ("emails", _TEXT),
    ("contact_status_id", _ID),
    ("department", _TEXT),
    ("do_not_disturb", "checkbox"),
    ("has_authority", "checkbox"),
    ("tags", "tags"),
)

_LEAD: tuple[tuple[str, str], ...] = (
    ("email", _TEXT),
    ("department", _TEXT),
    ("do_not_disturb", "checkbox"),
    ("has_authority", "checkbox"),
    ("lead_stage_id", _ID),
    ("lead_reason_id", _ID),
)

_ACCOUNT: tuple[tuple[str, str], ...] = (
    ("name", _TEXT),
    ("website", _TEXT),
    ("phone", _TEXT),
    ("address", "textarea"),
    ("city", _TEXT),
    ("state", _TEXT),
    ("zipcode", _TEXT),
    ("country", _TEXT),
    ("number_of_employees", "number"),
    ("annual_revenue", "decimal"),
    ("industry_type_id", _ID),
    ("business_type_id", _ID),
    ("owner_id", _ID),
    ("territory_id", _ID),
    ("parent_sales_account_id", _ID),
    ("facebook", _TEXT),
    ("twitter", _TEXT),
    ("linkedin", _TEXT),
    ("tags", "tags"),
)

_DEAL: tuple[tuple[str, str], ...] = (
    ("name", _TEXT),
    ("amount", "decimal"),
    ("currency_id", _ID),
    ("deal_pipeline_id", _ID),
    ("deal_stage_id", _ID),
    ("deal_reason_id", _ID),
    ("deal_type_id", _ID),
    ("deal_payment_status_id", _ID),
    ("owner_id", _ID),
    ("territory_id", _ID),
    ("lead_source_id", _ID),
    ("campaign_id", _ID),
    ("expected_close", "date"),
    ("closed_date", "date"),
    ("probability", "number"),
    ("tags", "tags"),
)

_ALTERNATE = FieldDef(
    name="cf_alternate_number", type="text", label="Alternate number", default=False
)


def _std(rows: tuple[tuple[str, str], ...]) -> tuple[FieldDef, ...]:
    return tuple(
        FieldDef(name=n, type=t, label=n.replace("_", " ").capitalize(), default=True)
        for n, t in rows
    )


def _placeholder_items(kind: str, names: tuple[str, ...]) -> tuple[SelectorItem, ...]:
    return tuple(SelectorItem(id=f"<{kind}:{n}>", name=n) for n in names)


_DEFAULT_SELECTORS: dict[str, tuple[str, ...]] = {
    "owners": (),
    "lifecycle_stages": ("Lead", "Sales Qualified Lead", "Customer"),
    "lead_sources": (
        "Web", "Organic Search", "Email", "Phone", "Chat", "Web Form", "Referral", "Direct",
        "Paid Search", "Blogs", "Social Media", "Display Ads", "Events", "Webinar",
    ),
    "sales_activity_types": (
        "Chat", "Phone", "Meeting", "Task", "Email", "SMS Outgoing", "SMS Incoming", "Reminder",
    ),
    "deal_stages": ("New", "Won", "Lost"),
    "contact_statuses": ("New", "Contacted", "Interested", "Unqualified", "Customer"),
}


def default_schema(product: str = "suite") -> FieldSchema:
    """Standard fields (API reference §5) plus ``cf_alternate_number`` on leads and contacts."""
    classic = product == "classic"
    contact_rows = _PERSON_COMMON + (_CONTACT_CLASSIC if classic else _CONTACT_SUITE)
    entities = [
        EntitySchema("leads", _std(_PERSON_COMMON + _LEAD) + (_ALTERNATE,) if classic else ()),
        EntitySchema("contacts", _std(contact_rows) + (_ALTERNATE,)),
        EntitySchema("sales_accounts", _std(_ACCOUNT)),
        EntitySchema("deals", _std(_DEAL)),
    ]
    selectors = tuple(
        (kind, _placeholder_items(kind, _DEFAULT_SELECTORS[kind])) for kind in SELECTOR_KINDS
    )
    return FieldSchema(entities=tuple(entities), selectors=selectors)


__all__ = [
    "ENTITIES",
    "SELECTOR_FOR_FIELD",
    "SELECTOR_KINDS",
    "Choice",
    "EntitySchema",
    "FieldDef",
    "FieldSchema",
    "MappingConfigError",
    "SelectorItem",
    "default_schema",
]
