"""Who may use the admin API and the dashboard, and protection against cross-site requests.

Credentials (both derive from ``server.admin_token``; nothing else is stored):

- ``Authorization: Bearer <admin_token>`` (scripts, curl, the CLI): compared in constant time.
- A browser session: the dashboard's login form posts the token once (`login_response`) and
  gets a cookie that is HttpOnly, ``SameSite=Strict``, ``Path=/``, ``Secure`` when served over
  https, and expires after `SESSION_SECONDS`. The cookie is stateless: an expiry and a random
  session id signed with HMAC-SHA256 under a key derived from the admin token, so every
  process of the service accepts it and changing the token voids every session.

Cross-site requests: a state-changing request (any method but GET, HEAD, OPTIONS) is refused
when the browser says it is cross-site (``Sec-Fetch-Site`` other than ``same-origin`` or
``none``) or, from a browser that does not send that header, its ``Origin`` is not this
service's host (`cross_site`). A request authenticated by the session cookie must in addition carry the
session's CSRF token (`csrf_token`): in the form field `CSRF_FIELD` or the header
`CSRF_HEADER`. Bearer requests need no CSRF token (a browser never adds that header by itself).

Without ``server.admin_token`` the admin routes are closed (503 ``admin_disabled`` saying what
to set); they are never open. The embedded mode generates a token (service.py).

Nothing here logs, and no answer repeats a submitted or configured token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

import orjson
from starlette.requests import HTTPConnection
from starlette.responses import RedirectResponse, Response

from freshsales_destination.config import Settings

SESSION_COOKIE = "fsd_admin_session"
SESSION_SECONDS = 12 * 3600
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

_VERSION = "1"
_HOST = re.compile(r"^[A-Za-z0-9.\-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")
_DEFAULT_PORTS = {"http": 80, "https": 443}

Method = Literal["bearer", "session"]


class AdminAuthError(Exception):
    """A refused admin request: the HTTP status and a machine-readable code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def response(self) -> Response:
        headers = {"Cache-Control": "no-store"}
        if self.status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="freshsales-destination admin"'
        return Response(
            orjson.dumps({"code": self.code, "message": self.message}),
            status_code=self.status, headers=headers, media_type="application/json",
        )


NOT_CONFIGURED = AdminAuthError(
    503, "admin_disabled",
    "the admin API and dashboard are off: no admin token is configured. Set server.admin_token "
    "in the configuration file (or the FSD_SERVER__ADMIN_TOKEN variable) to a long random "
    "value and restart; then send it as 'Authorization: Bearer <token>'",
)
UNAUTHENTICATED = AdminAuthError(
    401, "unauthorized",
    "send the admin token (server.admin_token) as 'Authorization: Bearer <token>', "
    "or log in at /dashboard/login",
)
CROSS_SITE = AdminAuthError(
    403, "cross_site_request", "cross-site requests cannot change anything here"
)
BAD_CSRF = AdminAuthError(
    403, "csrf_token_invalid",
    f"this request needs the session's CSRF token (form field {CSRF_FIELD!r} or header "
    f"{CSRF_HEADER}); reload the page and try again",
)


def configured_token(settings: Settings) -> str | None:
    """The admin token, or None when none is configured (an empty one counts as none)."""
    token = settings.server.admin_token
    value = token.get_secret_value() if token is not None else ""
    return value or None


def _key(token: str, purpose: str) -> bytes:
    """A key for `purpose` derived from the admin token (HMAC-SHA256)."""
    return hmac.new(
        token.encode(), f"freshsales-destination admin {purpose} v{_VERSION}".encode(),
        hashlib.sha256,
    ).digest()


def _sign(key: bytes, payload: str) -> str:
    digest = hmac.new(key, payload.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass"))


# -- credentials -------------------------------------------------------------------------------


def bearer_token(conn: HTTPConnection) -> str | None:
    """The token of an ``Authorization: Bearer`` header, or None."""
    header = conn.headers.get("authorization")
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    value = value.strip()
    return value or None


def token_matches(settings: Settings, submitted: str) -> bool:
    """Whether `submitted` is the configured admin token (constant time; False without one)."""
    token = configured_token(settings)
    if token is None:
        return False
    return _equal(submitted, token)


@dataclass(frozen=True, slots=True)
class Session:
    """A valid session cookie's content."""

    id: str
    expires: int


def session_cookie_value(token: str, now: float, *, lifetime: int = SESSION_SECONDS) -> str:
    """A new signed session: ``1.<expires>.<id>.<signature>``."""
    payload = f"{_VERSION}.{int(now) + lifetime}.{secrets.token_urlsafe(16)}"
    return f"{payload}.{_sign(_key(token, 'session'), payload)}"


def read_session(token: str, value: str, now: float) -> Session | None:
    """The session `value` holds if it was signed under `token` and has not expired."""
    parts = value.split(".")
    if len(parts) != 4 or parts[0] != _VERSION:
        return None
    version, expires, session_id, signature = parts
    if not _equal(signature, _sign(_key(token, "session"), f"{version}.{expires}.{session_id}")):
        return None
    if not (expires.isascii() and expires.isdigit()) or int(expires) <= now:
        return None
    return Session(session_id, int(expires))


def session(conn: HTTPConnection, settings: Settings, now: float | None = None) -> Session | None:
    """The request's valid session, or None (no cookie, bad signature, expired, no token)."""
    token = configured_token(settings)
    value = conn.cookies.get(SESSION_COOKIE)
    if token is None or not value:
        return None
    return read_session(token, value, time.time() if now is None else now)


def method(conn: HTTPConnection, settings: Settings, now: float | None = None) -> Method | None:
    """How the request is authenticated: ``bearer``, ``session``, or None (not at all).

    A Bearer header that is present decides alone: a wrong one is refused even with a cookie.
    """
    submitted = bearer_token(conn)
    if submitted is not None:
        return "bearer" if token_matches(settings, submitted) else None
    return "session" if session(conn, settings, now) is not None else None


def authenticated(conn: HTTPConnection, settings: Settings, now: float | None = None) -> bool:
    """Whether the request carries a valid admin credential (Bearer token or session)."""
    return method(conn, settings, now) is not None


# -- cross-site protection ---------------------------------------------------------------------


def _scheme(conn: HTTPConnection, *, trust_proxy: bool) -> str:
    scheme = "https" if conn.scope.get("scheme") in ("https", "wss") else "http"
    if trust_proxy:
        proto = (conn.headers.get("x-forwarded-proto") or "").split(",")[0].strip().lower()
        if proto in ("http", "https"):
            scheme = proto
    return scheme


def _own_host(conn: HTTPConnection, *, trust_proxy: bool) -> str | None:
    host = conn.headers.get("host")
    if trust_proxy:
        forwarded = (conn.headers.get("x-forwarded-host") or "").split(",")[0].strip()
        if forwarded:
            host = forwarded
    if not host or not _HOST.match(host):
        return None
    return _host_of(f"http://{host}")


def _host_of(url: str) -> str | None:
    """``host[:port]`` of `url`, lower-case, without a default port (80, 443): browsers leave
    the default port out of ``Origin``, and a proxy may leave it in ``Host``."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    name = parts.hostname.lower()
    host = f"[{name}]" if ":" in name else name
    return host if port is None or port in _DEFAULT_PORTS.values() else f"{host}:{port}"


def cross_site(conn: HTTPConnection, *, trust_proxy: bool = False) -> bool:
    """Whether a browser sent this request from another site (or an unknown one).

    ``Sec-Fetch-Site``, which the browser sets and no page can, decides when present: anything
    but ``same-origin`` or ``none`` is cross-site. Without it (older browsers), an ``Origin``
    (``null`` included) whose host and port are not this service's is cross-site; the scheme
    is not compared, so a proxy terminating TLS in front of plain HTTP needs no setting. A
    request with neither header is no browser's cross-site request (every current browser
    sends ``Origin`` on a POST): clients such as curl send neither. ``X-Forwarded-Host``
    counts as the service's host only with `trust_proxy`.
    """
    fetch_site = conn.headers.get("sec-fetch-site")
    if fetch_site is not None:
        return fetch_site.strip().lower() not in ("same-origin", "none")
    origin = conn.headers.get("origin")
    if origin is None:
        return False
    mine = _own_host(conn, trust_proxy=trust_proxy)
    theirs = _host_of(origin)
    return mine is None or theirs is None or theirs != mine


def csrf_token(conn: HTTPConnection, settings: Settings, now: float | None = None) -> str | None:
    """The CSRF token of the request's session (to put in forms), or None without a session.

    It is an HMAC of the session id under a key derived from the admin token: it is valid for
    that session only, and void with it.
    """
    token = configured_token(settings)
    current = session(conn, settings, now)
    if token is None or current is None:
        return None
    return _sign(_key(token, "csrf"), current.id)


def check_csrf(
    conn: HTTPConnection, settings: Settings, form_token: str | None, now: float | None = None
) -> bool:
    """Whether `form_token` (or, when None, the `CSRF_HEADER` header) is the request's session's
    CSRF token (constant time)."""
    expected = csrf_token(conn, settings, now)
    submitted = form_token if form_token is not None else conn.headers.get(CSRF_HEADER)
    return expected is not None and submitted is not None and _equal(submitted, expected)


# -- what the API and the dashboard call -------------------------------------------------------


def require(
    conn: HTTPConnection,
    settings: Settings,
    *,
    form_token: str | None = None,
    now: float | None = None,
) -> Method:
    """Check an admin request; returns how it is authenticated, or raises `AdminAuthError`.

    Every request needs a credential; a state-changing one must not be cross-site, and one
    authenticated by the session cookie must carry the session's CSRF token (`form_token`
    from a form, else the `CSRF_HEADER` header).
    """
    if configured_token(settings) is None:
        raise NOT_CONFIGURED
    how = method(conn, settings, now)
    if how is None:
        raise UNAUTHENTICATED
    if conn.scope.get("method", "GET") not in SAFE_METHODS:
        if cross_site(conn, trust_proxy=settings.server.trust_proxy):
            raise CROSS_SITE
        if how == "session" and not check_csrf(conn, settings, form_token, now):
            raise BAD_CSRF
    return how


def refusal(
    conn: HTTPConnection, settings: Settings, *, form_token: str | None = None,
    now: float | None = None,
) -> Response | None:
    """`require` as a JSON answer: None when the request may go on, else the refusal."""
    try:
        require(conn, settings, form_token=form_token, now=now)
    except AdminAuthError as exc:
        return exc.response()
    return None


def _served_over_https(conn: HTTPConnection, settings: Settings) -> bool:
    return _scheme(conn, trust_proxy=settings.server.trust_proxy) == "https"


def _local_path(target: str, default: str) -> str:
    """`target` when it is a path on this site (never another host: no open redirect)."""
    if target.startswith("/") and not target.startswith("//") and "\\" not in target:
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc:
            return target
    return default


def login_response(
    conn: HTTPConnection,
    settings: Settings,
    submitted: str,
    *,
    next_url: str = "/dashboard",
    now: float | None = None,
) -> Response:
    """The answer to the login form's POST: a 303 to `next_url` (a local path only) setting
    the session cookie when `submitted` is the admin token; otherwise the refusal as JSON
    (503 not configured, 403 cross-site, 401 wrong token), which a dashboard turns into its
    own page with `AdminAuthError` from `login`."""
    try:
        cookie = login(conn, settings, submitted, now=now)
    except AdminAuthError as exc:
        return exc.response()
    response = RedirectResponse(_local_path(next_url, "/dashboard"), status_code=303)
    set_session_cookie(response, conn, settings, cookie)
    return response


def login(
    conn: HTTPConnection, settings: Settings, submitted: str, *, now: float | None = None
) -> str:
    """The new session cookie's value when `submitted` is the admin token; raises
    `AdminAuthError` otherwise (not configured, a cross-site login, wrong token)."""
    token = configured_token(settings)
    if token is None:
        raise NOT_CONFIGURED
    if cross_site(conn, trust_proxy=settings.server.trust_proxy):
        raise CROSS_SITE
    if not _equal(submitted.strip(), token):
        raise AdminAuthError(401, "unauthorized", "that is not the admin token")
    return session_cookie_value(token, time.time() if now is None else now)


def set_session_cookie(
    response: Response, conn: HTTPConnection, settings: Settings, value: str
) -> None:
    response.set_cookie(
        SESSION_COOKIE, value, max_age=SESSION_SECONDS, path="/", httponly=True,
        samesite="strict", secure=_served_over_https(conn, settings),
    )
    response.headers["Cache-Control"] = "no-store"


def logout_response(
    conn: HTTPConnection, settings: Settings, *, next_url: str = "/dashboard/login"
) -> Response:
    """A 303 to `next_url` (local) that removes the session cookie. The caller checks the
    logout request with `require` first (a cross-site logout is refused too). The cookie is
    stateless: one copied elsewhere stays valid until it expires or the token changes."""
    response = RedirectResponse(_local_path(next_url, "/dashboard/login"), status_code=303)
    response.delete_cookie(
        SESSION_COOKIE, path="/", httponly=True, samesite="strict",
        secure=_served_over_https(conn, settings),
    )
    response.headers["Cache-Control"] = "no-store"
    return response

