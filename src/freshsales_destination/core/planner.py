"""The mapping planner: (event, settings, schema, identity) -> operations + explanation.

Pure: no I/O, no clock. Any JSON value as ``event`` gives a :class:`Plan`; only the settings can
make it raise (:class:`MappingConfigError`, when a rule names a selector entry the schema does not
have). :func:`check_settings` finds those problems up front.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from freshsales_destination.core.events_via import EventsWay, events_way
from freshsales_destination.core.explanation import ExplanationEntry, Outcome, Status
from freshsales_destination.core.identity import IdentityState
from freshsales_destination.core.mapping_settings import (
    AutoRule,
    DealRule,
    DestinationSettings,
    DropRule,
    LifecycleStageRule,
    NoteRule,
    SalesActivityRule,
    TrackApiRule,
    find_rule,
    template_placeholders,
)
from freshsales_destination.core.operations import Operation, ref
from freshsales_destination.core.schema import FieldDef, FieldSchema, MappingConfigError
from freshsales_destination.core.segment import format_time, parse_time
from freshsales_destination.core.traits import (
    ACCOUNT_ALIASES,
    DEAL_ALIASES,
    PERSON_ALIASES,
    FieldMapping,
    camel_to_snake,
    coerce,
    looks_like_email,
    map_object,
)

NOTE_LIMIT = 10_000
_AMOUNT = FieldDef(name="amount", type="decimal")


@dataclass(frozen=True)
class Plan:
    """The planner's answer: what to do (``operations``, in order) and why (``explanation``)."""

    status: Status
    operations: tuple[Operation, ...] = ()
    explanation: tuple[ExplanationEntry, ...] = ()
    reason: str | None = None
    reason_code: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "operations": [op.to_json() for op in self.operations],
            "explanation": {
                "status": self.status,
                "reason_code": self.reason_code,
                "reason": self.reason,
                "entries": [e.to_json() for e in self.explanation],
            },
        }


class _Stop(Exception):
    """Ends planning early with a discarded or filtered plan."""

    def __init__(self, status: Status, code: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.code = code
        self.reason = reason


def _text(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _is_true(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.strip().casefold() == "true")


def _targetable(record_type: str | None) -> Any:
    if record_type == "contact":
        return "Contact"
    if record_type == "lead":
        return "Lead"
    return ref("person_type")


@dataclass
class _Person:
    user_id: str | None
    email: str | None
    record_type: str | None  # "lead" | "contact" | None (Classic, not known yet)


@dataclass
class _Builder:
    event: Mapping[str, Any]
    settings: DestinationSettings
    schema: FieldSchema
    identity: IdentityState | None
    message_id: str = ""
    timestamp: str | None = None
    user_id: str | None = None
    ops: list[Operation] = field(default_factory=list)
    entries: list[ExplanationEntry] = field(default_factory=list)

    # -- small helpers ------------------------------------------------------------------------

    @property
    def classic(self) -> bool:
        return self.settings.product == "classic"

    @property
    def known(self) -> bool:
        return self.identity is not None and self.identity.record_id is not None

    def note(self, source: str, outcome: Outcome, reason: str, target: str | None = None) -> None:
        self.entries.append(ExplanationEntry(source, outcome, reason, target))

    def add(
        self,
        kind: str,
        entity: str,
        *,
        key: dict[str, Any] | None = None,
        fields: dict[str, Any] | None = None,
        provides: str | None = None,
        api_call: bool = True,
    ) -> Operation:
        op = Operation(
            kind=kind,
            entity=entity,
            key=key or {},
            fields=fields or {},
            provides=provides,
            idempotency_key=f"{self.message_id}:{len(self.ops)}",
            api_call=api_call,
            user_id=self.user_id,
            timestamp=self.timestamp,
        )
        self.ops.append(op)
        return op

    def provided(self, name: str) -> bool:
        return any(op.provides == name for op in self.ops)

    def obj(self, key: str, container: Mapping[str, Any] | None = None) -> dict[str, Any]:
        source = self.event if container is None else container
        value = source.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.note(key, "dropped", f"{key} is not an object")
            return {}
        return value

    def drop_all(self, values: Mapping[str, Any], prefix: str, reason: str) -> None:
        for k in sorted(values):
            self.note(f"{prefix}.{k}", "dropped", reason)

    # -- people ---------------------------------------------------------------------------------

    def record_type_for(self, traits: Mapping[str, Any], prefix: str, *, note: bool) -> str | None:
        """Suite: contact. Classic: contact on fsContact, else the known type, else lead."""
        flag_key = next((k for k in ("fsContact", "fs_contact") if k in traits), None)
        if not self.classic:
            if flag_key and note:
                self.note(f"{prefix}.{flag_key}", "used", "Suite has contacts only (no leads)")
            return "contact"
        flag_key = next((k for k in ("fsContact", "fs_contact") if k in traits), None)
        flag = _is_true(traits[flag_key]) if flag_key else False
        if flag_key and note:
            if flag:
                self.note(f"{prefix}.{flag_key}", "used", "fsContact is true: a contact, not a lead")
            else:
                self.note(
                    f"{prefix}.{flag_key}",
                    "used",
                    "fsContact is not true (true or \"true\"): not asking for a contact",
                )
        if flag:
            return "contact"
        if self.identity is not None and self.identity.record_type is not None:
            if note:
                self.note(
                    "identity",
                    "info",
                    f"the person is known as a Classic {self.identity.record_type}",
                )
            return self.identity.record_type
        return "lead" if note else None

    def person_key(self, person: _Person) -> dict[str, Any]:
        key: dict[str, Any] = {}
        entity = "contacts" if person.record_type == "contact" else "leads"
        if person.user_id is not None:
            key["external_id"] = person.user_id
        if person.email is not None:
            key["emails" if entity == "contacts" else "email"] = person.email
        return key

    def ensure_person(self, person: _Person, why: str) -> None:
        """Make ``{"ref": "person"}`` resolvable: a lookup unless the person is known."""
        if self.provided("person") or self.known:
            return
        entity = person.record_type or "person"
        key = self.person_key(person)
        if person.record_type is None:
            key = {k: v for k, v in key.items() if k == "external_id"}
            if person.email is not None:
                key["email"] = person.email
        self.add("lookup_person", entity, key=key, provides="person")
        if person.email is not None:
            how = "so it is looked up by email"
        else:
            how = ("and it has no email to look it up by (a lookup by external_id is unattested, "
                   "so none is made)")
        self.note(
            "identity",
            "info",
            f"{why}: the person is not in the identity map yet, {how}; "
            "the rest of the plan is skipped when Freshsales has no such person",
        )

    def upsert_person(self, traits: Mapping[str, Any], prefix: str, person: _Person) -> None:
        """identify (or context.traits): the lead/contact upsert, its account and its deal."""
        assert person.user_id is not None and person.email is not None
        record_type = person.record_type or "lead"
        entity = "contacts" if record_type == "contact" else "leads"
        label = record_type
        ent = self.schema.entity(entity)
        skip = {k: "" for k in ("email", "company", "deal", "fsContact", "fs_contact", "name")}
        mapping = map_object(
            traits,
            entity=entity,
            schema=self.schema,
            source_prefix=prefix,
            aliases=PERSON_ALIASES,
            skip=skip,
        )
        self._split_name(traits, prefix, mapping, ent.get("first_name"), ent.get("last_name"), label)
        fields = mapping.merged()
        email_field = "emails" if entity == "contacts" else "email"
        fields[email_field] = person.email
        if ent.get("external_id") is not None:
            fields["external_id"] = person.user_id
            self.note("userId", "used", "identifies the person; kept as external_id", f"{label}.external_id")
        else:
            self.note(
                "userId",
                "used",
                f"identifies the person; {entity} have no external_id field, so it is matched by email",
            )
        if "email" in traits:
            self.note(f"{prefix}.email", "mapped", "the person's email", f"{label}.{email_field}")
        else:
            self.note("userId", "info", "the userId is an email: used as the email", f"{label}.{email_field}")
        if not self.known:
            self._defaults_for_new(fields, entity, label)
        company = self._company(traits, prefix, record_type, fields)
        deal = self._deal(traits, prefix, record_type, fields)
        key = self.person_key(_Person(person.user_id, person.email, record_type))
        if ent.get("external_id") is None:
            key.pop("external_id", None)
        self.entries.extend(mapping.entries)
        self.add(f"upsert_{record_type}", record_type, key=key, fields=dict(sorted(fields.items())), provides="person")
        if company is not None:
            self._account_ops(*company)
        if deal is not None:
            self._deal_op(*deal, account=company[0] if company else None)

    def _split_name(
        self,
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
            self.note(source, "dropped", "name is not a non-empty string")
            return
        if mapping.has("first_name") or mapping.has("last_name"):
            self.note(source, "dropped", "first or last name given; name is not split")
            return
        words = name.split()
        if first is None or last is None:
            self.note(source, "dropped", "the schema has no first_name/last_name fields")
            return
        if len(words) == 1:
            mapping.fields["last_name"] = words[0]
            self.note(source, "mapped", "a one-word name becomes the last name", f"{label}.last_name")
            return
        mapping.fields["first_name"] = " ".join(words[:-1])
        mapping.fields["last_name"] = words[-1]
        self.note(
            source,
            "mapped",
            "split: the last word is the last name, the rest the first name",
            f"{label}.first_name,{label}.last_name",
        )

    def _defaults_for_new(self, fields: dict[str, Any], entity: str, label: str) -> None:
        mapping = self.settings.mapping
        if mapping.default_lifecycle_stage and not self.classic and "lifecycle_stage_id" not in fields:
            fields["lifecycle_stage_id"] = self.schema.require(
                "lifecycle_stages", mapping.default_lifecycle_stage, "mapping.default_lifecycle_stage"
            )
            self.note(
                "settings.default_lifecycle_stage",
                "info",
                f"a person not seen before gets the lifecycle stage {mapping.default_lifecycle_stage!r}",
                f"{label}.lifecycle_stage_id",
            )
        if mapping.default_owner_email and "owner_id" not in fields:
            fields["owner_id"] = self.schema.require(
                "owners", mapping.default_owner_email, "mapping.default_owner_email"
            )
            self.note(
                "settings.default_owner_email",
                "info",
                f"a person not seen before is owned by {mapping.default_owner_email}",
                f"{label}.owner_id",
            )

    def _named_object(self, traits: Mapping[str, Any], key: str, prefix: str) -> tuple[str, dict[str, Any]] | None:
        source = f"{prefix}.{key}"
        if key not in traits:
            return None
        raw = traits[key]
        if isinstance(raw, str) and raw.strip():
            return raw.strip(), {"name": raw}
        if not isinstance(raw, dict):
            self.note(source, "dropped", f"{key} must be an object with a name (or a name)")
            return None
        name = _text(raw.get("name"))
        if name is None:
            if raw:
                self.drop_all(raw, source, f"{key} has no name, and Freshsales finds it by name")
            else:
                self.note(source, "dropped", f"{key} is empty")
            return None
        return name, raw

    def _company(
        self, traits: Mapping[str, Any], prefix: str, record_type: str, person_fields: dict[str, Any]
    ) -> tuple[str, FieldMapping] | None:
        found = self._named_object(traits, "company", prefix)
        if found is None:
            return None
        name, raw = found
        source = f"{prefix}.company"
        mapping = FieldMapping()
        mapping.sources["sales_account.name"] = f"{source}.name"
        map_object(
            raw,
            entity="sales_accounts",
            schema=self.schema,
            source_prefix=source,
            aliases=ACCOUNT_ALIASES,
            skip={"name": ""},
            out=mapping,
        )
        if record_type == "lead":
            nested = {"name": name, **dict(sorted(mapping.fields.items()))}
            for entry in mapping.entries:
                if entry.outcome == "mapped" and entry.target and ".custom_field." in entry.target:
                    entry = ExplanationEntry(
                        entry.source,
                        "dropped",
                        "a Classic lead's company carries standard fields only",
                        entry.target,
                    )
                elif entry.target and entry.target.startswith("sales_account."):
                    entry = ExplanationEntry(
                        entry.source, entry.outcome, entry.reason, "lead.company." + entry.target[len("sales_account.") :]
                    )
                self.entries.append(entry)
            person_fields["company"] = nested
            self.note(f"{source}.name", "mapped", "the company rides on the Classic lead", "lead.company.name")
            return None
        self.note(f"{source}.name", "used", "the sales account is upserted by name", "sales_account.name")
        self.entries.extend(mapping.entries)
        return name, mapping

    def _account_ops(self, name: str, mapping: FieldMapping) -> None:
        fields = {"name": name, **mapping.merged()}
        self.add(
            "upsert_sales_account",
            "sales_account",
            key={"name": name},
            fields=dict(sorted(fields.items())),
            provides=f"account:{name}",
        )
        self._link(ref(f"account:{name}"), name)

    def _link(self, account: Any, name: str) -> None:
        steal = self.settings.mapping.company_becomes_primary
        primary = steal or not (self.identity is not None and self.identity.sales_account_ids)
        self.add(
            "link_sales_account",
            "contact",
            key={"id": ref("person")},
            fields={"sales_account_id": account, "is_primary": primary},
        )
        self.note(
            "sales_account",
            "info",
            f"{name!r} is added to the contact's accounts in Freshsales, which stay linked"
            + (
                ", as its primary account (mapping.company_becomes_primary)"
                if steal
                else "; it becomes primary only if the contact has none"
            ),
        )

    def _deal(
        self, traits: Mapping[str, Any], prefix: str, record_type: str, person_fields: dict[str, Any]
    ) -> tuple[str, FieldMapping] | None:
        found = self._named_object(traits, "deal", prefix)
        if found is None:
            return None
        name, raw = found
        source = f"{prefix}.deal"
        mapping = FieldMapping()
        mapping.sources["deal.name"] = f"{source}.name"
        map_object(
            raw,
            entity="deals",
            schema=self.schema,
            source_prefix=source,
            aliases=DEAL_ALIASES,
            skip={"name": ""},
            out=mapping,
        )
        if "amount" not in mapping.fields:
            self.note(f"{source}.amount", "info", "no amount: Freshsales needs one to create the deal")
        if record_type == "lead":
            nested = {"name": name, **dict(sorted(mapping.fields.items()))}
            for entry in mapping.entries:
                if entry.outcome == "mapped" and entry.target and ".custom_field." in entry.target:
                    entry = ExplanationEntry(
                        entry.source, "dropped", "a Classic lead's deal carries standard fields only", entry.target
                    )
                elif entry.target and entry.target.startswith("deal."):
                    entry = ExplanationEntry(entry.source, entry.outcome, entry.reason, "lead." + entry.target)
                self.entries.append(entry)
            person_fields["deal"] = nested
            self.note(f"{source}.name", "mapped", "the deal rides on the Classic lead", "lead.deal.name")
            return None
        self.note(f"{source}.name", "used", "the deal is upserted by name", "deal.name")
        self.entries.extend(mapping.entries)
        return name, mapping

    def _deal_op(self, name: str, mapping: FieldMapping, *, account: str | None) -> None:
        fields = {"name": name, **mapping.merged(), "contacts_added_list": [ref("person")]}
        if account is not None:
            fields["sales_account_id"] = ref(f"account:{account}")
        self.add(
            "upsert_deal",
            "deal",
            key={"name": name},
            fields=dict(sorted(fields.items())),
            provides=f"deal:{name}",
        )
        self.note(
            "deal",
            "info",
            f"deal {name!r} is linked to the contact" + (f" and to {account!r}" if account else ""),
        )

    # -- message types --------------------------------------------------------------------------

    def identify(self) -> None:
        traits = self.obj("traits")
        uid = self.user_id
        if uid is None:
            self._discard_traits(traits, "traits", "missing_user_id", "identify needs a userId: it identifies the lead or contact in Freshsales")
        email = self._email(traits, "traits", uid)
        if email is None:
            raw = traits.get("email")
            if raw is None:
                reason = f"userId {uid!r} is not an email, so traits.email is required"
            else:
                reason = f"userId {uid!r} is not an email and traits.email is not an email address"
            self._discard_traits(traits, "traits", "missing_email", reason)
        record_type = self.record_type_for(traits, "traits", note=True)
        self.upsert_person(traits, "traits", _Person(uid, email, record_type))

    def _email(self, traits: Mapping[str, Any], prefix: str, uid: str | None) -> str | None:
        raw = traits.get("email")
        if looks_like_email(raw):
            return str(raw).strip()
        if raw is not None:
            self.note(f"{prefix}.email", "dropped", "not an email address")
        if uid is not None and looks_like_email(uid):
            return uid
        return None

    def _discard_traits(self, traits: Mapping[str, Any], prefix: str, code: str, reason: str) -> None:
        self.drop_all(traits, prefix, f"event discarded: {reason}")
        raise _Stop("discarded", code, reason)

    def track(self) -> None:
        name = _text(self.event.get("event")) if isinstance(self.event.get("event"), str) else None
        if name is None:
            raise _Stop("discarded", "missing_event_name", "track needs an event name")
        props = self.obj("properties")
        context = self.obj("context")
        ctx_traits = self.obj("traits", context) if context else {}
        person = self._event_person(ctx_traits)
        key, rule = self._pick(self.settings.mapping.track_events, self.settings.mapping.track_default, name, "track_events", "track_default")
        if isinstance(rule, DropRule):
            self.drop_all(ctx_traits, "context.traits", "the event is dropped by its rule")
            raise _Stop("filtered", "rule_drop", rule.reason or f"{key} drops {name!r}")
        if ctx_traits:
            self._context_traits(ctx_traits, person)
        if isinstance(rule, AutoRule):
            key, rule = "events_via", self._events_rule("event", self._events_way())
        self._act(rule, key, name, f"{name}", props, person, page=None)

    def _events_way(self) -> EventsWay:
        s = self.settings
        return events_way(s.events_via, s.has_app_token, s.tracking_api)

    def _events_rule(self, source: str, way: EventsWay) -> Any:
        """The rule standing for ``auto``: the way this destination's events go (events_via)."""
        self.note(source, "info", f"events go by {way.describe()}")
        if way.way == "tracking":
            return TrackApiRule(action="track_api")
        if way.way == "sales_activity":
            return SalesActivityRule(
                action="sales_activity", activity_type=self.settings.events_activity_type or ""
            )
        return NoteRule(action="note")

    def page(self, kind: str) -> None:
        props = self.obj("properties")
        context = self.obj("context")
        page_ctx = self.obj("page", context) if context else {}
        name = _text(self.event.get("name")) if isinstance(self.event.get("name"), str) else None
        if name is None and isinstance(props.get("name"), str):
            name = _text(props.get("name"))
        url = props.get("url") if isinstance(props.get("url"), str) and props.get("url") else None
        url_source = "properties.url"
        if url is None and isinstance(page_ctx.get("url"), str) and page_ctx.get("url"):
            url, url_source = page_ctx["url"], "context.page.url"
        title = props.get("title") if isinstance(props.get("title"), str) else None
        if title is None and isinstance(page_ctx.get("title"), str):
            title = page_ctx["title"]
        person = self._event_person({})
        rules = self.settings.mapping.page_rules
        key, rule = self._pick(rules, self.settings.mapping.page_default, name or "", "page_rules", "page_default")
        if isinstance(rule, AutoRule):
            way = self._events_way()
            if way.basis != "no app_token":
                key, rule = "events_via", self._events_rule(kind, way)
            else:
                raise _Stop(
                    "filtered",
                    "page_not_delivered",
                    f"{kind} views go to the tracking API, and the destination has no app_token "
                    "(set mapping.page_default to record them another way)",
                )
        if isinstance(rule, DropRule):
            raise _Stop("filtered", "rule_drop", rule.reason or f"{key} drops this {kind}")
        label = f"Viewed {kind} {name or url or ''}".strip()
        page = {"url": url, "url_source": url_source, "title": title, "name": name}
        self._act(rule, key, label, name, props, person, page=page)

    def _event_person(self, ctx_traits: Mapping[str, Any]) -> _Person:
        uid = self.user_id
        email = None
        raw = ctx_traits.get("email")
        if looks_like_email(raw):
            email = str(raw).strip()
        elif uid is not None and looks_like_email(uid):
            email = uid
        elif self.identity is not None and looks_like_email(self.identity.email):
            email = self.identity.email
        if uid is None and email is None:
            raise _Stop(
                "discarded",
                "missing_identity",
                f"{self.event.get('type')} needs a userId or an email to find the person",
            )
        record_type = self.record_type_for(ctx_traits, "context.traits", note=False)
        return _Person(uid, email, record_type)

    def _pick(self, rules: Mapping[str, Any], default: Any, name: str, where: str, default_where: str) -> tuple[str, Any]:
        found = find_rule(rules, name) if name else None
        if found is not None:
            key, rule = found
            label = f"mapping.{where}[{key!r}]"
            self.note("event" if where == "track_events" else "name", "used", f"matches {label}: {rule.action}")
            return label, rule
        label = f"mapping.{default_where}"
        self.note("event" if where == "track_events" else "name", "used", f"no rule for {name!r}: {label} ({default.action})")
        return label, default

    def _context_traits(self, ctx_traits: Mapping[str, Any], person: _Person) -> None:
        prefix = "context.traits"
        if person.user_id is None:
            self.drop_all(ctx_traits, prefix, "context.traits update the person only with a userId")
            return
        if person.email is None:
            self.drop_all(ctx_traits, prefix, "context.traits update the person only with an email (context.traits.email or an email userId)")
            return
        record_type = self.record_type_for(ctx_traits, prefix, note=True)
        person.record_type = record_type
        self.upsert_person(ctx_traits, prefix, _Person(person.user_id, person.email, record_type))

    def _act(
        self,
        rule: Any,
        where: str,
        label: str,
        name: str | None,
        props: Mapping[str, Any],
        person: _Person,
        *,
        page: dict[str, Any] | None,
    ) -> None:
        identifier = person.email or person.user_id
        if isinstance(rule, TrackApiRule):
            if not self.settings.has_app_token:
                raise MappingConfigError(
                    f"{where} uses track_api, but the destination has no app_token", kind="app_token"
                )
            if page is None:
                event: dict[str, Any] = {"name": label}
                for k in sorted(props):
                    if k == "name":
                        self.note("properties.name", "dropped", "would overwrite the event name")
                        continue
                    event[k] = props[k]
                if props:
                    self.note("properties", "mapped", f"{len(event) - 1} properties sent with the event", "event")
                self.add("track_event", "event", fields={"identifier": identifier, "event": event})
            else:
                if page["url"] is None:
                    raise _Stop("discarded", "missing_url", "a page view needs properties.url or context.page.url")
                view = {"url": page["url"]}
                self.note(page["url_source"], "mapped", "the page view's url", "page_view.url")
                if page["title"] is not None:
                    view["title"] = page["title"]
                if name is not None:
                    view["name"] = name
                for k in sorted(props):
                    if k not in ("url", "title", "name"):
                        self.note(f"properties.{k}", "dropped", "a page view carries url, title and name only")
                self.add("track_page_view", "page_view", fields={"identifier": identifier, "page_view": view})
            self.note("identifier", "used", f"the tracking API identifies the person by {'email' if person.email else 'userId'}")
            return
        if page is not None:
            # A page view written as a note or activity keeps its url and title.
            props = _page_props(page, props)
        if isinstance(rule, NoteRule):
            title = self._render(rule.title, label, name, props) if rule.title else label
            self.ensure_person(person, "a note needs the person's id")
            description = _describe(title or label, props, self.timestamp)
            self.add(
                "create_note",
                "note",
                fields={
                    "description": description,
                    "targetable_type": _targetable(person.record_type),
                    "targetable_id": ref("person"),
                },
            )
            if props:
                self.note("properties", "mapped", "listed in the note", "note.description")
            return
        if isinstance(rule, SalesActivityRule):
            setting = "events_activity_type" if where == "events_via" else f"{where}.activity_type"
            type_id = self.schema.require("sales_activity_types", rule.activity_type, setting)
            start_date, end_date = self._activity_dates(rule, props)
            title = (self._render(rule.title, label, name, props) if rule.title else None) or label
            self.ensure_person(person, "a sales activity needs the person's id")
            fields: dict[str, Any] = {
                "title": title,
                "sales_activity_type_id": type_id,
                "start_date": start_date,
                "end_date": end_date,
                "notes": _describe(title, props, None),
                "targetable_type": _targetable(person.record_type),
                "targetable_id": ref("person"),
            }
            if rule.owner_email:
                fields["owner_id"] = self.schema.require("owners", rule.owner_email, f"{where}.owner_email")
            self.add("create_sales_activity", "sales_activity", fields=dict(sorted(fields.items())))
            if props:
                self.note("properties", "mapped", "listed in the activity's notes", "sales_activity.notes")
            return
        if isinstance(rule, LifecycleStageRule):
            if self.schema.entity("contacts").get("lifecycle_stage_id") is None:
                raise MappingConfigError(
                    f"{where}: contacts have no lifecycle_stage_id field in this account",
                    kind="lifecycle_stages",
                    name=rule.stage,
                )
            stage_id = self.schema.require("lifecycle_stages", rule.stage, f"{where}.stage")
            if person.record_type == "lead":
                raise _Stop("discarded", "lead_has_no_lifecycle_stage", "lifecycle stages apply to contacts, and this person is a Classic lead")
            self.ensure_person(person, "a lifecycle stage change needs the contact's id")
            self.add(
                "update_lifecycle_stage",
                "contact",
                key={"id": ref("person")},
                fields={"lifecycle_stage_id": stage_id},
            )
            self.note("event", "info", f"sets the lifecycle stage {rule.stage!r}", "contact.lifecycle_stage_id")
            return
        if isinstance(rule, DealRule):
            self._deal_rule(rule, where, label, name, props, person)
            return
        raise AssertionError(f"unhandled rule {rule!r}")  # pragma: no cover

    def _activity_dates(self, rule: SalesActivityRule, props: Mapping[str, Any]) -> tuple[str, str]:
        """A sales activity's start and end: from the properties the rule names when they hold
        dates, else the event's time for the start and the start for the end (an end before the
        start is not sent either). Every choice is explained."""
        start_at: datetime | None
        start = self._property_date(rule.start_date_property, props, "start", "the activity starts at the event's time")
        if start is not None:
            start_text, start_at = start
            self.note(str(rule.start_date_property), "mapped", "the activity's start", "sales_activity.start_date")
        elif self.timestamp is None:
            raise _Stop("discarded", "missing_timestamp", "a sales activity needs the event's timestamp")
        else:
            start_text, start_at = self.timestamp, parse_time(self.timestamp)
        end = self._property_date(rule.end_date_property, props, "end", "the activity ends at its start")
        if end is None:
            return start_text, start_text
        end_text, end_at = end
        setting = str(rule.end_date_property)
        if start_at is not None and end_at < start_at:
            began = "from " + str(rule.start_date_property) if start is not None else "the event's time"
            self.note(setting, "dropped", f"{end_text} is before the activity's start {start_text} "
                      f"({began}): the activity ends at its start", "sales_activity.end_date")
            return start_text, start_text
        self.note(setting, "mapped", "the activity's end", "sales_activity.end_date")
        return start_text, end_text

    def _property_date(
        self, setting: str | None, props: Mapping[str, Any], what: str, fallback: str
    ) -> tuple[str, datetime] | None:
        """The date in the property ``setting`` names (``properties.KEY``); None, explained,
        when there is no such setting, no such property or no date in it."""
        if setting is None:
            return None
        target = f"sales_activity.{what}_date"
        found, value = _property_value(props, setting[len("properties.") :])
        if not found or value is None or value == "":
            self.note(setting, "info", f"not in the event: {fallback}", target)
            return None
        when = parse_time(value)
        if when is None:
            shown = json.dumps(value, ensure_ascii=False, default=str)
            shown = shown if len(shown) <= 60 else shown[:59] + "…"
            self.note(setting, "dropped", f"{shown} is not a date (ISO 8601 expected, such as "
                      f"2024-05-01T10:00:00Z): {fallback}", target)
            return None
        return format_time(when), when

    def _deal_rule(self, rule: DealRule, where: str, label: str, name: str | None, props: Mapping[str, Any], person: _Person) -> None:
        deal_name = self._render(rule.name, label, name, props)
        if deal_name is None:
            needed = ", ".join("|".join(alts) for alts in template_placeholders(rule.name))
            raise _Stop("discarded", "deal_name_unavailable", f"{where}.name needs {needed}")
        fields: dict[str, Any] = {"name": deal_name}
        amount_def = self.schema.entity("deals").get("amount") or _AMOUNT
        for prop in rule.amount_property:
            if prop in props:
                result = coerce(props[prop], amount_def, self.schema)
                if result.ok:
                    fields["amount"] = result.value
                    self.note(f"properties.{prop}", "mapped", "the deal's amount", "deal.amount")
                    break
                self.note(f"properties.{prop}", "dropped", result.reason, "deal.amount")
        if "amount" not in fields:
            self.note("properties", "info", f"no amount in {', '.join(rule.amount_property)}: Freshsales needs one to create the deal")
        if rule.stage:
            fields["deal_stage_id"] = self.schema.require("deal_stages", rule.stage, f"{where}.stage")
        if person.record_type == "lead":
            self.note("deal", "info", "Classic leads cannot be linked to deals: the deal is not linked to the person")
        else:
            self.ensure_person(person, "the deal is linked to the person")
            fields["contacts_added_list"] = [ref("person")]
            if self.identity is not None and self.identity.sales_account_ids:
                fields["sales_account_id"] = self.identity.sales_account_ids[0]
                self.note("deal", "info", "linked to the person's primary sales account", "deal.sales_account_id")
        self.add("upsert_deal", "deal", key={"name": deal_name}, fields=dict(sorted(fields.items())), provides=f"deal:{deal_name}")

    def _render(self, template: str, label: str, name: str | None, props: Mapping[str, Any]) -> str | None:
        values: dict[str, str | None] = {
            "event": label,
            "name": name,
            "userId": self.user_id,
            "messageId": self.message_id,
        }

        def lookup(alt: str) -> str | None:
            if alt.startswith("properties."):
                value = props.get(alt[len("properties.") :])
                if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                    return None
                text = str(value).strip()
                return text or None
            return values.get(alt)

        out = []
        pos = 0
        for match in re.finditer(r"\{([^{}]*)\}", template):
            out.append(template[pos : match.start()])
            for alt in (p.strip() for p in match.group(1).split("|")):
                found = lookup(alt)
                if found is not None:
                    out.append(found)
                    break
            else:
                return None
            pos = match.end()
        out.append(template[pos:])
        return "".join(out).strip() or None

    def group(self) -> None:
        traits = self.obj("traits")
        group_id = _text(self.event.get("groupId"))
        name = _text(traits.get("name")) if isinstance(traits.get("name"), str) else None
        if name is None:
            reason = "group needs traits.name: the sales account is upserted by name"
            self.drop_all(traits, "traits", f"event discarded: {reason}")
            raise _Stop("discarded", "missing_group_name", reason)
        mapping = FieldMapping()
        mapping.sources["sales_account.name"] = "traits.name"
        self.note("traits.name", "used", "the sales account is upserted by name", "sales_account.name")
        setting = self.settings.mapping.group_id_field
        if setting:
            fdef = self.schema.entity("sales_accounts").find((setting, camel_to_snake(setting)), setting)
            if fdef is None:
                self.note("groupId", "dropped", f"no field named {setting} on sales_accounts (mapping.group_id_field)")
            elif group_id is None:
                self.note("groupId", "dropped", "the group call has no groupId")
            else:
                result = coerce(group_id, fdef, self.schema)
                target = f"sales_account.custom_field.{fdef.name}" if fdef.name.startswith("cf_") else f"sales_account.{fdef.name}"
                if result.ok:
                    if fdef.name.startswith("cf_"):
                        mapping.custom[fdef.name] = result.value
                    else:
                        mapping.fields[fdef.name] = result.value
                    mapping.sources[target] = "groupId"
                    self.note("groupId", "mapped", "kept in mapping.group_id_field", target)
                else:
                    self.note("groupId", "dropped", result.reason, target)
        elif group_id is not None:
            self.note("groupId", "dropped", "not stored: set mapping.group_id_field to keep it")
        map_object(
            traits,
            entity="sales_accounts",
            schema=self.schema,
            source_prefix="traits",
            aliases=ACCOUNT_ALIASES,
            skip={"name": ""},
            out=mapping,
        )
        self.entries.extend(mapping.entries)
        fields = {"name": name, **mapping.merged()}
        self.add(
            "upsert_sales_account",
            "sales_account",
            key={"name": name},
            fields=dict(sorted(fields.items())),
            provides=f"account:{name}",
        )
        if not self.known:
            self.note("userId", "info", "the user is not known yet: the account is not linked to a contact")
        elif self.identity is not None and self.identity.record_type == "lead":
            self.note("userId", "info", "the user is a Classic lead: leads carry their company; not linked")
        else:
            self._link(ref(f"account:{name}"), name)

    def alias(self) -> None:
        previous = _text(self.event.get("previousId"))
        if previous is None or self.user_id is None:
            raise _Stop("discarded", "missing_previous_id", "alias needs both previousId and userId")
        self.add(
            "alias",
            "identity",
            key={"previous_id": previous},
            fields={"previous_id": previous, "user_id": self.user_id},
            api_call=False,
        )
        self.note("previousId", "used", "now refers to the same person as userId (identity map only)")

    def delete(self) -> None:
        if self.user_id is None:
            raise _Stop("discarded", "missing_user_id", "delete needs the userId of the person to forget")
        email = self.user_id if looks_like_email(self.user_id) else None
        if email is None and self.identity is not None and looks_like_email(self.identity.email):
            email = self.identity.email
        record_type = "contact" if not self.classic else (self.identity.record_type if self.identity else None)
        person = _Person(self.user_id, email, record_type)
        self.ensure_person(person, "forgetting needs the person's id")
        self.add("forget_contact", record_type or "person", key={"id": ref("person")})
        self.note("userId", "used", "the person is forgotten (GDPR erase) in Freshsales")


def _page_props(page: Mapping[str, Any], props: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(props)
    for key in ("url", "title"):
        if page.get(key) is not None:
            out[key] = page[key]
    return out


def _describe(title: str, props: Mapping[str, Any], timestamp: str | None) -> str:
    lines = [title]
    if timestamp:
        lines.append(f"At: {timestamp}")
    for k in sorted(props):
        value = props[k]
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False)
        lines.append(f"{k}: {text}")
    out = "\n".join(lines)
    return out if len(out) <= NOTE_LIMIT else out[: NOTE_LIMIT - 1] + "…"


def _property_value(props: Mapping[str, Any], path: str) -> tuple[bool, Any]:
    """``props[path]``, else the nested value along ``path``'s dots; (found, value)."""
    if path in props:
        return True, props[path]
    node: Any = props
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _message_id(event: Mapping[str, Any]) -> str:
    mid = event.get("messageId")
    if isinstance(mid, str) and mid.strip():
        return mid.strip()
    canonical = json.dumps(event, sort_keys=True, ensure_ascii=True, default=repr)
    return "event-" + hashlib.sha256(canonical.encode()).hexdigest()[:24]


def _timestamp(event: Mapping[str, Any]) -> str | None:
    for key in ("timestamp", "originalTimestamp", "receivedAt"):
        value = event.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _integrations_enabled(event: Mapping[str, Any], names: list[str]) -> bool:
    integrations = event.get("integrations")
    if not isinstance(integrations, dict):
        return True
    explicit = [integrations[n] for n in names if n in integrations]
    if explicit:
        return any(v is not False for v in explicit)
    return integrations.get("All", True) is not False


_HANDLERS = ("identify", "track", "page", "screen", "group", "alias", "delete")


def plan(
    event: Any,
    settings: DestinationSettings,
    schema: FieldSchema,
    identity: IdentityState | None = None,
) -> Plan:
    """Plan the Freshsales operations for one normalised Segment message."""
    if not isinstance(event, Mapping):
        return Plan(status="discarded", reason="the event is not a JSON object", reason_code="not_an_object")
    builder = _Builder(event=event, settings=settings, schema=schema, identity=identity)
    builder.message_id = _message_id(event)
    builder.timestamp = _timestamp(event)
    builder.user_id = _text(event.get("userId"))
    kind = event.get("type")
    try:
        if kind not in _HANDLERS:
            raise _Stop("discarded", "unsupported_type", f"unsupported message type {kind!r}")
        if settings.mapping.honour_integrations and not _integrations_enabled(
            event, settings.mapping.integration_names
        ):
            raise _Stop("filtered", "integrations_disabled", "the message's integrations object turns this destination off")
        if kind in ("page", "screen"):
            builder.page(str(kind))
        else:
            getattr(builder, str(kind))()
    except _Stop as stop:
        builder.note(str(kind) if isinstance(kind, str) else "type", "info", stop.reason)
        # Nothing of a discarded or filtered message is sent: say so for every trait.
        traits = event.get("traits")
        if isinstance(traits, Mapping):
            explained = {entry.source for entry in builder.entries}
            for key in traits:
                path = f"traits.{key}"
                if not any(s == path or s.startswith(path + ".") for s in explained):
                    builder.note(path, "dropped", f"not sent: {stop.reason}")
        return Plan(
            status=stop.status,
            explanation=_sorted(builder.entries),
            reason=stop.reason,
            reason_code=stop.code,
        )
    return Plan(status="planned", operations=tuple(builder.ops), explanation=_sorted(builder.entries))


def _sorted(entries: list[ExplanationEntry]) -> tuple[ExplanationEntry, ...]:
    # Stable: entries about one source keep the order in which the planner made them.
    return tuple(sorted(entries, key=lambda e: e.source))


def check_settings(settings: DestinationSettings, schema: FieldSchema) -> list[str]:
    """Resolve every name the settings use; raise :class:`MappingConfigError` on the first miss.

    Returns warnings that do not stop delivery (for example a missing group id field).
    """
    mapping = settings.mapping
    warnings: list[str] = []
    if mapping.default_lifecycle_stage:
        if settings.product == "classic":
            warnings.append("mapping.default_lifecycle_stage applies to Suite only; ignored on Classic")
        else:
            schema.require("lifecycle_stages", mapping.default_lifecycle_stage, "mapping.default_lifecycle_stage")
    if mapping.default_owner_email:
        schema.require("owners", mapping.default_owner_email, "mapping.default_owner_email")
    if mapping.group_id_field:
        setting = mapping.group_id_field
        if schema.entity("sales_accounts").find((setting, camel_to_snake(setting)), setting) is None:
            warnings.append(f"mapping.group_id_field: no field named {setting} on sales_accounts; groupId is not stored")
    if settings.events_via == "sales_activity":
        schema.require("sales_activity_types", settings.events_activity_type or "", "events_activity_type")
    rules: list[tuple[str, Any]] = [(f"mapping.track_events[{k!r}]", r) for k, r in sorted(mapping.track_events.items())]
    rules.append(("mapping.track_default", mapping.track_default))
    rules += [(f"mapping.page_rules[{k!r}]", r) for k, r in sorted(mapping.page_rules.items())]
    rules.append(("mapping.page_default", mapping.page_default))
    for where, rule in rules:
        if isinstance(rule, TrackApiRule) and not settings.has_app_token:
            raise MappingConfigError(f"{where} uses track_api, but the destination has no app_token", kind="app_token")
        if isinstance(rule, SalesActivityRule):
            schema.require("sales_activity_types", rule.activity_type, f"{where}.activity_type")
            if rule.owner_email:
                schema.require("owners", rule.owner_email, f"{where}.owner_email")
        if isinstance(rule, LifecycleStageRule):
            if schema.entity("contacts").get("lifecycle_stage_id") is None:
                raise MappingConfigError(
                    f"{where}: contacts have no lifecycle_stage_id field in this account",
                    kind="lifecycle_stages",
                    name=rule.stage,
                )
            schema.require("lifecycle_stages", rule.stage, f"{where}.stage")
        if isinstance(rule, DealRule) and rule.stage:
            schema.require("deal_stages", rule.stage, f"{where}.stage")
    return warnings


__all__ = ["Plan", "check_settings", "plan"]
