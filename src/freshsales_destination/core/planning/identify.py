"""identify: the lead or contact upsert, with its company and deal; and an event's
``context.traits``, which update the person the same way."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn

from freshsales_destination.core.planning.builder import PlanBuilder
from freshsales_destination.core.planning.people import Person, record_type_for, upsert_person
from freshsales_destination.core.planning.result import Stop
from freshsales_destination.core.statuses import PlanStatus
from freshsales_destination.core.traits import looks_like_email


def identify_traits(b: PlanBuilder) -> tuple[dict[str, Any], str]:
    """An identify's traits and where they came from: the top-level ``traits``, or, when
    the message has none (absent, null or empty), its ``context.traits``, where
    RudderStack's SDKs put them (and where RudderStack's own transformers read them)."""
    traits = b.obj("traits")
    context = b.event.get("context")
    ctx_traits = context.get("traits") if isinstance(context, Mapping) else None
    if not isinstance(ctx_traits, dict) or not ctx_traits:
        return traits, "traits"
    if traits:
        b.note(
            "context.traits",
            "info",
            "not used: the identify has top-level traits, and those are its traits",
        )
        return traits, "traits"
    b.note(
        "context.traits",
        "used",
        "the identify has no top-level traits: its context.traits are its traits "
        "(as RudderStack's SDKs send them)",
    )
    return ctx_traits, "context.traits"


def identify(b: PlanBuilder) -> None:
    traits, prefix = identify_traits(b)
    b.traits_prefix = prefix
    uid = b.user_id
    if uid is None:
        _discard_traits(b, traits, prefix, "missing_user_id", "identify needs a userId: it identifies the lead or contact in Freshsales")
    email = _email(b, traits, prefix, uid)
    if email is None:
        raw = traits.get("email")
        if raw is None:
            reason = f"userId {uid!r} is not an email, so {prefix}.email is required"
        else:
            reason = f"userId {uid!r} is not an email and {prefix}.email is not an email address"
        _discard_traits(b, traits, prefix, "missing_email", reason)
    record_type = record_type_for(b, traits, prefix, note=True)
    upsert_person(b, traits, prefix, Person(uid, email, record_type))


def _email(b: PlanBuilder, traits: Mapping[str, Any], prefix: str, uid: str | None) -> str | None:
    raw = traits.get("email")
    if looks_like_email(raw):
        return str(raw).strip()
    if raw is not None:
        b.note(f"{prefix}.email", "dropped", "not an email address")
    if uid is not None and looks_like_email(uid):
        return uid
    return None


def _discard_traits(b: PlanBuilder, traits: Mapping[str, Any], prefix: str, code: str, reason: str) -> NoReturn:
    b.drop_all(traits, prefix, f"event discarded: {reason}")
    raise Stop(PlanStatus.DISCARDED, code, reason)


def context_traits(b: PlanBuilder, ctx_traits: Mapping[str, Any], person: Person) -> None:
    """An event's ``context.traits`` update its person, as an identify would (with a userId
    and an email); ``person.record_type`` becomes the record type asked for."""
    prefix = "context.traits"
    if person.user_id is None:
        b.drop_all(ctx_traits, prefix, "context.traits update the person only with a userId")
        return
    if person.email is None:
        b.drop_all(ctx_traits, prefix, "context.traits update the person only with an email (context.traits.email or an email userId)")
        return
    record_type = record_type_for(b, ctx_traits, prefix, note=True)
    person.record_type = record_type
    upsert_person(b, ctx_traits, prefix, Person(person.user_id, person.email, record_type))


__all__ = ["context_traits", "identify", "identify_traits"]
