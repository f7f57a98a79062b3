"""delete (Segment's user deletion): forget the person in Freshsales (GDPR erase)."""

from __future__ import annotations

from freshsales_destination.core.operations import OperationKind, ref
from freshsales_destination.core.planning.builder import PlanBuilder
from freshsales_destination.core.planning.people import Person, ensure_person
from freshsales_destination.core.planning.result import Stop
from freshsales_destination.core.statuses import PlanStatus
from freshsales_destination.core.traits import looks_like_email


def delete(b: PlanBuilder) -> None:
    if b.user_id is None:
        raise Stop(PlanStatus.DISCARDED, "missing_user_id", "delete needs the userId of the person to forget")
    email = b.user_id if looks_like_email(b.user_id) else None
    if email is None and b.identity is not None and looks_like_email(b.identity.email):
        email = b.identity.email
    record_type = "contact" if not b.classic else (b.identity.record_type if b.identity else None)
    person = Person(b.user_id, email, record_type)
    ensure_person(b, person, "forgetting needs the person's id")
    b.add(OperationKind.FORGET_CONTACT, record_type or "person", key={"id": ref("person")})
    b.note("userId", "used", "the person is forgotten (GDPR erase) in Freshsales")


__all__ = ["delete"]
