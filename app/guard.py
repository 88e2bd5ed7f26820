"""Checks every request passes before any handler (API or page) sees it, and the
headers every response carries.

- ``Host`` must name this server (DNS rebinding): the bound host, ``localhost``,
  ``127.0.0.1`` and ``[::1]`` on a loopback or wildcard bind, this machine's name
  on a wildcard bind, and ``PROCESSING_ALLOWED_HOSTS``. The port in ``Host`` is
  ignored: a rebinding page controls the name, not the port, and a proxy may
  rewrite the port. Any other name: 421.
- A state-changing request (POST, PUT, PATCH, DELETE) from a browser page on
  another origin (CSRF): 403. The origin is the ``Origin`` header, else the
  ``Referer``'s; it must equal the request's own ``Host`` (host and port) or be
  allowed by ``CORS_ALLOWED_ORIGINS``. A request with neither header (curl, a
  script) is not a browser's and passes.
- Security headers on every response (:class:`SecurityHeaders`).

Both hook into Tornado's public pieces: a router wrapped around the application
(:class:`GuardRouter`) and an output transform.
"""
from __future__ import annotations

import ipaddress
import socket
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from tornado import httputil, routing, web

from .api.base import BaseHandler
from .auth import allowed_origin
from .errors import Forbidden, ProcessingError
from .settings import Settings

if TYPE_CHECKING:
    from .service import ProcessingService

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]"})
DEFAULT_PORTS = {"http": "80", "https": "443", "ws": "80", "wss": "443"}
HEAD_AS_GET = "_head_as_get"  # request attribute: a page HEAD served by its GET, body dropped

# Bokeh and Panel need inline scripts (each page's document is an inline <script>)
# and 'unsafe-eval' (Bokeh compiles model code and CustomJS with new Function);
# inline styles (every Bokeh view sets style attributes and <style> elements); data:
# and blob: images (icons, exported plots); and a websocket back to this server.
PAGE_POLICY = ("default-src 'self'; script-src 'self' 'unsafe-inline' 'unsafe-eval' blob:; "
               "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; font-src 'self' data:; "
               "connect-src 'self' blob: ws://{host} wss://{host}; worker-src 'self' blob:; object-src 'none'; "
               "base-uri 'self'; form-action 'self'; frame-ancestors 'none'")
OTHER_POLICY = "default-src 'none'; frame-ancestors 'none'"
FIXED_HEADERS = {"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin"}


class MisdirectedRequest(ProcessingError):
    code = "misdirected_request"
    status = 421


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback IP address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_wildcard(host: str) -> bool:
    """A bind to every interface (``0.0.0.0``, ``::``, or empty)."""
    return host.strip("[]") in {"", "0.0.0.0", "::"}


def _name(host: str) -> str:
    """A host name as it appears in ``Host`` (IPv6 in brackets), lower case."""
    host = host.strip().lower()
    if ":" in host and not host.startswith("["):
        return f"[{host}]"
    return host


def served_hosts(settings: Settings) -> frozenset[str]:
    """The host names this server answers to (without ports)."""
    names = {_name(settings.host)} if not is_wildcard(settings.host) else set()
    if is_loopback(settings.host) or is_wildcard(settings.host):
        names |= LOOPBACK_NAMES
    if is_wildcard(settings.host):
        names.add(socket.gethostname().lower())
    names |= {_name(h) for h in settings.allowed_hosts}
    return frozenset(names)


def split_host(host: str) -> tuple[str, str]:
    """``Host`` header → (name, port); port '' when absent."""
    host = host.strip().lower()
    if host.startswith("["):
        name, _, rest = host.partition("]")
        return name + "]", rest[1:] if rest.startswith(":") else ""
    name, sep, port = host.rpartition(":")
    if sep and port.isdigit():
        return name, port
    return host, ""


def _netloc(scheme: str, netloc: str) -> str:
    """``netloc`` without the scheme's default port, lower case."""
    name, port = split_host(netloc)
    return name if port in ("", DEFAULT_PORTS.get(scheme, "")) else f"{name}:{port}"


def request_origin(request: httputil.HTTPServerRequest) -> str | None:
    """The page origin a browser request came from: ``Origin``, else the ``Referer``'s."""
    origin = request.headers.get("Origin")
    if origin:
        return origin.strip()
    referer = request.headers.get("Referer")
    if not referer:
        return None
    parts = urlsplit(referer.strip())
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else "null"


def same_origin(request: httputil.HTTPServerRequest, origin: str) -> bool:
    """``origin`` is this request's own ``scheme://Host`` (any scheme: TLS may end at a proxy)."""
    parts = urlsplit(origin.lower())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False
    own = _netloc(parts.scheme, request.host or "")
    return _netloc(parts.scheme, parts.netloc) == own


class RequestGuard:
    """Decides, from the headers alone, whether a request may reach any handler."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.hosts = served_hosts(settings)

    def refusal(self, request: httputil.HTTPServerRequest) -> ProcessingError | None:
        name, _ = split_host(request.host or "")
        if name not in self.hosts:
            return MisdirectedRequest(
                f"this server does not answer to the host name {name[:100]!r}; "
                "add it to PROCESSING_ALLOWED_HOSTS if it is this server's", {"host": name[:100]})
        if (request.method or "").upper() not in UNSAFE_METHODS:
            return None
        origin = request_origin(request)
        if origin is None or same_origin(request, origin) or allowed_origin(self.settings, origin):
            return None
        return Forbidden(f"a {request.method} from the page origin {origin[:100]!r} is refused: "
                         "it is neither this server nor in CORS_ALLOWED_ORIGINS", {"origin": origin[:100]})


class RefusedHandler(BaseHandler):
    """Answers a request the guard refused: the error shape under /api, plain text elsewhere."""

    public = True

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        refusal = self.application_guard.refusal(self.request)
        raise refusal or Forbidden("refused")

    def initialize(self, service: "ProcessingService", guard: RequestGuard) -> None:  # type: ignore[override]
        super().initialize(service)
        self.application_guard = guard

    get = post = put = patch = delete = head = _refuse

    def _check_content_type(self) -> None:  # the guard's refusal comes first
        return None

    def options(self, *args: Any, **kwargs: Any) -> None:
        self._refuse()

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if self.request.path.startswith("/api") or not isinstance(exc, ProcessingError):
            super().write_error(status_code, **kwargs)
            return
        self.set_status(exc.status)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(exc.message + "\n")


class GuardRouter(routing.Router):
    """Bokeh's Tornado application behind the guard: every request's headers are checked first.

    Installed as the HTTP server's request callback (:class:`app.connections.GuardedHTTPServer`),
    so no route of the application, Bokeh's or ours, is reached around it.
    """

    def __init__(self, app: web.Application, service: "ProcessingService"):
        self.app = app
        self.guard = RequestGuard(service.settings)
        self._refused = {"service": service, "guard": self.guard}
        app.add_transform(SecurityHeaders)

    def find_handler(self, request: httputil.HTTPServerRequest, **kwargs: Any) -> httputil.HTTPMessageDelegate | None:
        if self.guard.refusal(request) is not None:
            return self.app.get_handler_delegate(request, RefusedHandler, self._refused)
        if request.method == "HEAD" and not request.path.startswith("/api"):
            # page handlers (Bokeh's) have no HEAD: run their GET and drop the body
            request.method = "GET"
            setattr(request, HEAD_AS_GET, True)
        return self.app.find_handler(request, **kwargs)


class SecurityHeaders(web.OutputTransform):
    """CSP, framing, sniffing and referrer headers on every response (a handler's own win)."""

    def __init__(self, request: httputil.HTTPServerRequest) -> None:
        super().__init__(request)
        # a page is only served for a Host the guard accepted; the filter keeps the policy intact anyway
        self._host = "".join(c for c in (request.host or "").lower() if c.isalnum() or c in ".-:[]")
        self._head = getattr(request, HEAD_AS_GET, False)

    def transform_first_chunk(self, status_code: int, headers: httputil.HTTPHeaders, chunk: bytes,
                              finishing: bool) -> tuple[int, httputil.HTTPHeaders, bytes]:
        page = headers.get("Content-Type", "").startswith("text/html")
        policy = PAGE_POLICY.format(host=self._host) if page else OTHER_POLICY
        headers.setdefault("Content-Security-Policy", policy)
        for name, value in FIXED_HEADERS.items():
            headers.setdefault(name, value)
        if self._head:
            headers.setdefault("Content-Length", str(len(chunk)))
            return status_code, headers, b""
        return status_code, headers, chunk

    def transform_chunk(self, chunk: bytes, finishing: bool) -> bytes:
        return b"" if self._head else chunk


def websocket_origins(settings: Settings) -> list[str]:
    """``host:port`` of every page origin allowed to open a websocket: exactly the served names.

    Names from ``PROCESSING_ALLOWED_HOSTS`` are also allowed without a port (80) and on 443,
    as pages reached through a proxy.
    """
    port = settings.port
    origins = {f"{name}:{port}" for name in served_hosts(settings)}
    for host in settings.allowed_hosts:
        name, host_port = split_host(_name(host))
        origins |= {f"{name}:{host_port}"} if host_port else {f"{name}:80", f"{name}:443"}
    # Bokeh's allowlist cannot parse IPv6 literals: pages opened at http://[::1]:port/ get no websocket
    return sorted(o for o in origins if not o.startswith("["))
