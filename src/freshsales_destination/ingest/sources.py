"""Sources: write-key lookup, authentication in the three forms Segment's clients use (Basic
auth; ``writeKey`` in the body, alone or beside a Bearer token), webhook-only keys (a source
with a ``webhook_secret`` takes /v1/ only with ``accept_tracking_api``) and webhook signatures."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from freshsales_destination.config import Settings
from freshsales_destination.ingest.responses import IngestError


@dataclass(frozen=True)
class Source:
    id: str  # stored with every message; never the write key itself
    destination: str
    webhook_secret: bytes | None = field(repr=False)  # never in logs or tracebacks
    # Whether /v1/ takes this key: always without a webhook secret; with one, only when the
    # source says accept_tracking_api = true (the signature is the webhook's authentication).
    tracking_api: bool = True
    # Browser origins allowed to send with this key (normalised); None: any origin.
    allowed_origins: frozenset[str] | None = None

    def allows(self, origin: str) -> bool:
        return self.allowed_origins is None or origin in self.allowed_origins


def source_id_for(write_key: str, name: str | None) -> str:
    if name:
        return name
    return "src_" + hashlib.sha256(write_key.encode()).hexdigest()[:12]


class SourceRegistry:
    """Looks sources up by write key in constant time per candidate."""

    def __init__(self, settings: Settings) -> None:
        self._by_key: dict[str, Source] = {}
        # Origins some source allows (None: some source allows any): what a CORS preflight,
        # which carries no write key, is answered for.
        self.any_source_origins: frozenset[str] | None = frozenset()
        for source in settings.sources:
            key = source.write_key.get_secret_value()
            secret = source.webhook_secret.get_secret_value().encode() if source.webhook_secret else None
            origins = None if "*" in source.allowed_origins else frozenset(source.allowed_origins)
            self._by_key[key] = Source(
                source_id_for(key, source.name), source.destination, secret,
                tracking_api=secret is None or source.accept_tracking_api,
                allowed_origins=origins,
            )
            if origins is None or self.any_source_origins is None:
                self.any_source_origins = None
            else:
                self.any_source_origins |= origins

    def __len__(self) -> int:
        return len(self._by_key)

    def lookup(self, write_key: str | None) -> Source | None:
        if not write_key:
            return None
        return self._by_key.get(write_key)


def unauthorized() -> IngestError:
    """A fresh 401 error (never a shared instance: raising one mutates its traceback)."""
    return IngestError(401, "unauthorized", "missing or unknown write key")


def webhook_only() -> IngestError:
    """A 401 for a signed-webhook source's key used on the tracking API."""
    return IngestError(
        401, "webhook_only",
        "this write key takes signed webhooks only (the source has a webhook_secret)",
    )


def basic_auth_user(header: str | None) -> str | None:
    """The user part of an HTTP Basic header (the write key), colon optional; None if absent."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        # The header arrives as latin-1 text: a non-ASCII character in it is a ValueError of
        # b64decode (not a binascii.Error), and the decoded user may not be UTF-8.
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise unauthorized() from None
    user, _, _password = decoded.partition(":")
    return user


def authenticate(
    registry: SourceRegistry, headers: Mapping[str, str], body: Mapping[str, Any] | None
) -> Source:
    """Basic auth first; otherwise ``writeKey`` in the body (alone or beside a Bearer token)."""
    header = headers.get("authorization")
    user = basic_auth_user(header)
    if user is not None:
        source = registry.lookup(user)
        if source is None:
            raise unauthorized()
    else:
        key = body.get("writeKey") if body is not None else None
        source = registry.lookup(key if isinstance(key, str) else None)
        if source is None:
            raise unauthorized()
    if not source.tracking_api:
        raise webhook_only()
    return source


def verify_signature(secret: bytes, body: bytes, signature: str | None) -> bool:
    """Segment's webhook signature: hex HMAC-SHA1 of the raw body, compared in constant time."""
    if not signature:
        return False
    expected = hmac.new(secret, body, hashlib.sha1).hexdigest().encode("ascii")
    # Compared as bytes: a header may hold any latin-1 character, and compare_digest refuses
    # non-ASCII str (a TypeError, which would have been a 500 instead of a 401).
    given = signature.strip().lower().encode("utf-8", "surrogateescape")
    return hmac.compare_digest(expected, given)
