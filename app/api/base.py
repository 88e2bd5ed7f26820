"""The base of every API handler: access, CORS, JSON in and out, and the one error shape.

Error body, for every status:
``{"error": {"code": "...", "message": "...", "details": {...}, "request_id": "..."}}``

Before any handler's own ``prepare`` or method runs, :meth:`BaseHandler.check_request`
checks the bearer token (unless the handler is ``public``) and the declared body
size (``MAX_REQUEST_KB``); CORS preflights are answered by :meth:`BaseHandler.options`
without a token. Every response carries ``X-Request-Id``.
"""
from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import param
from tornado import httputil, web

from ..auth import allowed_origin, bearer_token, check_api_access, failures
from ..errors import (InvalidRequest, NotFound, PayloadTooLarge, ProcessingError, TooManyRequests, Unauthorized,
                      UnsupportedMediaType)
from ..jsonsafe import json_safe
from ..models import build, public_params
from ..ids import new_id

if TYPE_CHECKING:
    from ..service import ProcessingService

log = logging.getLogger("app.api")

STATUS_CODES = {
    400: "invalid_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type",
    421: "misdirected_request",
    422: "unprocessable", 429: "too_many_requests", 500: "internal_error", 503: "unavailable",
}


def error_body(code: str, message: str, details: dict[str, Any] | None = None,
               request_id: str | None = None) -> dict[str, Any]:
    """The one error shape of the API."""
    return {"error": {"code": code, "message": message, "details": details or {}, "request_id": request_id}}


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def dumps(value: Any) -> str:
    """JSON with NaN/inf as null (browsers reject NaN)."""
    return json.dumps(json_safe(value), default=_json_default)


@dataclass
class Endpoint:
    """What the OpenAPI document says about one method of a handler."""

    summary: str
    body: type[param.Parameterized] | None = None
    query: type[param.Parameterized] | None = None
    responses: dict[int, str] = field(default_factory=lambda: {200: "OK"})
    tags: tuple[str, ...] = ()
    content_type: str = "application/json"
    response_type: str = "application/json"


CORS_ALLOW_HEADERS = "Authorization, Content-Type"
CORS_EXPOSE_HEADERS = "X-Request-Id, Retry-After, Location, WWW-Authenticate"
CORS_MAX_AGE_S = 600
HTTP_METHODS = ("GET", "HEAD", "POST", "DELETE", "PUT", "PATCH")
HANDLER_METHODS = ("get", "post", "delete", "put", "patch", "head")
BODY_METHODS = ("post", "put", "patch")
JSON_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})  # a body they carry must be JSON
MAX_JSON_DEPTH = 64  # nesting of a JSON body; deeper is a 400 (a 100,000-deep body was a 500)
_TOO_DEEP = object()
UPLOAD_MIN_RATE_MB_S = 1.0  # an upload may take MAX_UPLOAD_MB / this many seconds


def _guarded_prepare(prepare: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(prepare)
    def guarded(self: "BaseHandler") -> Any:
        return prepare(self) if self.check_request() else None

    return guarded


def _guarded_method(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def guarded(self: "BaseHandler", *args: Any, **kwargs: Any) -> Any:
        self.raise_refusal()
        return method(self, *args, **kwargs)

    return guarded


class BaseHandler(web.RequestHandler):
    """JSON handler: parses, calls the service once, serializes.

    The body is streamed so an over-long JSON body is refused (413) before it is
    read; a handler that streams its own body (uploads) overrides ``data_received``
    and enforces its own limit. A handler without a method taking a body (GET,
    DELETE) is not streamed: Tornado then runs it as soon as the request is read,
    two loop passes sooner, which keeps probes quick when the loop is busy.
    """

    openapi: dict[str, Endpoint] = {}
    public: ClassVar[bool] = False  # served without a token (health probes, the API description)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # access control must not depend on each subclass calling super(): the checks
        # run before every subclass's own prepare and HTTP methods
        if "prepare" in cls.__dict__:
            cls.prepare = _guarded_prepare(cls.__dict__["prepare"])  # type: ignore[method-assign]
        for name in HANDLER_METHODS:
            if name in cls.__dict__:
                setattr(cls, name, _guarded_method(cls.__dict__[name]))
        if "get" in cls.__dict__ and "head" not in cls.__dict__:
            # HEAD is GET without the body (Tornado drops it and keeps Content-Length)
            cls.head = cls.get  # type: ignore[method-assign]
        takes_body = any(getattr(cls, m) is not getattr(web.RequestHandler, m) for m in BODY_METHODS)
        if takes_body or cls.data_received is not BaseHandler.data_received:
            web.stream_request_body(cls)

    def initialize(self, service: "ProcessingService") -> None:
        self._service = service
        self._checked = False
        self._refusal: ProcessingError | None = None
        self._body_size = 0
        self._cors_headers()

    @property
    def service(self) -> "ProcessingService":
        return self._service

    def set_default_headers(self) -> None:
        # runs again after clear() on errors, so error responses carry the same headers
        if not hasattr(self, "request_id"):
            self.request_id = new_id()
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("X-Request-Id", self.request_id)
        if hasattr(self, "_service"):
            self._cors_headers()

    def check_xsrf_cookie(self) -> None:  # an API authenticated by headers, not cookies
        return None

    # -- access ----------------------------------------------------------
    def prepare(self) -> None:
        self.check_request()

    def check_request(self) -> bool:
        """Token and size checks before the handler's own code; False while a refusal waits.

        A refusal (401/403) is answered at once when the body will not be read anyway
        (a handler streaming its own body, e.g. an upload), else once the body is in:
        answering a streamed request before its body makes Tornado drop the
        connection, which keep-alive clients see as a reset.
        """
        if self._checked or self.request.method == "OPTIONS":
            return self._refusal is None
        self._checked = True
        try:
            if not self.public:
                self._check_access()
            if type(self).data_received is BaseHandler.data_received:
                self._check_content_type()
        except ProcessingError as exc:
            self._refusal = exc
        if type(self).data_received is not BaseHandler.data_received:
            self.raise_refusal()
            settings = self.service.settings
            self.request.connection.set_body_timeout(  # type: ignore[union-attr]
                max(settings.body_timeout_s, settings.max_upload_mb / UPLOAD_MIN_RATE_MB_S))
            return True
        length = self.request.headers.get("Content-Length", "0")
        if length.isdigit() and int(length) > self._body_limit:
            raise self._too_large(f"a body of {int(length)} bytes")
        return self._refusal is None

    def _check_access(self) -> None:
        """The token check, behind a per-address lockout after repeated wrong tokens."""
        settings = self.service.settings
        if not settings.api_token:
            return
        address = self.request.remote_ip or "unknown"
        tracker = failures(settings)
        wait = tracker.locked_for(address)
        if wait:
            raise TooManyRequests(f"too many wrong tokens from this address; try again in {wait} s",
                                  retry_after=wait)
        authorization = self.request.headers.get("Authorization")
        try:
            check_api_access(settings, self.request.method or "", authorization)
        except Unauthorized:
            if bearer_token(authorization) is not None:  # a wrong token, not a missing one
                tracker.failed(address, f"the API ({self.request.method} {self.request.path[:200]})")
            raise

    def _check_content_type(self) -> None:
        """A body sent to a JSON endpoint must say it is JSON (a form or text/plain post is a CSRF vector)."""
        if (self.request.method or "").upper() not in JSON_METHODS:
            return
        length = self.request.headers.get("Content-Length", "")
        if not (length.isdigit() and int(length) > 0) and "Transfer-Encoding" not in self.request.headers:
            return
        media = self.request.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if media != "application/json":
            raise UnsupportedMediaType(f"the body must be application/json, not {media[:100] or 'undeclared'}",
                                       {"content_type": media[:100]})

    def raise_refusal(self) -> None:
        if self._refusal is not None:
            raise self._refusal

    def _cors_headers(self) -> None:
        origin = allowed_origin(self.service.settings, self.request.headers.get("Origin"))
        if self.service.settings.cors_origins:
            self.set_header("Vary", "Origin")
        if origin is not None:
            self.set_header("Access-Control-Allow-Origin", origin)
            self.set_header("Access-Control-Expose-Headers", CORS_EXPOSE_HEADERS)

    def _allowed_methods(self) -> list[str]:
        return [m for m in HTTP_METHODS
                if getattr(type(self), m.lower()) is not getattr(web.RequestHandler, m.lower())]

    def _allow_header(self) -> str:
        return ", ".join([*self._allowed_methods(), "OPTIONS"])

    def options(self, *args: Any, **kwargs: Any) -> None:
        """CORS preflight (never needs a token): 204, with the CORS grant for an allowed origin."""
        methods = self._allow_header()
        self.set_header("Allow", methods)
        origin = allowed_origin(self.service.settings, self.request.headers.get("Origin"))
        if origin is not None and self.request.headers.get("Access-Control-Request-Method"):
            self.set_header("Access-Control-Allow-Methods", methods)
            self.set_header("Access-Control-Allow-Headers", CORS_ALLOW_HEADERS)
            self.set_header("Access-Control-Max-Age", str(CORS_MAX_AGE_S))
        self.set_status(204)
        self.finish()

    # -- body ------------------------------------------------------------
    @property
    def _body_limit(self) -> int:
        return int(self.service.settings.max_request_kb * 1024)

    def _too_large(self, what: str = "the body") -> PayloadTooLarge:
        kb = self.service.settings.max_request_kb
        return PayloadTooLarge(f"{what} is over MAX_REQUEST_KB ({kb:g} KB)", {"limit_bytes": self._body_limit})

    def data_received(self, chunk: bytes) -> None:
        if self._finished:
            return
        self._body_size += len(chunk)
        if self._body_size > self._body_limit:  # a chunked body with no Content-Length
            self.refuse(self._too_large())  # answered now; Tornado then drops the connection
            return
        # bounded by MAX_REQUEST_KB: a few chunks, so plain concatenation is fine
        self.request.body += chunk

    # -- input -----------------------------------------------------------
    def json_body(self) -> Any:
        """The decoded JSON body; empty body → ``{}``; malformed → 400."""
        raw = self.request.body
        if not raw or not raw.strip():
            return {}
        try:
            value = json.loads(raw)
        except RecursionError:
            value = _TOO_DEEP  # nested beyond the parser's stack
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidRequest(f"the request body is not valid JSON: {exc}") from None
        if value is _TOO_DEEP or json_depth(value) > MAX_JSON_DEPTH:
            raise InvalidRequest(f"the request body is nested more than {MAX_JSON_DEPTH} levels deep",
                                 {"max_depth": MAX_JSON_DEPTH})
        return value

    def parse_body(self, model: type[param.Parameterized]) -> Any:
        return build(model, self.json_body())

    def parse_query(self, model: type[param.Parameterized]) -> Any:
        """Query arguments validated by ``model`` (numbers converted first)."""
        values: dict[str, Any] = {}
        params = public_params(model)
        for key in self.request.query_arguments:
            raw = self.get_query_argument(key)
            p = params.get(key)
            if p is None:
                raise InvalidRequest(f"unknown query parameter '{key}'; allowed: {', '.join(params)}")
            values[key] = _convert(key, raw, p)
        return build(model, values)

    # -- output ----------------------------------------------------------
    def write_json(self, value: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(dumps(value))

    def refuse(self, error: ProcessingError) -> None:
        """Answer ``error`` at once, from outside a handler method (while the body streams in)."""
        self.send_error(error.status, exc_info=(type(error), error, None))

    def log_exception(self, typ: Any, value: BaseException | None, tb: Any) -> None:
        if isinstance(value, ProcessingError):
            return  # a domain error is an answer (its own status), not a fault of the server
        super().log_exception(typ, value, tb)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ProcessingError):  # raised by a handler or the service: its own status
            self.set_status(exc.status)
            if getattr(exc, "retry_after", None):
                self.set_header("Retry-After", str(exc.retry_after))  # type: ignore[attr-defined]
            if isinstance(exc, Unauthorized):
                self.set_header("WWW-Authenticate", 'Bearer realm="processing"')
            self.finish(dumps(error_body(exc.code, exc.message, exc.details, self.request_id)))
            return
        if isinstance(exc, web.HTTPError) and exc.log_message and status_code < 500:
            message = exc.log_message % exc.args if exc.args else exc.log_message
        elif status_code == 405:
            message = f"method {self.request.method} is not allowed on {self.request.path}"
            self.set_header("Allow", self._allow_header())
        elif status_code >= 500:
            message = f"internal error; see the server log for request {self.request_id}"
            log.error("request %s failed: %s %s", self.request_id, self.request.method, self.request.path,
                      exc_info=kwargs.get("exc_info"))
        elif isinstance(exc, web.HTTPError) and exc.reason:
            message = exc.reason
        else:
            message = httputil.responses.get(status_code, "error")
        code = STATUS_CODES.get(status_code, "error")
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(dumps(error_body(code, message, {}, self.request_id)))


def json_depth(value: Any) -> int:
    """Nesting depth of decoded JSON (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, depth + 1)
            stack.extend((child, depth + 1) for child in item)
    return deepest


def _convert(key: str, raw: str, p: param.Parameter) -> Any:
    if isinstance(p, param.Boolean):
        if raw.lower() in {"1", "true", "yes"}:
            return True
        if raw.lower() in {"0", "false", "no"}:
            return False
        raise InvalidRequest(f"'{key}' must be true or false, got {raw!r}", {"field": key})
    if isinstance(p, param.Integer):
        try:
            value = int(raw)
        except ValueError:
            raise InvalidRequest(f"'{key}' must be an integer, got {raw!r}", {"field": key}) from None
        if not -2**63 <= value < 2**63:  # SQLite's INTEGER range (an offset beyond it was a 500)
            raise InvalidRequest(f"'{key}' is out of range", {"field": key})
        return value
    if isinstance(p, param.Number):
        try:
            return float(raw)
        except ValueError:
            raise InvalidRequest(f"'{key}' must be a number, got {raw!r}", {"field": key}) from None
    if isinstance(p, param.List):
        return [v for v in raw.split(",") if v]
    return raw


class NotFoundHandler(BaseHandler):
    """Any unknown path under /api: a JSON 404, never an HTML page."""

    def _not_found(self, *args: Any, **kwargs: Any) -> None:
        # raised from the methods, not prepare, so keep-alive connections survive (see check_request)
        raise NotFound(f"no API endpoint at {self.request.path}; see /api/processing/openapi.json")

    get = post = delete = put = patch = head = _not_found
