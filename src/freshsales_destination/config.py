"""Service configuration: a TOML file, overridden by environment variables.

Environment overrides use the prefix ``FSD_`` and ``__`` between levels, for example
``FSD_SERVER__PORT=9090`` or ``FSD_DESTINATIONS__ACME__API_KEY=...``. A string setting takes
the value as it is (an all-digit API key stays a string); any other is parsed as a TOML scalar
(so ``9090`` is an integer and ``true`` a boolean). A variable that names no setting is an
error naming the variable.

A configuration error names the key that is wrong, never its value (the value may be a secret).
"""

from __future__ import annotations

import logging
import os
import stat
import tomllib
from collections.abc import Mapping
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin
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

log = logging.getLogger(__name__)

ENV_PREFIX = "FSD_"

FRESHWORKS_HOST_SUFFIXES = (".myfreshworks.com", ".freshworks.com", ".freshsales.io")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Role = Literal["all", "ingest", "worker"]


class ServerConfig(_Strict):
    # What `serve` runs (docs/deployment.md): "all" = ingest and delivery; "ingest" = the API
    # and sorting, no delivery; "worker" = delivery only, with /healthz, /readyz and /metrics.
    role: Role = "all"
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    admin_token: SecretStr | None = None
    # GET /metrics (Prometheus; docs/operations.md): "public" (no token: it holds no personal
    # data and no secrets), "admin" (Authorization: Bearer <admin_token>) or "off" (404).
    metrics: Literal["public", "admin", "off"] = "public"
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
    # Believe X-Forwarded-Proto/-Host (behind a reverse proxy): only then do they shape the
    # apiHost that /v1/projects/{writeKey}/settings gives browsers (docs/browser.md).
    trust_proxy: bool = False

    @model_validator(mode="after")
    def _check_metrics(self) -> ServerConfig:
        if self.metrics == "admin" and self.admin_token is None:
            raise ValueError('metrics = "admin" needs server.admin_token')
        return self


class StoreConfig(_Strict):
    url: str = "sqlite:///data/queue.db"
    dedup_days: int = Field(default=7, ge=1)
    # PostgreSQL only: connections each process keeps at most (ingest's commits and sorting,
    # the delivery workers' store calls, housekeeping share them; docs/deployment.md).
    pool_size: int | None = Field(default=None, ge=4, le=1000)

    @model_validator(mode="after")
    def _check_scheme(self) -> StoreConfig:
        scheme = urlsplit(self.url).scheme
        if scheme not in ("sqlite", "postgresql", "postgres"):
            raise ValueError("store.url must start with sqlite:/// or postgresql://")
        if self.pool_size is not None and scheme == "sqlite":
            raise ValueError(
                "store.pool_size is a PostgreSQL setting; a SQLite store has no pool "
                "(remove it, or use a postgresql:// store.url)"
            )
        return self


class SourceConfig(_Strict):
    write_key: SecretStr = Field(min_length=1)
    destination: str = Field(min_length=1)
    webhook_secret: SecretStr | None = None
    # A source with a webhook_secret takes signed webhooks only: its write key (in the
    # webhook URL) would otherwise let anyone post to /v1/ without a signature.
    accept_tracking_api: bool = False
    name: str | None = None
    # Browser origins allowed to send with this write key (CORS, docs/browser.md): "*" for
    # any, else origins such as "https://www.example.com".
    allowed_origins: list[str] = Field(default_factory=lambda: ["*"])

    @field_validator("allowed_origins")
    @classmethod
    def _check_origins(cls, origins: list[str]) -> list[str]:
        cleaned = []
        for origin in origins:
            value = normalize_origin(origin)
            if value is None:
                raise ValueError(
                    f"allowed_origins: {origin[:80]!r} is not \"*\" or an origin such as "
                    "\"https://www.example.com\" (scheme and host, optional port, no path)"
                )
            cleaned.append(value)
        return cleaned


def normalize_origin(origin: str) -> str | None:
    """`origin` as browsers send it in the Origin header (lower-case scheme and host, no
    trailing slash), "*" as is; None when it is neither."""
    value = origin.strip()
    if value == "*":
        return value
    if not value.isascii():  # browsers send international host names in punycode
        return None
    parts = urlsplit(value.rstrip("/"))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    if parts.path or parts.query or parts.fragment or parts.username or parts.password:
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    if port == {"http": 80, "https": 443}[parts.scheme]:
        port = None
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")


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
    # Bulk upsert of record writes (Suite only; docs/freshsales-behaviours.md): "auto" sends
    # ready identifies' writes (accounts, contacts, deals) as bulk jobs once at least
    # bulk_min_records lanes are ready (or the backlog would take over a minute to drain by
    # single calls); "off" keeps single calls.
    bulk: Literal["auto", "off"] = "auto"
    bulk_min_records: int = Field(default=10, ge=2, le=100)
    # A bulk job not finished after this long is given up: its records go as single calls.
    bulk_job_timeout_seconds: float = Field(default=1800.0, gt=0)
    # Track, page and screen events older than this many days when delivery plans them are
    # filtered with the reason (core/event_age.py): a backfill spends the budget on records.
    event_max_age_days: float | None = Field(default=None, gt=0)

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
    poll_interval: float = Field(default=5.0, gt=0)  # a safety net: workers are woken
    records_first: bool = True
    # How long a worker's hold on a lane lasts unless renewed (it is renewed before each
    # message): a worker that dies (SIGKILL, a lost machine) leaves its lanes to the others
    # after at most this long. Keep it well above destinations' `timeout`.
    lease_seconds: float = Field(default=120.0, ge=1)


class BrowserConfig(_Strict):
    # dist/umd/standalone.js of an npm-installed @segment/analytics-next, served at
    # /analytics.js/v1/{writeKey}/analytics.min.js (docs/browser.md); unset: not served.
    analytics_js_path: Path | None = None


class Settings(_Strict):
    server: ServerConfig = ServerConfig()
    store: StoreConfig = StoreConfig()
    delivery: DeliveryConfig = DeliveryConfig()
    browser: BrowserConfig = BrowserConfig()
    sources: list[SourceConfig] = Field(default_factory=list)
    destinations: dict[str, DestinationConfig] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_links(self) -> Settings:
        seen: set[str] = set()
        named: dict[str, int] = {}
        for index, source in enumerate(self.sources):
            key = source.write_key.get_secret_value()
            if key in seen:
                raise ValueError(f"sources[{index}].write_key is used by two sources")
            seen.add(key)
            # Messages are stored and deduplicated under the source's name: a second source of
            # the same name would have its events acknowledged and then dropped as duplicates.
            if source.name is not None:
                if source.name in named:
                    raise ValueError(
                        f"sources[{index}].name {source.name!r} is already the name of "
                        f"sources[{named[source.name]}]; each source needs a name of its own"
                    )
                named[source.name] = index
            if source.destination not in self.destinations:
                raise ValueError(
                    f"sources[{index}].destination names {source.destination!r}, "
                    "which is not a [destinations.*] table"
                )
        return self

    @model_validator(mode="after")
    def _check_lease(self) -> Settings:
        # A lease that can lapse during one call lets another worker take the lane while the
        # call is in flight: the person's order would no longer hold.
        for name, dest in sorted(self.destinations.items()):
            if self.delivery.lease_seconds < 2 * dest.timeout:
                raise ValueError(
                    f"delivery.lease_seconds must be at least twice destinations.{name}.timeout "
                    "(a lane's lease must outlast a call in flight)"
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


def _without_none(annotation: Any) -> Any:
    """``X`` for ``X | None``; anything else unchanged."""
    if get_origin(annotation) in (Union, UnionType):
        rest = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return annotation


def _is_text(annotation: Any) -> bool:
    """Whether a setting of this type is a string (so its override is taken as it is)."""
    if annotation in (str, SecretStr):
        return True
    return get_origin(annotation) is Literal and all(
        isinstance(arg, str) for arg in get_args(annotation)
    )


def _override_target(path: list[str], name: str) -> Any:
    """The type of the setting that `path` names; ConfigError naming the variable when it
    names none. Below a free-form table (``mapping``) anything goes (``Any``)."""
    annotation: Any = Settings
    for depth, part in enumerate(path):
        where = ".".join(path[: depth + 1])
        annotation = _without_none(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(part)
            if field is None:
                raise ConfigError(f"{name}: there is no setting {where}")
            annotation = field.annotation
        elif get_origin(annotation) is list:
            if not part.isdigit():
                raise ConfigError(f"{name}: {where} needs a number (an index in the list)")
            annotation = get_args(annotation)[0]
        elif get_origin(annotation) is dict:
            annotation = get_args(annotation)[1]
        else:
            if annotation is Any:
                return Any
            raise ConfigError(f"{name}: there is no setting {where}")
    return _without_none(annotation)


def apply_env_overrides(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """Overlay ``FSD_A__B__C=value`` variables onto the nested configuration dict.

    A string setting takes the value as it is (an all-digit API key stays a string); any other
    is parsed as a TOML scalar (``9090``, ``true``, ``0.5``). A variable naming no setting, or
    a list entry the configuration does not have, is a ConfigError naming the variable (never
    its value).
    """
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX) :].split("__") if part]
        if not path:
            raise ConfigError(f"{name}: there is no setting by that name")
        target = _override_target(path, name)
        value = raw if _is_text(target) else _parse_env_value(raw)
        node: Any = data
        for depth, part in enumerate(path):
            last = depth == len(path) - 1
            where = ".".join(path[:depth])
            if isinstance(node, list):
                index = int(part)
                if index >= len(node):
                    raise ConfigError(
                        f"{name}: {where} has no entry {index} (the configuration has "
                        f"{len(node)}); add it to the configuration file"
                    )
                if last:
                    node[index] = value
                else:
                    node = node[index]
            elif isinstance(node, dict):
                if last:
                    node[part] = value
                else:
                    empty: Any = [] if get_origin(
                        _without_none(_override_target(path[: depth + 1], name))
                    ) is list else {}
                    node = node.setdefault(part, empty)
            else:
                raise ConfigError(f"{name}: {where} is not a table in the configuration")
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


def _secret_keys(data: Mapping[str, Any]) -> list[str]:
    """The keys (never the values) of the secrets a configuration file holds."""
    found: list[str] = []
    server = data.get("server")
    if isinstance(server, dict) and server.get("admin_token"):
        found.append("server.admin_token")
    store = data.get("store")
    if isinstance(store, dict) and isinstance(store.get("url"), str):
        try:
            if urlsplit(store["url"]).password:
                found.append("store.url (its password)")
        except ValueError:
            pass
    sources = data.get("sources")
    for index, source in enumerate(sources if isinstance(sources, list) else []):
        if isinstance(source, dict):
            found += [f"sources[{index}].{k}" for k in ("write_key", "webhook_secret") if source.get(k)]
    destinations = data.get("destinations")
    for name, dest in (destinations.items() if isinstance(destinations, dict) else []):
        if isinstance(dest, dict):
            found += [f"destinations.{name}.{k}" for k in ("api_key", "app_token") if dest.get(k)]
    return found


def _warn_if_secrets_readable(path: Path, data: Mapping[str, Any]) -> None:
    """Warn (naming the keys, never their values) when a file that holds secrets can be read by
    other users of the machine."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if not mode & (stat.S_IRGRP | stat.S_IROTH):
        return
    keys = _secret_keys(data)
    if keys:
        log.warning(
            "configuration file %s holds secrets (%s) and other users can read it (mode %03o): "
            "chmod 600 it, or pass the secrets as FSD_* environment variables",
            path, ", ".join(keys), stat.S_IMODE(mode),
        )


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
        _warn_if_secrets_readable(path, data)
    data = apply_env_overrides(data, os.environ if environ is None else environ)
    return settings_from_dict(data)
