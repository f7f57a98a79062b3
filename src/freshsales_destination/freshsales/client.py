"""The async Freshsales client: the product's only way to talk to Freshsales.

- REST calls go to ``{base_url}/api/...`` with ``Authorization: Token token=<api key>``; request
  bodies are always wrapped in the singular resource key (``{"contact": {...}}``).
- Tracking calls go to ``{base_url}/track/...`` with the app token in the JSON body
  (``application_token``, ``sdk``, ``identifier``) and no API key at all.
- Every call returns a ``Reply`` (the unwrapped record plus the parsed rate-limit headers) or
  raises a ``FreshsalesError`` subclass from ``freshsales_destination.freshsales.errors``.
- The client never retries and never sleeps: retry and pacing decisions belong to the engine
  (``core.retry`` and ``core.budget``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote, urlsplit

import httpx2

from freshsales_destination import __version__
from freshsales_destination.config import is_freshworks_https_url
from freshsales_destination.errors import ConfigError
from freshsales_destination.freshsales.bulk import (
    BULK_PATHS,
    MAX_BULK_ITEMS,
    JobStatus,
    job_id_from_url,
    parse_job_status,
)
from freshsales_destination.freshsales.errors import (
    ConnectionFailed,
    DestinationURLRefused,
    FreshsalesError,
    InvalidArgument,
    RequestTimeout,
    TransportFailure,
    UnexpectedResponse,
    error_from_response,
    redact,
)
from freshsales_destination.freshsales.ratelimit_headers import (
    RateLimitInfo,
    parse_rate_limit_headers,
)

if TYPE_CHECKING:
    from freshsales_destination.config import DestinationConfig

__all__ = ["ENTITY_PLURALS", "FreshsalesClient", "Reply"]

USER_AGENT = f"freshsales-destination/{__version__}"

# Singular resource name -> plural path segment.
ENTITY_PLURALS: Mapping[str, str] = {
    "contact": "contacts",
    "lead": "leads",
    "sales_account": "sales_accounts",
    "deal": "deals",
    "sales_activity": "sales_activities",
    "note": "notes",
    "task": "tasks",
    "appointment": "appointments",
}

Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]


@dataclass(frozen=True)
class Reply:
    """A successful answer.

    ``data`` is the unwrapped record (``body["contact"]`` for a contact call) when the body has
    that envelope, else the whole body when it is an object, else ``{}`` (``true`` from a
    DELETE, an empty body). ``body`` is the parsed JSON as sent (``None`` when empty or not
    JSON), so sideloaded objects such as ``users`` stay reachable.
    """

    status: int
    data: dict[str, Any]
    rate: RateLimitInfo
    body: Any = field(default=None, repr=False)
    method: str = ""  # the request's method and path (no host, no query; secrets redacted)
    path: str = ""

    @property
    def id(self) -> Any:
        """The record's ``id``, when the data has one."""
        return self.data.get("id")


def _plural(entity: str) -> str:
    entity = entity.strip().strip("/")
    if entity in ENTITY_PLURALS:
        return ENTITY_PLURALS[entity]
    if entity in ENTITY_PLURALS.values():
        return entity
    raise InvalidArgument(f"unknown Freshsales entity {entity!r}")


def _segment(value: int | str, what: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidArgument(f"{what} must be an int or a string")
    text = str(value).strip()
    if not text:
        raise InvalidArgument(f"{what} is empty")
    return quote(text, safe="")


def _require_text(value: str, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidArgument(f"{what} is required")
    return value


def _check_base_url(base_url: str, allow_custom: bool) -> str:
    if not isinstance(base_url, str) or not base_url.strip():
        raise ConfigError("Freshsales base URL is empty")
    url = base_url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigError("Freshsales base URL must be an absolute http(s) URL")
    if parts.username is not None or parts.password is not None:
        raise ConfigError("Freshsales base URL must not contain credentials")
    if parts.query or parts.fragment:
        raise ConfigError("Freshsales base URL must not have a query string or fragment")
    if not allow_custom and not is_freshworks_https_url(url):
        raise ConfigError(
            "Freshsales base URL is not https on a Freshworks domain "
            "(*.myfreshworks.com, *.freshworks.com, *.freshsales.io); "
            "set allow_custom_base_url to use another host"
        )
    return url


class FreshsalesClient:
    """Async client for one Freshsales account (Suite or Classic).

    ``base_url`` is the resolved base (``https://acme.myfreshworks.com/crm/sales`` for Suite,
    ``https://acme.freshsales.io`` for Classic); see ``DestinationConfig.resolved_base_url``.
    ``transport`` is the httpx2 seam for tests (``httpx2.MockTransport``). ``clock`` returns
    epoch seconds and is only used to turn absolute rate-limit times into delays.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        app_token: str | None = None,
        timeout: float = 20.0,
        transport: httpx2.AsyncBaseTransport | None = None,
        allow_custom_base_url: bool = False,
        clock: Callable[[], float] = time.time,
        sdk: str = "python",
    ) -> None:
        self._base_url = _check_base_url(base_url, allow_custom_base_url)
        if not isinstance(api_key, str) or not api_key.strip():
            raise ConfigError("Freshsales API key is empty")
        if app_token is not None and not app_token.strip():
            app_token = None
        if not timeout > 0:
            raise ConfigError("Freshsales timeout must be positive")
        self._api_key = api_key.strip()
        self._app_token = app_token.strip() if app_token is not None else None
        self._timeout = float(timeout)
        self._clock = clock
        self._sdk = sdk
        self._secrets = tuple(s for s in (self._api_key, self._app_token) if s)
        self._http = httpx2.AsyncClient(transport=transport, follow_redirects=False)
        # Told of every call (method, path, status or None, seconds); see `_send`.
        self.on_call: Callable[[str, str, int | None, float], None] | None = None

    @classmethod
    def from_config(
        cls,
        config: DestinationConfig,
        transport: httpx2.AsyncBaseTransport | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> FreshsalesClient:
        app_token = config.app_token.get_secret_value() if config.app_token is not None else None
        return cls(
            config.resolved_base_url(),
            config.api_key.get_secret_value(),
            app_token=app_token,
            timeout=config.timeout,
            transport=transport,
            allow_custom_base_url=config.allow_custom_base_url,
            clock=clock,
        )

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return self._base_url

    @property
    def has_app_token(self) -> bool:
        return self._app_token is not None

    def __repr__(self) -> str:
        return f"FreshsalesClient(base_url={self._base_url!r})"

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> FreshsalesClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- the one place that talks HTTP -------------------------------------------------------

    async def request(
        self,
        method: Method,
        path: str,
        json: Any = None,
        params: Mapping[str, str | int] | None = None,
        *,
        envelope: str | None = None,
    ) -> Reply:
        """Call a REST path under the base URL, for example ``request("GET", "/api/tasks")``.

        ``json`` is sent as given (wrap it yourself). ``envelope`` names the key to unwrap
        from the answer into ``Reply.data``.
        """
        if not isinstance(path, str) or not path.startswith("/") or "://" in path:
            raise InvalidArgument("path must be a path under the base URL, starting with '/'")
        return await self._send(method, path, body=json, params=params, envelope=envelope)

    async def _send(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str | int] | None = None,
        envelope: str | None = None,
        tracking: bool = False,
    ) -> Reply:
        """`_call`, reported to `on_call` (method, path, the answer's status or None when
        there was none, seconds) when one is set: the metrics (observe/metrics.py)."""
        if self.on_call is None:
            return await self._call(method, path, body, params, envelope, tracking)
        started = time.perf_counter()
        status: int | None = None
        try:
            reply = await self._call(method, path, body, params, envelope, tracking)
            status = reply.status
            return reply
        except FreshsalesError as exc:
            status = exc.status
            raise
        finally:
            self.on_call(method, path, status, time.perf_counter() - started)

    async def _call(
        self,
        method: str,
        path: str,
        body: Any,
        params: Mapping[str, str | int] | None,
        envelope: str | None,
        tracking: bool,
    ) -> Reply:
        headers = {
            "Accept": "application/json",
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
        }
        if not tracking:
            headers["Authorization"] = f"Token token={self._api_key}"
        content: bytes | None = None
        if body is not None:
            try:
                content = json.dumps(body, ensure_ascii=False, allow_nan=False).encode("utf-8")
            except (TypeError, ValueError) as exc:
                raise InvalidArgument(
                    f"request body for {method} {self._safe(path)} is not JSON: "
                    f"{self._safe(str(exc))}",
                    method=method,
                    path=self._safe(path),
                ) from None
        try:
            response = await self._http.request(
                method,
                self._base_url + path,
                content=content,
                params=dict(params) if params else None,
                headers=headers,
                timeout=httpx2.Timeout(self._timeout),
            )
        except (httpx2.InvalidURL, httpx2.UnsupportedProtocol, ValueError, OverflowError) as exc:
            raise self._transport_error(DestinationURLRefused, method, path, exc) from None
        except httpx2.TimeoutException as exc:
            raise self._transport_error(RequestTimeout, method, path, exc) from None
        except httpx2.ConnectError as exc:
            raise self._transport_error(ConnectionFailed, method, path, exc) from None
        except httpx2.RequestError as exc:
            raise self._transport_error(TransportFailure, method, path, exc) from None
        except ExceptionGroup as group:
            # The connection layer reports a port out of range as a group of one
            # OverflowError; anything else in a group is not ours to hide.
            refused, rest = group.split((ValueError, OverflowError))
            if refused is None or rest is not None:
                raise
            raise self._transport_error(
                DestinationURLRefused, method, path, refused.exceptions[0]
            ) from None

        rate = parse_rate_limit_headers(response.headers, self._clock())
        error = error_from_response(
            response.status_code,
            response.content,
            rate,
            method=method,
            path=path,
            secrets=self._secrets,
        )
        if error is not None:
            raise error
        return self._reply(response, rate, method, path, envelope, tracking)

    def _reply(
        self,
        response: httpx2.Response,
        rate: RateLimitInfo,
        method: str,
        path: str,
        envelope: str | None,
        tracking: bool,
    ) -> Reply:
        parsed: Any = None
        if response.content.strip():
            try:
                parsed = json.loads(response.content)
            except ValueError:
                # A tracking answer may be empty or plain; an HTML page there means the
                # account has no tracking API (a web app answering the path; reference §13.3).
                if not tracking or response.content.lstrip()[:1] == b"<":
                    safe = self._safe(path)
                    raise UnexpectedResponse(
                        f"Freshsales answered {response.status_code} to {method} {safe} "
                        "with a body that is not JSON",
                        status=response.status_code,
                        rate=rate,
                        method=method,
                        path=safe,
                    ) from None
        data: dict[str, Any] = {}
        if isinstance(parsed, dict):
            inner = parsed.get(envelope) if envelope else None
            data = inner if isinstance(inner, dict) else parsed
        return Reply(
            status=response.status_code, data=data, rate=rate, body=parsed, method=method,
            path=self._safe(path.split("?", 1)[0]),
        )

    def _safe(self, text: str) -> str:
        return redact(text, self._secrets)

    def _transport_error(
        self,
        cls: type[FreshsalesError],
        method: str,
        path: str,
        exc: Exception,
    ) -> FreshsalesError:
        safe = self._safe(path)
        detail = self._safe(str(exc)) or type(exc).__name__
        return cls(
            f"{method} {safe} failed before Freshsales answered: {type(exc).__name__}: {detail}",
            method=method,
            path=safe,
        )

    # -- contacts ----------------------------------------------------------------------------

    async def upsert_contact(
        self,
        unique_identifier: Mapping[str, Any],
        fields: Mapping[str, Any],
        *,
        include: str | None = None,
    ) -> Reply:
        """``POST /api/contacts/upsert``; ``unique_identifier`` is e.g. ``{"emails": "a@b.c"}``."""
        if not unique_identifier:
            raise InvalidArgument("unique_identifier is required")
        body = {"unique_identifier": dict(unique_identifier), "contact": dict(fields)}
        params = {"include": include} if include else None
        return await self._send(
            "POST", "/api/contacts/upsert", body=body, params=params, envelope="contact"
        )

    async def create_contact(self, fields: Mapping[str, Any]) -> Reply:
        return await self._send(
            "POST", "/api/contacts", body={"contact": dict(fields)}, envelope="contact"
        )

    async def update_contact(self, contact_id: int | str, fields: Mapping[str, Any]) -> Reply:
        path = f"/api/contacts/{_segment(contact_id, 'contact id')}"
        return await self._send("PUT", path, body={"contact": dict(fields)}, envelope="contact")

    async def get_contact(
        self, contact_id: int | str, include: str | Iterable[str] | None = None
    ) -> Reply:
        path = f"/api/contacts/{_segment(contact_id, 'contact id')}"
        if include is not None and not isinstance(include, str):
            include = ",".join(include)
        params = {"include": include} if include else None
        return await self._send("GET", path, params=params, envelope="contact")

    async def forget_contact(self, contact_id: int | str) -> Reply:
        """``DELETE /api/contacts/{id}/forget``: erase the contact and its data (GDPR)."""
        path = f"/api/contacts/{_segment(contact_id, 'contact id')}/forget"
        return await self._send("DELETE", path)

    async def delete_contact(self, contact_id: int | str) -> Reply:
        path = f"/api/contacts/{_segment(contact_id, 'contact id')}"
        return await self._send("DELETE", path)

    async def filtered_search(
        self, entity: str, attribute: str, values: Sequence[str], *, per_page: int = 100
    ) -> Reply:
        """``POST /api/filtered_search/<entity>`` with one ``is_in`` rule over a list of values
        (``value`` may be a list, reference §4.11). ``Reply.data`` is the whole body:
        ``{"<plural>": [...], "meta": {...}}``."""
        _require_text(entity, "entity")
        _require_text(attribute, "attribute")
        if not values or len(values) > per_page:
            raise InvalidArgument(f"a filtered search takes 1 to {per_page} values")
        body = {
            "filter_rule": [{"attribute": attribute, "operator": "is_in", "value": list(values)}],
            "page": 1, "per_page": per_page,
        }
        return await self._send("POST", f"/api/filtered_search/{quote(entity.strip(), safe='')}", body=body)

    async def search_contacts_by_email(self, email: str) -> Reply:
        """``POST /api/filtered_search/contact`` on ``contact_email.email``.

        ``Reply.data`` is the whole body: ``{"contacts": [...], "meta": {...}}``.
        """
        _require_text(email, "email")
        body = {
            "filter_rule": [
                {"attribute": "contact_email.email", "operator": "is_in", "value": email}
            ]
        }
        return await self._send("POST", "/api/filtered_search/contact", body=body)

    async def lookup(self, q: str, f: str, entities: str | Iterable[str]) -> Reply:
        """``GET /api/lookup``: exact match on field ``f``.

        ``Reply.data`` is the whole body, keyed by plural entity:
        ``{"contacts": {"contacts": [...]}}``.
        """
        _require_text(q, "q")
        _require_text(f, "f")
        joined = entities if isinstance(entities, str) else ",".join(entities)
        _require_text(joined, "entities")
        return await self._send(
            "GET", "/api/lookup", params={"q": q, "f": f, "entities": joined}
        )

    # -- leads (Classic only) ----------------------------------------------------------------

    async def create_lead(self, fields: Mapping[str, Any]) -> Reply:
        return await self._send("POST", "/api/leads", body={"lead": dict(fields)}, envelope="lead")

    async def update_lead(self, lead_id: int | str, fields: Mapping[str, Any]) -> Reply:
        path = f"/api/leads/{_segment(lead_id, 'lead id')}"
        return await self._send("PUT", path, body={"lead": dict(fields)}, envelope="lead")

    async def get_lead(self, lead_id: int | str) -> Reply:
        path = f"/api/leads/{_segment(lead_id, 'lead id')}"
        return await self._send("GET", path, envelope="lead")

    # -- sales accounts and deals ------------------------------------------------------------

    async def upsert_sales_account(self, name: str, fields: Mapping[str, Any]) -> Reply:
        """``POST /api/sales_accounts/upsert`` keyed by name (names are unique, §4.4)."""
        _require_text(name, "sales account name")
        record = {"name": name, **dict(fields)}
        body = {"unique_identifier": {"name": name}, "sales_account": record}
        return await self._send(
            "POST", "/api/sales_accounts/upsert", body=body, envelope="sales_account"
        )

    async def update_sales_account(self, account_id: int | str, fields: Mapping[str, Any]) -> Reply:
        path = f"/api/sales_accounts/{_segment(account_id, 'sales account id')}"
        return await self._send(
            "PUT", path, body={"sales_account": dict(fields)}, envelope="sales_account"
        )

    async def upsert_deal(self, name: str, fields: Mapping[str, Any]) -> Reply:
        _require_text(name, "deal name")
        record = {"name": name, **dict(fields)}
        body = {"unique_identifier": {"name": name}, "deal": record}
        return await self._send("POST", "/api/deals/upsert", body=body, envelope="deal")

    async def create_deal(self, fields: Mapping[str, Any]) -> Reply:
        return await self._send("POST", "/api/deals", body={"deal": dict(fields)}, envelope="deal")

    # -- notes and sales activities ----------------------------------------------------------

    async def create_note(
        self, description: str, targetable_type: str, targetable_id: int | str
    ) -> Reply:
        _require_text(description, "note description")
        _require_text(targetable_type, "targetable_type")
        _segment(targetable_id, "targetable_id")
        note = {
            "description": description,
            "targetable_type": targetable_type,
            "targetable_id": targetable_id,
        }
        return await self._send("POST", "/api/notes", body={"note": note}, envelope="note")

    async def create_sales_activity(self, fields: Mapping[str, Any]) -> Reply:
        return await self._send(
            "POST",
            "/api/sales_activities",
            body={"sales_activity": dict(fields)},
            envelope="sales_activity",
        )

    # -- bulk upsert (reference §13.1; answers read by freshsales/bulk.py) --------------------

    async def bulk_upsert(
        self, entity: str, items: Sequence[Mapping[str, Any]]
    ) -> tuple[str, Reply]:
        """``POST /api/<plural>/bulk_upsert`` with ``{"<plural>": items}``; each item names its
        match key beside ``data`` (``{"emails": "a@b.c", "data": {...}}``). Returns the job's id
        (from ``job_status_url``) and the answer. A 2xx without a readable job URL raises
        ``UnexpectedResponse``; errors are classified as for every call (a 405 is
        ``MethodNotAllowed``, a 404 ``NotFound``)."""
        plural = BULK_PATHS.get(entity)
        if plural is None:
            raise InvalidArgument(f"no bulk upsert for entity {entity!r}")
        if not items:
            raise InvalidArgument("a bulk upsert needs at least one item")
        if len(items) > MAX_BULK_ITEMS:
            raise InvalidArgument(f"a bulk upsert takes at most {MAX_BULK_ITEMS} items")
        path = f"/api/{plural}/bulk_upsert"
        reply = await self._send("POST", path, body={plural: [dict(item) for item in items]})
        job_id = job_id_from_url(reply.data.get("job_status_url"))
        if job_id is None:
            raise UnexpectedResponse(
                f"Freshsales answered {reply.status} to POST {path} without a job_status_url",
                status=reply.status, rate=reply.rate, method="POST", path=path,
            )
        return job_id, reply

    async def job_status(self, job_id: str) -> tuple[JobStatus, Reply]:
        """``GET /api/job_statuses/<id>``, read (``data`` is JSON inside a string)."""
        path = f"/api/job_statuses/{_segment(job_id, 'job id')}"
        reply = await self._send("GET", path)
        try:
            status = parse_job_status(str(job_id), reply.body)
        except ValueError as exc:
            raise UnexpectedResponse(
                f"Freshsales answered {reply.status} to GET {path} with an unreadable job: {exc}",
                status=reply.status, rate=reply.rate, method="GET", path=path,
            ) from None
        return status, reply

    # -- metadata ----------------------------------------------------------------------------

    async def get_fields(self, entity: str, *, include_groups: bool = False) -> Reply:
        """``GET /api/settings/<plural>/fields``; ``Reply.data`` is ``{"fields": [...]}``."""
        path = f"/api/settings/{_plural(entity)}/fields"
        params = {"include": "field_group"} if include_groups else None
        return await self._send("GET", path, params=params)

    async def get_selector(self, name: str) -> Reply:
        """``GET /api/selector/<name>``; e.g. ``owners`` answers ``{"users": [...]}``."""
        _require_text(name, "selector name")
        return await self._send("GET", f"/api/selector/{quote(name.strip('/'), safe='/')}")

    # -- tracking API (§7) -------------------------------------------------------------------

    async def _track(self, action: str, identifier: str, payload: dict[str, Any]) -> Reply:
        if self._app_token is None:
            raise InvalidArgument("the tracking API needs an app_token, and none is configured")
        _require_text(identifier, "identifier")
        body = {
            "identifier": identifier,
            **payload,
            "application_token": self._app_token,
            "sdk": self._sdk,
        }
        return await self._send("POST", f"/track/{action}", body=body, tracking=True)

    async def track_event(
        self, identifier: str, name: str, properties: Mapping[str, Any] | None = None
    ) -> Reply:
        """``POST /track/events`` with ``{"event": {"name": ..., **properties}}``."""
        _require_text(name, "event name")
        event = {**dict(properties or {}), "name": name}
        return await self._track("events", identifier, {"event": event})

    async def track_page_view(
        self, identifier: str, url: str, properties: Mapping[str, Any] | None = None
    ) -> Reply:
        """``POST /track/page_views`` with ``{"page_view": {"url": ..., **properties}}``."""
        _require_text(url, "page view url")
        page_view = {**dict(properties or {}), "url": url}
        return await self._track("page_views", identifier, {"page_view": page_view})

    async def track_visitor(self, identifier: str, fields: Mapping[str, Any]) -> Reply:
        """``POST /track/visitors`` (identify) with ``{"visitor": {...}}``."""
        if not fields:
            raise InvalidArgument("visitor fields are required")
        return await self._track("visitors", identifier, {"visitor": dict(fields)})
