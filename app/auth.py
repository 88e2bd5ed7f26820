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
from typing import Any, Callable
from urllib.parse import urlencode

import jinja2
from panel.auth import BasicAuthProvider, BasicLoginHandler

from .errors import Forbidden, Unauthorized
from .settings import Settings

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


def local_path(url: str | None, default: str = "/") -> str:
    """``url`` if it is a path on this server (no scheme, host or backslash), else ``default``."""
    if not url or not url.startswith("/") or url.startswith("//") or "\\" in url:
        return default
    return url


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
        if token_matches(self.get_argument("token", ""), self.token):
            self.set_current_user(SIGNED_IN_USER)  # Panel's: signed user + id_token cookies
            self.redirect(next_url)
            return
        await asyncio.sleep(FAILED_SIGN_IN_DELAY_S)
        self.redirect(f"{self.endpoint}?{urlencode({'error': '1', 'next': next_url})}")


class TokenAuthProvider(BasicAuthProvider):
    """Panel's basic provider, with a token sign-in form and the wall's URL token."""

    def __init__(self, settings: Settings, login_endpoint: str = "/login") -> None:
        self._settings = settings  # before Panel's __init__, which validates the hooks below
        self._sign_in = type("SignInHandler", (TokenSignInHandler,),
                             {"token": settings.api_token, "endpoint": login_endpoint})
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
            return token_matches(handler.get_argument("token", ""), wall_token)
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
