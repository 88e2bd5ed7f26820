"""Who may call the API and open the pages.

API: ``Authorization: Bearer <PROCESSING_API_TOKEN>`` for every method, or
``Bearer <PROCESSING_READ_TOKEN>`` for GET and HEAD only; checked by the API base
handler with :func:`check_api_access`. Browsers on an origin listed in
``CORS_ALLOWED_ORIGINS`` may call it (:func:`allowed_origin`).

Pages: Panel's own auth-provider hooks with a one-field sign-in form (the API
token) and Panel's signed ``user`` cookie; ``/wall`` also opens with
``?token=<WALL_TOKEN>`` for an unattended screen. :func:`dashboard_auth` gives the
``pn.serve`` keyword arguments; with no API token it gives none (open pages).
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import re
import time
from collections import OrderedDict
from typing import Any, Callable
from urllib.parse import unquote, urlencode, urlsplit

import jinja2
from panel.auth import BasicAuthProvider, BasicLoginHandler

from .errors import Forbidden, Unauthorized
from .settings import Settings

log = logging.getLogger("app.auth")
READ_METHODS = frozenset({"GET", "HEAD"})
WALL_PATHS = frozenset({"/wall", "/wall/"})
WALL_WS_PATH = "/wall/ws"
WALL_USER = "wall"
SIGNED_IN_USER = "operator"
FAILED_SIGN_IN_DELAY_S = 1.0  # slows guessing; each failed form post waits this long


def token_matches(given: str | None, expected: str) -> bool:
    """Constant-time comparison; an unset ``expected`` token never matches."""
    if not expected or given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def check_api_access(settings: Settings, method: str, authorization: str | None) -> None:
    """Raise Unauthorized (401) or Forbidden (403) unless the request may proceed."""
    if not settings.api_token:
        return
    token = bearer_token(authorization)
    if token_matches(token, settings.api_token):
        return
    if token_matches(token, settings.read_token):
        if method.upper() in READ_METHODS:
            return
        raise Forbidden(f"the read-only token may not {method.upper()}; use PROCESSING_API_TOKEN",
                        {"method": method.upper()})
    if token is None:
        raise Unauthorized("this endpoint needs 'Authorization: Bearer <token>' (PROCESSING_API_TOKEN)")
    raise Unauthorized("the bearer token is not valid")


def allowed_origin(settings: Settings, origin: str | None) -> str | None:
    """The value for ``Access-Control-Allow-Origin``, or None for an origin not allowed."""
    if not origin or not settings.cors_origins:
        return None
    if "*" in settings.cors_origins:
        return "*"
    wanted = origin.rstrip("/").lower()
    return origin if any(wanted == o.rstrip("/").lower() for o in settings.cors_origins) else None


def derive_key(token: str, purpose: str) -> str:
    """A key for ``purpose`` derived from the token: rotating the token signs everyone out."""
    return hmac.new(token.encode("utf-8"), purpose.encode("utf-8"), hashlib.sha256).hexdigest()


# -- repeated wrong tokens --------------------------------------------------------

class FailureTracker:
    """Counts wrong tokens per client address; ``max_failures`` within a lockout period
    lock the address out for ``lockout_s`` (every attempt, right or wrong, is refused).

    Failures are logged with the address and where, never with the token.
    """

    MAX_ADDRESSES = 10_000  # the oldest entries go first beyond this

    def __init__(self, max_failures: int, lockout_s: float):
        self.max_failures = max_failures
        self.lockout_s = lockout_s
        self._entries: OrderedDict[str, tuple[int, float, float]] = OrderedDict()  # count, since, locked until

    def locked_for(self, address: str) -> int:
        """Whole seconds ``address`` stays locked out; 0 when it is not."""
        entry = self._entries.get(address)
        if entry is None:
            return 0
        remaining = entry[2] - time.monotonic()
        return math.ceil(remaining) if remaining > 0 else 0

    def failed(self, address: str, where: str) -> None:
        now = time.monotonic()
        count, since, _ = self._entries.pop(address, (0, now, 0.0))
        if now - since > self.lockout_s:  # an old run of failures is forgotten
            count, since = 0, now
        count += 1
        locked_until = now + self.lockout_s if count >= self.max_failures else 0.0
        self._entries[address] = (0 if locked_until else count, now if locked_until else since, locked_until)
        while len(self._entries) > self.MAX_ADDRESSES:
            self._entries.popitem(last=False)
        if locked_until:
            log.warning("wrong token from %s on %s: %d failures, locked out for %g s",
                        address, where, count, self.lockout_s)
        else:
            log.warning("wrong token from %s on %s (%d of %d before a lockout)",
                        address, where, count, self.max_failures)


_TRACKERS: dict[tuple[int, float], FailureTracker] = {}


def failures(settings: Settings) -> FailureTracker:
    """The process's one tracker (the API, the sign-in form and the wall share it)."""
    key = (settings.auth_max_failures, settings.auth_lockout_s)
    if key not in _TRACKERS:
        _TRACKERS[key] = FailureTracker(*key)
    return _TRACKERS[key]


# -- redirects ----------------------------------------------------------------------

_SAFE_PATH = re.compile(r"/(?![/\\])[A-Za-z0-9\-._~!$&'()*+,;=:@/%?#]*")


def local_path(url: str | None, default: str = "/") -> str:
    """``url`` if it is a path on this server, else ``default``.

    Browsers drop tabs and newlines from URLs and read ``\\`` as ``/``, so anything
    but printable ASCII, a backslash or ``//`` (also once percent-decoded, up to
    three times) could lead off-site: all are refused, not repaired.
    """
    if not url:
        return default
    candidate = url
    for _ in range(4):
        if not _SAFE_PATH.fullmatch(candidate) or "//" in candidate.split("?", 1)[0].split("#", 1)[0]:
            return default
        parts = urlsplit(candidate)
        if parts.scheme or parts.netloc:
            return default
        decoded = unquote(candidate)
        if decoded == candidate:
            return url
        candidate = decoded
    return default  # still encoded after four rounds: not a path a page links to


# -- pages -----------------------------------------------------------------------

_TEMPLATES = jinja2.Environment(autoescape=True)
SIGN_IN_PAGE = _TEMPLATES.from_string("""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in · Distributed Processing Cluster</title>
<style>
body{font-family:system-ui,sans-serif;background:#f4f6f8;margin:0;display:flex;min-height:100vh;
align-items:center;justify-content:center;color:#1f2933}
form{background:#fff;padding:32px 36px;border-radius:10px;box-shadow:0 2px 12px rgba(0,0,0,.12);width:340px}
h1{font-size:1.25em;margin:0 0 4px} p{margin:0 0 18px;color:#52606d;font-size:.92em}
label{display:block;font-weight:600;margin-bottom:6px}
input[type=password]{width:100%;box-sizing:border-box;padding:9px 10px;font-size:1em;border:1px solid #cbd2d9;border-radius:6px}
button{margin-top:16px;width:100%;padding:10px;font-size:1em;border:0;border-radius:6px;background:#1c7ed6;color:#fff;cursor:pointer}
.error{color:#c92a2a;margin:12px 0 0;font-size:.92em}
</style></head>
<body><form method="post" action="{{ action }}" data-testid="sign-in">
<h1>Distributed Processing Cluster</h1>
<p>Sign in with the access token (<code>PROCESSING_API_TOKEN</code>).</p>
<label for="token">Access token</label>
<input id="token" name="token" type="password" autocomplete="current-password" autofocus required>
<input type="hidden" name="next" value="{{ next }}">
<button type="submit">Sign in</button>
{% if error %}<p class="error" role="alert">{{ error }}</p>{% endif %}
</form></body></html>
""")


class TokenSignInHandler(BasicLoginHandler):
    """``/login``: a form asking for the API token; sets Panel's signed ``user`` cookie.

    Subclassed per server by :class:`TokenAuthProvider` to bind ``token``.
    """

    token: str = ""
    endpoint: str = "/login"
    settings: Settings = Settings()

    def set_cookie(self, name: str, value: str | bytes, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        kwargs.setdefault("samesite", "Lax")
        if self.request.protocol == "https":
            kwargs.setdefault("secure", True)
        super().set_cookie(name, value, *args, **kwargs)

    def get(self) -> None:
        self.set_header("Cache-Control", "no-store")
        error = "The token is not valid." if self.get_argument("error", "") else ""
        self.finish(SIGN_IN_PAGE.render(action=self.endpoint, next=local_path(self.get_argument("next", "/")),
                                        error=error))

    async def post(self) -> None:
        next_url = local_path(self.get_argument("next", "/"))
        address = self.request.remote_ip or "unknown"
        tracker = failures(self.settings)
        wait = tracker.locked_for(address)
        if wait:
            self.set_status(429)
            self.set_header("Retry-After", str(wait))
            self.set_header("Content-Type", "text/plain; charset=utf-8")
            self.finish(f"Too many wrong tokens from this address; try again in {wait} s.\n")
            return
        if token_matches(self.get_argument("token", ""), self.token):
            self.set_current_user(SIGNED_IN_USER)  # Panel's: signed user + id_token cookies
            self.redirect(next_url)
            return
        tracker.failed(address, "the sign-in form")
        await asyncio.sleep(FAILED_SIGN_IN_DELAY_S)
        self.redirect(f"{self.endpoint}?{urlencode({'error': '1', 'next': next_url})}")


class TokenAuthProvider(BasicAuthProvider):
    """Panel's basic provider, with a token sign-in form and the wall's URL token."""

    def __init__(self, settings: Settings, login_endpoint: str = "/login") -> None:
        self._settings = settings  # before Panel's __init__, which validates the hooks below
        self._sign_in = type("SignInHandler", (TokenSignInHandler,),
                             {"token": settings.api_token, "endpoint": login_endpoint, "settings": settings})
        super().__init__(login_endpoint=login_endpoint)

    @property
    def get_user(self) -> Callable[[Any], str | None]:
        from_cookie = super().get_user

        def get_user(handler: Any) -> str | None:
            return from_cookie(handler) or (WALL_USER if self.wall_allowed(handler) else None)

        return get_user

    def wall_allowed(self, handler: Any) -> bool:
        """``/wall?token=<WALL_TOKEN>``, and the websocket of a wall page served that way."""
        wall_token = self._settings.wall_token
        path = handler.request.path
        if not wall_token:
            return False
        if path in WALL_PATHS:
            given = handler.get_argument("token", "")
            if not given:
                return False
            address = handler.request.remote_ip or "unknown"
            tracker = failures(self._settings)
            if tracker.locked_for(address):
                return False  # even the right token, until the lockout ends
            if token_matches(given, wall_token):
                return True
            tracker.failed(address, "the wall URL")
            return False
        # Sessions are signed (see dashboard_auth): a websocket can only attach to a
        # session whose page load passed this check, so the socket needs no token.
        return path == WALL_WS_PATH

    @property
    def login_handler(self) -> type:
        return self._sign_in


def dashboard_auth(settings: Settings) -> dict[str, Any]:
    """``pn.serve`` keyword arguments that put the pages behind sign-in; {} without a token."""
    if not settings.api_token:
        return {}
    return {
        "auth_provider": TokenAuthProvider(settings),
        "cookie_secret": derive_key(settings.api_token, "dashboard-cookie"),
        # signed session ids: a websocket cannot open a page session no page load issued
        "sign_sessions": True,
        "secret_key": derive_key(settings.api_token, "bokeh-sessions"),
    }
