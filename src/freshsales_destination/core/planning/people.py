"""Person resolution: who an event is about, how Freshsales finds them, and their upsert.

Suite has contacts only; Classic has leads and contacts (``fsContact`` asks for a contact).
A person the identity map does not know is looked up (by email) before anything that needs
their id; an identify (or an event's ``context.traits``) upserts them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from freshsales_destination.core.operations import OperationKind, ref
from freshsales_destination.core.planning.builder import PlanBuilder, is_true
from freshsales_destination.core.planning.company_deal import (
    account_ops,
    company,
    deal,
    deal_op,
)
from freshsales_destination.core.planning.result import Stop
from freshsales_destination.core.schema import FieldDef
from freshsales_destination.core.statuses import PlanStatus
from freshsales_destination.core.traits import (
    PERSON_ALIASES,
    FieldMapping,
    looks_like_email,
    map_object,
)

_FS_CONTACT = ("fsContact", "fs_contact")
_UPSERT = {"contact": OperationKind.UPSERT_CONTACT, "lead": OperationKind.UPSERT_LEAD}


@dataclass
class Person:
    user_id: str | None
    email: str | None
    record_type: str | None  # "lead" | "contact" | None (Classic, not known yet)


def targetable(record_type: str | None) -> Any:
    """A note's or activity's ``targetable_type``: known now, or resolved with the person."""
    if record_type == "contact":
        return "Contact"
    if record_type == "lead":
        return "Lead"
    return ref("person_type")


def record_type_for(b: PlanBuilder, traits: Mapping[str, Any], prefix: str, *, note: bool) -> str | None:
    """Suite: contact. Classic: contact on fsContact, else the known type, else lead."""
    flag_key = next((k for k in _FS_CONTACT if k in traits), None)
    if not b.classic:
        if flag_key and note:
            b.note(f"{prefix}.{flag_key}", "used", "Suite has contacts only (no leads)")
        return "contact"
    flag = is_true(traits[flag_key]) if flag_key else False
    if flag_key and note:
        if flag:
            b.note(f"{prefix}.{flag_key}", "used", "fsContact is true: a contact, not a lead")
        else:
            b.note(
                f"{prefix}.{flag_key}",
                "used",
                "fsContact is not true (true or \"true\"): not asking for a contact",
            )
    if flag:
        return "contact"
    if b.identity is not None and b.identity.record_type is not None:
        if note:
            b.note(
                "identity",
                "info",
                f"the person is known as a Classic {b.identity.record_type}",
            )
        return b.identity.record_type
    return "lead" if note else None


def person_key(person: Person) -> dict[str, Any]:
    key: dict[str, Any] = {}
    entity = "contacts" if person.record_type == "contact" else "leads"
    if person.user_id is not None:
        key["external_id"] = person.user_id
    if person.email is not None:
        key["emails" if entity == "contacts" else "email"] = person.email
    return key


def ensure_person(b: PlanBuilder, person: Person, why: str) -> None:
    """Make ``{"ref": "person"}`` resolvable: a lookup unless the person is known."""
    if b.provided("person") or b.known:
        return
    entity = person.record_type or "person"
    key = person_key(person)
    if person.record_type is None:
        key = {k: v for k, v in key.items() if k == "external_id"}
        if person.email is not None:
            key["email"] = person.email
    b.add(OperationKind.LOOKUP_PERSON, entity, key=key, provides="person")
    if person.email is not None:
        how = "so it is looked up by email"
    else:
        how = ("and it has no email to look it up by (a lookup by external_id is unattested, "
               "so none is made)")
    b.note(
        "identity",
        "info",
        f"{why}: the person is not in the identity map yet, {how}; "
        "the rest of the plan is skipped when Freshsales has no such person",
    )


def event_person(b: PlanBuilder, ctx_traits: Mapping[str, Any]) -> Person:
    """The person a track, page or screen is about; discards the event when there is none."""
    uid = b.user_id
    email = None
    raw = ctx_traits.get("email")
    if looks_like_email(raw):
        email = str(raw).strip()
    elif uid is not None and looks_like_email(uid):
        email = uid
    elif b.identity is not None and looks_like_email(b.identity.email):
        email = b.identity.email
    if uid is None and email is None:
        raise Stop(
            PlanStatus.DISCARDED,
            "missing_identity",
            f"{b.event.get('type')} needs a userId or an email to find the person",
        )
    record_type = record_type_for(b, ctx_traits, "context.traits", note=False)
    return Person(uid, email, record_type)


def upsert_person(b: PlanBuilder, traits: Mapping[str, Any], prefix: str, person: Person) -> None:
    """identify (or context.traits): the lead/contact upsert, its account and its deal."""
    assert person.user_id is not None and person.email is not None
    record_type = person.record_type or "lead"
    entity = "contacts" if record_type == "contact" else "leads"
    label = record_type
    ent = b.schema.entity(entity)
    skip = {k: "" for k in ("email", "company", "deal", "fsContact", "fs_contact", "name")}
    mapping = map_object(
        traits,
        entity=entity,
        schema=b.schema,
        source_prefix=prefix,
        aliases=PERSON_ALIASES,
        skip=skip,
    )
    _split_name(b, traits, prefix, mapping, ent.get("first_name"), ent.get("last_name"), label)
    fields = mapping.merged()
    email_field = "emails" if entity == "contacts" else "email"
    fields[email_field] = person.email
    if ent.get("external_id") is not None:
        fields["external_id"] = person.user_id
        b.note("userId", "used", "identifies the person; kept as external_id", f"{label}.external_id")
    else:
        b.note(
            "userId",
            "used",
            f"identifies the person; {entity} have no external_id field, so it is matched by email",
        )
    if "email" in traits:
        b.note(f"{prefix}.email", "mapped", "the person's email", f"{label}.{email_field}")
    else:
        b.note("userId", "info", "the userId is an email: used as the email", f"{label}.{email_field}")
    if not b.known:
        _defaults_for_new(b, fields, label)
    account = company(b, traits, prefix, record_type, fields)
    found_deal = deal(b, traits, prefix, record_type, fields)
    key = person_key(Person(person.user_id, person.email, record_type))
    if ent.get("external_id") is None:
        key.pop("external_id", None)
    b.entries.extend(mapping.entries)
    b.add(_UPSERT[record_type], record_type, key=key, fields=dict(sorted(fields.items())), provides="person")
    if account is not None:
        account_ops(b, *account)
    if found_deal is not None:
        deal_op(b, *found_deal, account=account[0] if account else None)


def _split_name(
    b: PlanBuilder,
    traits: Mapping[str, Any],
    prefix: str,
    mapping: FieldMapping,
    first: FieldDef | None,
    last: FieldDef | None,
    label: str,
) -> None:
    if "name" not in traits:
        return
    source = f"{prefix}.name"
    name = traits["name"]
    if not isinstance(name, str) or not name.strip():
        b.note(source, "dropped", "name is not a non-empty string")
        return
    if mapping.has("first_name") or mapping.has("last_name"):
        b.note(source, "dropped", "first or last name given; name is not split")
        return
    words = name.split()
    if first is None or last is None:
        b.note(source, "dropped", "the schema has no first_name/last_name fields")
        return
    if len(words) == 1:
        mapping.fields["last_name"] = words[0]
        b.note(source, "mapped", "a one-word name becomes the last name", f"{label}.last_name")
        return
    mapping.fields["first_name"] = " ".join(words[:-1])
    mapping.fields["last_name"] = words[-1]
    b.note(
        source,
        "mapped",
        "split: the last word is the last name, the rest the first name",
        f"{label}.first_name,{label}.last_name",
    )


def _defaults_for_new(b: PlanBuilder, fields: dict[str, Any], label: str) -> None:
    mapping = b.settings.mapping
    if mapping.default_lifecycle_stage and not b.classic and "lifecycle_stage_id" not in fields:
        fields["lifecycle_stage_id"] = b.schema.require(
            "lifecycle_stages", mapping.default_lifecycle_stage, "mapping.default_lifecycle_stage"
        )
        b.note(
            "settings.default_lifecycle_stage",
            "info",
            f"a person not seen before gets the lifecycle stage {mapping.default_lifecycle_stage!r}",
            f"{label}.lifecycle_stage_id",
        )
    if mapping.default_owner_email and "owner_id" not in fields:
        fields["owner_id"] = b.schema.require(
            "owners", mapping.default_owner_email, "mapping.default_owner_email"
        )
        b.note(
            "settings.default_owner_email",
            "info",
            f"a person not seen before is owned by {mapping.default_owner_email}",
            f"{label}.owner_id",
        )


__all__ = [
    "Person",
    "ensure_person",
    "event_person",
    "person_key",
    "record_type_for",
    "targetable",
    "upsert_person",
]
