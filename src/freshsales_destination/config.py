"""Service configuration: a TOML file, overridden by environment variables.

Environment overrides use the prefix ``FSD_`` and ``__`` between levels, for example
``FSD_SERVER__PORT=9090`` or ``FSD_DESTINATIONS__ACME__API_KEY=...``. Values are parsed as
TOML scalars when they can be (so ``9090`` is an integer and ``true`` a boolean), otherwise
they are taken as strings.

A configuration error names the key that is wrong, never its value (the value may be a secret).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from freshsales_destination.errors import ConfigError

ENV_PREFIX = "FSD_"

FRESHWORKS_HOST_SUFFIXES = (".myfreshworks.com", ".freshworks.com", ".freshsales.io")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    admin_token: SecretStr | None = None
    # Processes serving the API (and delivering) on the same store; more use more cores.
    workers: int = Field(default=1, ge=1, le=64)
    # Ingest limits (Segment's HTTP Tracking API values by default).
    max_message_bytes: int = Field(default=32 * 1024, gt=0)
    max_request_bytes: int = Field(default=500 * 1024, gt=0)
    max_batch_messages: int = Field(default=2500, gt=0)
    # Group commit: how long a commit waits for more concurrent requests, in seconds. By
    # default none: requests arriving while a commit is in flight form the next one anyway.
    commit_window: float = Field(default=0.0, ge=0)
    # Above this many messages waiting for a commit, requests get 429 with Retry-After.
    max_pending_messages: int = Field(default=50_000, gt=0)
    # Sorting acknowledged requests into queued messages (ingest/sort_loop.py): at full speed
    # once no request has arrived for `sort_idle_after` seconds; while requests keep coming,
    # with what they leave of a core and at least `sort_busy_share` of one; in chunks of
    # `sort_chunk_messages` messages.
    sort_idle_after: float = Field(default=0.02, ge=0)
    sort_busy_share: float = Field(default=0.05, gt=0, le=1)
    sort_chunk_messages: int = Field(default=1000, gt=0)
    # Past this many acknowledged messages waiting to be sorted, requests get 429.
    max_unsorted_messages: int = Field(default=5_000_000, gt=0)


class StoreConfig(_Strict):
    url: str = "sqlite:///data/queue.db"
    dedup_days: int = Field(default=7, ge=1)

    @model_validator(mode="after")
    def _check_scheme(self) -> StoreConfig:
        scheme = urlsplit(self.url).scheme
        if scheme not in ("sqlite", "postgresql", "postgres"):
            raise ValueError("store.url must start with sqlite:/// or postgresql://")
        return self


class SourceConfig(_Strict):
    write_key: SecretStr = Field(min_length=1)
    destination: str = Field(min_length=1)
    webhook_secret: SecretStr | None = None
    name: str | None = None


class DestinationConfig(_Strict):
    product: Literal["suite", "classic"] = "suite"
    domain: str | None = None
    base_url: str | None = None
    allow_custom_base_url: bool = False
    api_key: SecretStr = Field(min_length=1)
    app_token: SecretStr | None = None
    rate_limit_per_hour: int = Field(default=1000, gt=0)
    rate_limit_per_minute: int = Field(default=400, gt=0)
    timeout: float = Field(default=20.0, gt=0)
    # Mapping settings (see docs/mapping.md); validated by the planner's own model.
    mapping: dict[str, Any] = Field(default_factory=dict)
    # Where track and page events go (docs/mapping.md): "auto" = the tracking API where this
    # account has it (learned from its answers), else a note on the person.
    events_via: Literal["auto", "tracking", "sales_activity", "note"] = "auto"
    # The sales activity type (name or id) for events_via = "sales_activity".
    events_activity_type: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _check_events_via(self) -> DestinationConfig:
        if self.events_via == "sales_activity" and self.events_activity_type is None:
            raise ValueError('events_via = "sales_activity" needs events_activity_type')
        if self.events_via == "tracking" and self.app_token is None:
            raise ValueError('events_via = "tracking" needs app_token')
        return self

    @field_validator("domain", "base_url")
    @classmethod
    def _no_blank_or_control(cls, value: str | None) -> str | None:
        # A stray space, tab or newline (a pasted value, an env var) would make a URL the HTTP
        # library refuses or, worse, reads differently; refuse it here, naming the key only.
        if value is not None:
            bad = unusable_url_character(value)
            if bad is not None:
                raise ValueError(f"must not contain whitespace or control characters (found {bad})")
        return value

    @model_validator(mode="after")
    def _check_url(self) -> DestinationConfig:
        if self.base_url is None and not self.domain:
            raise ValueError("set either domain or base_url")
        if self.base_url is not None and not self.allow_custom_base_url:
            if not is_freshworks_https_url(self.base_url):
                raise ValueError(
                    "base_url is not https on a Freshworks domain; "
                    "set allow_custom_base_url = true to use it"
                )
        return self

    def resolved_base_url(self) -> str:
        """The base URL under which ``/api/...`` and ``/track/...`` live."""
        if self.base_url is not None:
            return self.base_url.rstrip("/")
        domain = (self.domain or "").strip()
        if "://" in domain:
            return domain.rstrip("/")
        if "." in domain:  # a full host was given
            host = domain
        elif self.product == "classic":
            host = f"{domain}.freshsales.io"
        else:
            host = f"{domain}.myfreshworks.com"
        if host.endswith(".freshsales.io"):
            return f"https://{host}"
        return f"https://{host}/crm/sales"


def unusable_url_character(text: str) -> str | None:
    """Describe the first whitespace or control character of ``text`` (not the text), else None.

    Whitespace, control and format characters (zero-width spaces, direction marks) and
    unassigned code points have no place in a host name or a URL.
    """
    for position, char in enumerate(text):
        if char.isspace() or not char.isprintable():
            return f"U+{ord(char):04X} at position {position}"
    return None


def is_freshworks_https_url(url: str) -> bool:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    return parts.scheme == "https" and host.endswith(FRESHWORKS_HOST_SUFFIXES)


class DeliveryConfig(_Strict):
    enabled: bool = True
    workers: int = Field(default=4, ge=1)
    retry_window_hours: float = Field(default=4.0, gt=0)
    throttle_window_hours: float = Field(default=24.0, gt=0)
    backoff_base_seconds: float = Field(default=5.0, gt=0)
    backoff_cap_seconds: float = Field(default=900.0, gt=0)
    poll_interval: float = Field(default=0.5, gt=0)
    records_first: bool = True


class Settings(_Strict):
    server: ServerConfig = ServerConfig()
    store: StoreConfig = StoreConfig()
    delivery: DeliveryConfig = DeliveryConfig()
    sources: list[SourceConfig] = Field(default_factory=list)
    destinations: dict[str, DestinationConfig] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_links(self) -> Settings:
        seen: set[str] = set()
        for index, source in enumerate(self.sources):
            key = source.write_key.get_secret_value()
            if key in seen:
                raise ValueError(f"sources[{index}].write_key is used by two sources")
            seen.add(key)
            if source.destination not in self.destinations:
                raise ValueError(
                    f"sources[{index}].destination names {source.destination!r}, "
                    "which is not a [destinations.*] table"
                )
        return self

    def source_for(self, write_key: str) -> SourceConfig | None:
        for source in self.sources:
            if source.write_key.get_secret_value() == write_key:
                return source
        return None


def _parse_env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def apply_env_overrides(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """Overlay ``FSD_A__B__C=value`` variables onto the nested configuration dict."""
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX) :].split("__") if part]
        if not path:
            continue
        node: Any = data
        for part in path[:-1]:
            if isinstance(node, list):
                idx = int(part)
                node = node[idx]
                continue
            node = node.setdefault(part, {})
        if isinstance(node, list):
            node[int(path[-1])] = _parse_env_value(raw)
        else:
            node[path[-1]] = _parse_env_value(raw)
    return data


def _format_error(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"{loc}: {err['msg']}")
    return "; ".join(lines)


def settings_from_dict(data: dict[str, Any]) -> Settings:
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid configuration: {_format_error(exc)}") from None


def load_settings(path: Path | None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read the TOML file (if any), apply environment overrides, validate."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"configuration file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"configuration file {path} is not valid TOML: {exc}") from None
    try:
        data = apply_env_overrides(data, os.environ if environ is None else environ)
    except (ValueError, IndexError, AttributeError):
        raise ConfigError("an FSD_* environment override does not fit the configuration") from None
    return settings_from_dict(data)
