"""The dashboard at ``/dashboard``: server-rendered pages over the read model (``views.py``).

Pages (GET): the Delivery Overview (``/dashboard``: per destination the funnel, a 24-hour
chart drawn as SVG by ``svg.py``, health, budget, backlog; the failure reasons with samples),
the message search (``/dashboard/messages``), one message's journey
(``/dashboard/messages/{id}``), the dead letters (``/dashboard/dead-letters``) and the event
tester (``/dashboard/tester``). Actions (POST): log in and out, retry or drop dead letters
(one, the selected, or all matching a filter), and run the event tester.

Every page needs the admin token: a browser logs in once through the form and carries the
session cookie ``auth.py`` issues; ``Authorization: Bearer <token>`` works too. Without
either a page redirects to the login form. Every POST is refused from another site
(``auth.py``'s same-origin check) and, when authenticated by the cookie, without the CSRF
token that each form carries. Store calls run in a thread, never on the event loop. Pages
have no script at all; the Content-Security-Policy says so.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from freshsales_destination.admin import auth, views
from freshsales_destination.admin.svg import Chart, Series, render
from freshsales_destination.config import Settings
from freshsales_destination.core.statuses import MessageStatus
from freshsales_destination.errors import FreshsalesDestinationError
from freshsales_destination.store.base import Store

_T = TypeVar("_T")

PAGE_SIZE = 50
DEAD_PAGE_SIZE = 100
EMAIL_PEOPLE = 5  # an email search also shows these people's other events
SCAN_CALLS = 20  # read-model calls per page at most (each scans a bounded slice)
MAX_EVENT_BYTES = 64 * 1024  # a pasted event for the tester

# What a page may load: its own inline styles and nothing else (no script, no frames).
_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_HEADERS = {
    "Content-Security-Policy": _CSP,
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

# The chart's stacked outcomes (bottom first) and its line.
_OUTCOMES = (
    ("delivered", "#2e7d32"),
    ("dead", "#c62828"),
    ("filtered", "#9e9e9e"),
    ("discarded", "#ef8f00"),
)
_RECEIVED = ("received", "#1a4f8b")

SEARCH_FIELDS = {
    "any": "userId, email or messageId",
    "user_id": "userId",
    "email": "email",
    "message_id": "messageId",
    "anonymous_id": "anonymousId",
}
# The stored statuses, and "retrying" (pending with a last error) as the read model offers it.
STATUSES = (MessageStatus.PENDING.value, views.RETRYING,
            *(s.value for s in MessageStatus if s != MessageStatus.PENDING))


class BadInput(ValueError):
    """A parameter a person typed that cannot be used; the page shows ``message``."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("freshsales_destination.admin", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = format_time
    env.filters["age"] = format_age
    env.filters["pretty"] = lambda value: json.dumps(value, indent=2, ensure_ascii=False,
                                                     sort_keys=True, default=str)
    return env


def format_time(value: Any) -> str:
    """Epoch seconds (or an ISO string, as some summaries hold) as ``2026-12-06 07:02:03Z``."""
    if value is None or value == "":
        return "–"
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return format_time(moment.timestamp())
    if isinstance(value, int | float) and math.isfinite(value):
        return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return str(value)


def format_age(seconds: Any) -> str:
    """A duration in seconds as people read it: ``11 ms`` (below a second), ``45 s``,
    ``12 min``, ``3.5 h``, ``2.0 d``."""
    if not isinstance(seconds, int | float) or not math.isfinite(seconds):
        return "–"
    if seconds < 0.9995:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def parse_time(text: str, field: str) -> float | None:
    """A time typed in a form (``2026-12-06T07:00``, with or without seconds or zone; UTC
    when none is given) as epoch seconds; None when empty."""
    text = text.strip()
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadInput(f"{field}: {text!r} is not a date and time such as 2026-12-06T07:00") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def chart_for(stats: views.DestinationStats, ident: str = "chart") -> str:
    """The SVG of one destination's stats (its outcomes stacked, received as a line)."""
    buckets = stats.buckets
    return render(
        Chart(
            title=f"{stats.destination}: last {stats.window}",
            starts=[b.start for b in buckets],
            bucket_seconds=stats.bucket_seconds,
            stacked=[
                Series(name, color, [int(getattr(b, name)) for b in buckets])
                for name, color in _OUTCOMES
            ],
            line=Series(_RECEIVED[0], _RECEIVED[1], [b.received for b in buckets]),
        ),
        ident=ident,
    )


def funnel(stats: views.DestinationStats | None, overview: views.DestinationOverview) -> list[
    tuple[str, int, str]
]:
    """The Delivery Overview's steps: (name, count, what it counts)."""
    totals = stats.totals if stats is not None else views.Bucket(start=0)
    backlog = overview.backlog
    return [
        ("received", totals.received, "received in the last 24 hours"),
        ("filtered", totals.filtered, "switched off (integrations, drop rules), last 24 hours"),
        ("discarded", totals.discarded, "not deliverable as sent, last 24 hours"),
        ("pending", int(backlog.get(MessageStatus.PENDING, 0)), "waiting for delivery now"),
        ("retrying", int(backlog.get("retrying", 0)), "pending after a failed attempt, now"),
        ("delivered", totals.delivered, "delivered in the last 24 hours"),
        ("dead", totals.dead, "given up on in the last 24 hours"),
    ]


@dataclass
class Dashboard:
    store: Store
    settings: Settings
    now: Callable[[], float] = time.time
    env: Environment | None = None

    def __post_init__(self) -> None:
        if self.env is None:
            self.env = environment()

    # -- plumbing ---------------------------------------------------------------------

    def base(self, request: Request) -> str:
        return str(request.scope.get("root_path", "")) + "/dashboard"

    def page(
        self, request: Request, template: str, http_status: int = 200, **context: Any
    ) -> HTMLResponse:
        assert self.env is not None
        html = self.env.get_template(template).render(
            base=self.base(request),
            csrf=auth.csrf_token(request, self.settings) or "",
            csrf_field=auth.CSRF_FIELD,
            destinations=sorted(self.settings.destinations),
            now=self.now(),
            **context,
        )
        return HTMLResponse(html, status_code=http_status, headers=_HEADERS)

    def to_login(self, request: Request) -> Response:
        target = request.url.path
        if request.url.query:
            target += "?" + request.url.query
        query = urlencode({"next": target}) if request.method == "GET" else ""
        location = f"{self.base(request)}/login" + (f"?{query}" if query else "")
        return RedirectResponse(location, status_code=303, headers=_HEADERS)

    def guarded(
        self, handler: Callable[[Request], Awaitable[Response]], *, action: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        """`handler` behind the admin token (``auth.require``): a page without credentials
        redirects to the login form; an action (POST) is also refused when cross-site or,
        with the session cookie, without the form's CSRF token."""

        async def endpoint(request: Request) -> Response:
            try:
                if action and auth.authenticated(request, self.settings):
                    # Only an authenticated request's form is read (for its CSRF token).
                    form = await request.form()
                    given = form.get(auth.CSRF_FIELD)
                    auth.require(request, self.settings,
                                 form_token=given if isinstance(given, str) else None)
                else:
                    auth.require(request, self.settings)
            except auth.AdminAuthError as exc:
                return self.refusal(request, exc)
            try:
                return await handler(request)
            except BadInput as exc:
                return self.page(request, "error.html", http_status=400, message=exc.message)

        return endpoint

    def refusal(self, request: Request, exc: auth.AdminAuthError) -> Response:
        """`auth`'s refusal as a page: the login form when credentials are missing."""
        if exc.status == 401 and request.method == "GET":
            return self.to_login(request)
        if exc.code == auth.NOT_CONFIGURED.code:
            return self.page(request, "login.html", http_status=exc.status, error=exc.message,
                             next=None)
        if exc.status == 401:
            message = "Log in first: " + exc.message
        elif exc.code == auth.CROSS_SITE.code:
            message = "Refused: this request came from another site."
        elif exc.code == auth.BAD_CSRF.code:
            message = ("Refused: the form's security token is missing or stale. Reload the "
                       "page and try again.")
        else:
            message = exc.message
        return self.page(request, "error.html", http_status=exc.status, message=message)

    async def call(self, function: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """A store read or write in a thread (the store is synchronous)."""
        return await run_in_threadpool(function, *args, **kwargs)

    # -- log in and out ---------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        if auth.configured_token(self.settings) is None:
            return self.refusal(request, auth.NOT_CONFIGURED)
        target = self.safe_next(request, request.query_params.get("next", ""))
        return self.page(request, "login.html", next=target, error=None)

    async def login(self, request: Request) -> Response:
        form = await request.form()
        target = self.safe_next(request, _text(form, "next")) or self.base(request)
        try:
            cookie = auth.login(request, self.settings, _text(form, "token"))
        except auth.AdminAuthError as exc:
            if exc.status == 401:
                return self.page(request, "login.html", http_status=401, next=target,
                                 error="That is not the admin token (server.admin_token).")
            return self.refusal(request, exc)
        response = RedirectResponse(target, status_code=303, headers=_HEADERS)
        auth.set_session_cookie(response, request, self.settings, cookie)
        return response

    async def logout(self, request: Request) -> Response:
        return auth.logout_response(request, self.settings,
                                    next_url=f"{self.base(request)}/login")

    def safe_next(self, request: Request, target: str) -> str:
        """Only a path of the dashboard itself: never a redirect to another site."""
        base = self.base(request)
        if target == base or (target.startswith(base + "/") and "//" not in target
                              and "\\" not in target):
            return target
        return ""

    # -- pages ------------------------------------------------------------------------

    async def overview(self, request: Request) -> Response:
        now = self.now()
        overviews, stats, failures = await self.call(self._overview_data, now)
        by_name = {s.destination: s for s in stats}
        cards = [
            {
                "overview": o,
                "funnel": funnel(by_name.get(o.name), o),
                "chart": chart_for(by_name[o.name], f"chart-{index}") if o.name in by_name
                else None,
                "stats": by_name.get(o.name),
            }
            for index, o in enumerate(overviews, 1)
        ]
        return self.page(request, "overview.html", cards=cards, failures=failures)

    def _overview_data(self, now: float) -> tuple[
        list[views.DestinationOverview], list[views.DestinationStats], list[views.FailureGroup]
    ]:
        return (
            views.destinations(self.store, self.settings, now),
            views.stats(self.store, self.settings, "24h", now),
            views.failures(self.store, since=now - 7 * 86400),
        )

    async def messages(self, request: Request) -> Response:
        params = request.query_params
        q = params.get("q", "").strip()
        field = params.get("field", "any")
        if field not in SEARCH_FIELDS:
            raise BadInput(f"field: choose one of {', '.join(SEARCH_FIELDS)}")
        status = params.get("status", "")
        if status and status not in STATUSES:
            raise BadInput(f"status: choose one of {', '.join(STATUSES)}")
        destination = params.get("destination", "") or None
        cursor = params.get("cursor") or None
        common = views.MessageFilter(status=status or None, destination=destination)
        filters: list[views.MessageFilter]
        if not q:
            filters = [common]
        elif field == "any":
            filters = [replace(common, user_id=q), replace(common, message_id=q)]
            if "@" in q:
                filters.append(replace(common, email=q))
        elif field == "user_id":
            filters = [replace(common, user_id=q)]
        elif field == "email":
            filters = [replace(common, email=q)]
        elif field == "message_id":
            filters = [replace(common, message_id=q)]
        else:
            filters = [replace(common, anonymous_id=q)]
        try:
            items, next_cursor = await self.call(self._search, filters, cursor)
        except ValueError:
            raise BadInput("cursor: this page link is no longer valid; search again") from None
        if q and cursor is None and next_cursor is None and len(items) == 1:
            # One event found (a messageId, usually): open its journey.
            return RedirectResponse(f"{self.base(request)}/messages/{items[0].id}",
                                    status_code=303, headers=_HEADERS)
        more = None
        if next_cursor is not None:
            more = urlencode({**{k: v for k, v in params.items() if k != "cursor"},
                              "cursor": next_cursor})
        return self.page(request, "messages.html", items=items, q=q, field=field,
                         fields=SEARCH_FIELDS, status=status, statuses=STATUSES,
                         destination=destination or "", more=more,
                         searched=bool(q or status or destination))

    def _search(self, filters: list[views.MessageFilter], cursor: str | None) -> tuple[
        list[views.MessageSummary], str | None
    ]:
        by_email = [f for f in filters if f.email]
        if len(filters) == 1 and not by_email:
            return self._page_of(filters[0], PAGE_SIZE, cursor)
        # Several readings of one search term (a userId, a messageId, an email): the first
        # page of each, merged newest first. An email also finds the other events of the
        # people whose messages hold it (a track rarely carries the email).
        found: dict[int, views.MessageSummary] = {}
        for flt in filters:
            for item in self._page_of(flt, PAGE_SIZE, None)[0]:
                found[item.id] = item
        people = {m.user_id for m in found.values() if m.user_id} if by_email else set()
        for user in sorted(people)[:EMAIL_PEOPLE]:
            flt = replace(by_email[0], email=None, user_id=user)
            for item in self._page_of(flt, PAGE_SIZE, None)[0]:
                found[item.id] = item
        return sorted(found.values(), key=lambda m: m.id, reverse=True)[:PAGE_SIZE], None

    def _page_of(self, flt: views.MessageFilter, limit: int, cursor: str | None) -> tuple[
        list[views.MessageSummary], str | None
    ]:
        """Up to `limit` matches from `cursor` on. The read model scans a bounded slice per
        call (a page may come back short with a cursor to go on): follow it a few times."""
        items: list[views.MessageSummary] = []
        for _ in range(SCAN_CALLS):
            page = views.search(self.store, flt, limit=limit - len(items), cursor=cursor)
            items.extend(page.items)
            cursor = page.next_cursor
            if cursor is None or len(items) >= limit:
                break
        return items, cursor

    async def journey(self, request: Request) -> Response:
        try:
            seq = int(request.path_params["id"])
        except ValueError:
            raise BadInput("a message is named by its number (the id column)") from None
        found = await self.call(views.journey, self.store, self.settings, seq)
        if found is None:
            return self.page(request, "error.html", http_status=404,
                             message=f"There is no message {seq} (it may have been pruned).")
        return self.page(request, "journey.html", journey=found, m=found.message)

    def _dead_filter(self, source: Mapping[str, Any]) -> views.MessageFilter:
        def text(name: str) -> str | None:
            value = source.get(name)
            return value.strip() or None if isinstance(value, str) else None

        destination = text("destination")
        if destination is not None and destination not in self.settings.destinations:
            raise BadInput(f"destination: no destination named {destination!r}")
        return views.MessageFilter(
            status=MessageStatus.DEAD, destination=destination, reason=text("reason"),
            since=parse_time(text("since") or "", "since"),
        )

    async def dead_letters(self, request: Request) -> Response:
        params = request.query_params
        flt = self._dead_filter(params)
        cursor = params.get("cursor") or None
        try:
            items, next_cursor = await self.call(self._page_of, flt, DEAD_PAGE_SIZE, cursor)
        except ValueError:
            raise BadInput("cursor: this page link is no longer valid; reload the list") from None
        keep = {k: params.get(k, "") for k in ("destination", "reason", "since")}
        more = urlencode({**keep, "cursor": next_cursor}) if next_cursor else None
        done = None
        changed = params.get("changed", "")
        if params.get("done") in ("retried", "dropped") and changed.isdigit():
            done = (params["done"], int(changed))
        return self.page(request, "dead_letters.html", items=items, more=more,
                         filter=keep, done=done)

    async def dead_action(self, request: Request) -> Response:
        verb = request.path_params["action"]
        if verb not in ("retry", "drop"):
            return self.page(request, "error.html", http_status=404,
                             message="A dead letter can be retried or dropped.")
        form = await request.form()
        if form.get("scope") == "all":
            flt = self._dead_filter(form)
        else:
            try:
                seqs = tuple(int(str(v)) for v in form.getlist("ids"))
            except ValueError:
                raise BadInput("ids: message numbers only") from None
            if not seqs:
                raise BadInput("Select at least one dead letter (or use “all matching”).")
            flt = views.MessageFilter(status=MessageStatus.DEAD, seqs=seqs)
        act = views.retry_dead if verb == "retry" else views.drop_dead
        changed = await self.call(act, self.store, flt, self.now())
        keep = {k: _text(form, k) for k in ("destination", "reason", "since")}
        query = urlencode({**keep, "done": "retried" if verb == "retry" else "dropped",
                           "changed": changed})
        return RedirectResponse(f"{self.base(request)}/dead-letters?{query}", status_code=303,
                                headers=_HEADERS)

    async def tester_form(self, request: Request) -> Response:
        return self.page(request, "tester.html", event="", message_id="", result=None,
                         chosen=request.query_params.get("destination", ""), error=None)

    async def tester(self, request: Request) -> Response:
        form = await request.form()
        text = _text(form, "event")
        message = _text(form, "message_id").strip()
        chosen = _text(form, "destination")
        destination = chosen or None
        if destination is not None and destination not in self.settings.destinations:
            raise BadInput(f"destination: no destination named {destination!r}")

        def again(error: str, status: int = 400) -> Response:
            return self.page(request, "tester.html", http_status=status, event=text,
                             message_id=message, result=None, chosen=chosen, error=error)

        result: dict[str, Any] | None
        try:
            if message:
                seq = await self._stored_seq(message)
                if seq is None:
                    return again(f"No stored message {message!r} (give its number or its "
                                 "messageId).", 404)
                result = await self.call(views.explain_stored, self.store, self.settings, seq)
                if result is None:
                    return again(f"No stored message {message!r}.", 404)
            else:
                if len(text.encode()) > MAX_EVENT_BYTES:
                    return again(f"The event is larger than {MAX_EVENT_BYTES // 1024} KiB.", 413)
                try:
                    event = json.loads(text)
                except json.JSONDecodeError as exc:
                    return again(f"The event is not valid JSON: {exc.msg} (line {exc.lineno}, "
                                 f"column {exc.colno}).")
                if not isinstance(event, dict):
                    return again("The event must be a JSON object, as a Segment message is.")
                result = await self.call(views.explain_event, self.store, self.settings,
                                         destination, event)
        except FreshsalesDestinationError as exc:
            return again(exc.message)
        return self.page(request, "tester.html", event=text, message_id=message, result=result,
                         chosen=chosen, error=None)

    async def _stored_seq(self, given: str) -> int | None:
        if given.isdigit():
            return int(given)
        items, _ = await self.call(self._page_of, views.MessageFilter(message_id=given), 1, None)
        return items[0].id if items else None

    # -- routes -----------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        g = self.guarded
        return [
            Route("/dashboard", g(self.overview), methods=["GET"], name="dashboard"),
            Route("/dashboard/login", self.login_form, methods=["GET"]),
            Route("/dashboard/login", self.login, methods=["POST"]),
            Route("/dashboard/logout", g(self.logout, action=True), methods=["POST"]),
            Route("/dashboard/messages", g(self.messages), methods=["GET"]),
            Route("/dashboard/messages/{id}", g(self.journey), methods=["GET"]),
            Route("/dashboard/dead-letters", g(self.dead_letters), methods=["GET"]),
            Route("/dashboard/dead-letters/{action:str}", g(self.dead_action, action=True),
                  methods=["POST"]),
            Route("/dashboard/tester", g(self.tester_form), methods=["GET"]),
            Route("/dashboard/tester", g(self.tester, action=True), methods=["POST"]),
        ]


def _text(form: FormData | Mapping[str, Any], name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def dashboard_routes(
    store: Store, settings: Settings, *, now: Callable[[], float] = time.time
) -> list[BaseRoute]:
    """The dashboard's routes, to mount beside the admin API."""
    return Dashboard(store, settings, now).routes()


__all__ = ["Dashboard", "dashboard_routes", "environment", "format_age", "format_time", "funnel", "parse_time"]
