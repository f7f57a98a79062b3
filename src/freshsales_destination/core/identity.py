"""What the delivery engine already knows about a person, as the planner sees it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

RecordType = Literal["lead", "contact"]


@dataclass(frozen=True)
class IdentityState:
    """The engine's identity-map entry for the event's user (None when unknown).

    ``sales_account_ids`` lists the accounts already linked, primary first.
    """

    user_id: str | None = None
    record_type: RecordType | None = None
    record_id: int | str | None = None
    email: str | None = None
    sales_account_ids: tuple[int | str, ...] = ()
    aliases: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "record_type": self.record_type,
            "record_id": self.record_id,
            "email": self.email,
            "sales_account_ids": list(self.sales_account_ids),
            "aliases": list(self.aliases),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> IdentityState:
        record_type = data.get("record_type")
        if record_type not in (None, "lead", "contact"):
            raise ValueError("record_type must be 'lead' or 'contact'")
        record_id = data.get("record_id")
        if record_id is not None and (
            isinstance(record_id, bool) or not isinstance(record_id, (int, str))
        ):
            raise ValueError("record_id must be an integer or a string")
        accounts = tuple(
            a for a in data.get("sales_account_ids") or () if isinstance(a, (int, str))
        )
        aliases = tuple(sorted(str(a) for a in data.get("aliases") or ()))
        user_id = data.get("user_id")
        email = data.get("email")
        return cls(
            user_id=user_id if isinstance(user_id, str) else None,
            record_type=record_type,
            record_id=record_id,
            email=email if isinstance(email, str) else None,
            sales_account_ids=accounts,
            aliases=aliases,
        )


__all__ = ["IdentityState", "RecordType"]
