"""What delivery remembers between calls, kept in the store so every worker shares it.

* the identity map: userId (and aliases) -> Freshsales record type and id, linked accounts;
* the digest of the fields last written to each record, so unchanged writes make no call;
* ids of accounts and deals by name, so links need no lookup;
* the ledger of completed operations, so a retry or replay never repeats a side effect;
* people by email (the record delivery created or found for an address), and short-lived
  create claims, so that two lanes naming one new email make one record (see `claim_create`).

All of it lives in the store's key/value table under a namespace per destination.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from freshsales_destination.core.identity import IdentityState
from freshsales_destination.store.base import Store

CLAIM_NAMESPACE = "create-claim"


def email_key(email: str) -> str:
    """The form an email is remembered and claimed under: trimmed, lower case.

    Freshsales' matching of email case is not documented (reference section 6); folding case
    here can only make two spellings of one address share a record, never split one.
    """
    return email.strip().lower()


@dataclass(frozen=True)
class CreateClaim:
    """The answer to `DeliveryMemory.claim_create`."""

    granted: bool
    until: float = 0.0  # when another holder's claim lapses (when not granted)
    settling: bool = False  # the holder's create ended without a known outcome


def _claim_value(raw: bytes | None) -> dict[str, Any] | None:
    if not raw:
        return None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("until"), int | float):
        return None
    return value


def _digest(value: Any) -> str:
    return hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()[:20]


_CUSTOM = "custom_field"


def _flat(fields: dict[str, Any]) -> dict[str, Any]:
    """``custom_field: {cf_a: 1}`` as ``custom_field.cf_a: 1``, so each is remembered alone."""
    custom = fields.get(_CUSTOM)
    if not isinstance(custom, dict):
        return fields
    flat = {name: value for name, value in fields.items() if name != _CUSTOM}
    flat.update((f"{_CUSTOM}.{name}", value) for name, value in custom.items())
    return flat


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in flat.items():
        if name.startswith(_CUSTOM + "."):
            out.setdefault(_CUSTOM, {})[name[len(_CUSTOM) + 1:]] = value
        else:
            out[name] = value
    return out


@dataclass
class DeliveryMemory:
    store: Store
    destination: str

    def _ns(self, what: str) -> str:
        return f"{what}:{self.destination}"

    def _get(self, what: str, key: str) -> Any:
        raw = self.store.kv_get(self._ns(what), key)
        return None if raw is None else orjson.loads(raw)

    def _put(self, what: str, key: str, value: Any, now: float) -> None:
        self.store.kv_put(self._ns(what), key, orjson.dumps(value), now=now)

    # -- identities ----------------------------------------------------------------------------

    def canonical_user(self, user_id: str) -> str:
        """Follow aliases (previousId -> userId), at most a few hops."""
        current = user_id
        for _ in range(5):
            target = self._get("alias", current)
            if not isinstance(target, str) or target == current:
                break
            current = target
        return current

    def identity(self, user_id: str | None) -> IdentityState | None:
        if not user_id:
            return None
        data = self._get("identity", self.canonical_user(user_id))
        if not isinstance(data, dict):
            return None
        try:
            return IdentityState.from_json(data)
        except ValueError:
            return None

    def remember_person(
        self,
        user_id: str,
        *,
        record_type: str,
        record_id: Any,
        email: str | None,
        now: float,
        account_id: Any = None,
    ) -> None:
        user = self.canonical_user(user_id)
        old = self.identity(user)
        accounts = list(old.sales_account_ids) if old else []
        if account_id is not None and account_id not in accounts:
            accounts.append(account_id)
        state = IdentityState(
            user_id=user,
            record_type=record_type,  # type: ignore[arg-type]
            record_id=record_id,
            email=email or (old.email if old else None),
            sales_account_ids=tuple(accounts),
            aliases=old.aliases if old else (),
        )
        self._put("identity", user, state.to_json(), now)

    def add_alias(self, previous_id: str, user_id: str, now: float) -> None:
        """`previous_id` is now known as `user_id`: what we know of it carries over."""
        if not previous_id or not user_id or previous_id == user_id:
            return
        old = self.identity(previous_id)
        self._put("alias", previous_id, user_id, now)
        if old is not None and old.record_id is not None and self.identity(user_id) is None:
            moved = {**old.to_json(), "user_id": user_id,
                     "aliases": sorted({*old.aliases, previous_id})}
            self._put("identity", user_id, moved, now)
            if old.record_type is not None:
                written = self._get("written", f"{old.record_type}:{previous_id}")
                if written is not None:
                    self._put("written", f"{old.record_type}:{user_id}", written, now)

    def forget(self, user_id: str, now: float) -> None:
        user = self.canonical_user(user_id)
        self._put("identity", user, {"user_id": user, "forgotten": True}, now)

    # -- record ids and written fields ---------------------------------------------------------

    def record_id(self, entity: str, key: str) -> Any:
        return self._get("record", f"{entity}:{key}")

    def remember_record(self, entity: str, key: str, record_id: Any, now: float) -> None:
        self._put("record", f"{entity}:{key}", record_id, now)

    def changed_fields(self, record: str, fields: dict[str, Any]) -> dict[str, Any]:
        """The fields whose value differs from what we last wrote to `record`.

        Custom fields are compared one by one: ``custom_field`` holds only the changed ones,
        so a value a salesperson changed in the CRM is not written over while our value for it
        stays the same (whoever sends custom fields to a destination that replaces them sends
        the record's whole object, ``delivery/preserve.py``)."""
        written = self._get("written", record) or {}
        return _nest({
            name: value
            for name, value in _flat(fields).items()
            if written.get(name) != _digest(value)
        })

    def forget_written(self, record: str) -> None:
        self._put("written", record, {}, 0.0)

    def remember_written(self, record: str, fields: dict[str, Any], now: float) -> None:
        written = self._get("written", record) or {}
        written.update({name: _digest(value) for name, value in _flat(fields).items()})
        self._put("written", record, written, now)

    # -- people by email and create claims ------------------------------------------------------

    def person_by_email(self, record_type: str, email: str | None) -> Any:
        """The id of the `record_type` record delivery created or found for this email."""
        if not email:
            return None
        return self._get("email", f"{record_type}:{email_key(email)}")

    def remember_email(self, record_type: str, email: str, record_id: Any, now: float) -> None:
        self._put("email", f"{record_type}:{email_key(email)}", record_id, now)

    def forget_email(self, record_type: str, email: str, now: float) -> None:
        self._put("email", f"{record_type}:{email_key(email)}", None, now)

    def claim_create(self, email: str, owner: str, *, now: float, hold: float) -> CreateClaim:
        """Take the right to create the record for `email` for `hold` seconds, atomically.

        Refused while another owner holds an unexpired claim (by this process's clock; `hold`
        is long enough that clocks of different machines agreeing to a few seconds suffice).
        The store's `kv_update` makes this one transaction on SQLite and on PostgreSQL, so
        exactly one lane of all processes on the store gets it.
        """

        def update(raw: bytes | None) -> tuple[CreateClaim, bytes]:
            held = _claim_value(raw)
            if held is not None and held.get("owner") != owner and float(held["until"]) > now:
                refused = CreateClaim(False, float(held["until"]), held.get("state") == "settling")
                return refused, raw or b""
            mine = {"owner": owner, "until": now + hold, "state": "creating"}
            return CreateClaim(True, now + hold), orjson.dumps(mine)

        return self.store.kv_update(
            self._ns(CLAIM_NAMESPACE), email_key(email), update, now=now
        )

    def claim_holder(self, email: str, *, now: float) -> CreateClaim:
        """Who may be creating `email`'s record now (`granted` means: nobody)."""
        held = _claim_value(self.store.kv_get(self._ns(CLAIM_NAMESPACE), email_key(email)))
        if held is None or float(held["until"]) <= now:
            return CreateClaim(True)
        return CreateClaim(False, float(held["until"]), held.get("state") == "settling")

    def end_claim(self, email: str, owner: str, *, now: float, settle: float = 0.0) -> None:
        """Give the claim back; with `settle`, keep it that long first (nobody, not even its
        owner's next attempt, may create until a record the failed call may have made shows
        in lookups)."""

        def update(raw: bytes | None) -> tuple[None, bytes]:
            held = _claim_value(raw)
            if held is None or held.get("owner") != owner:
                return None, raw or b""
            if settle <= 0:
                return None, b""
            return None, orjson.dumps({"owner": "", "until": now + settle, "state": "settling"})

        self.store.kv_update(self._ns(CLAIM_NAMESPACE), email_key(email), update, now=now)

    # -- ledger --------------------------------------------------------------------------------

    def done(self, idempotency_key: str) -> Any:
        return self._get("ledger", idempotency_key)

    def mark_done(self, idempotency_key: str, result: Any, now: float) -> None:
        self._put("ledger", idempotency_key, {"result": result}, now)
