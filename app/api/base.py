"""The base of every API handler: JSON in and out, and the one error shape.

Error body, for every status:
``{"error": {"code": "...", "message": "...", "details": {...}, "request_id": "..."}}``
"""
from __future__ import annotations

import json
import logging
import math
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import param
from tornado import web

from ..errors import InvalidRequest, NotFound, ProcessingError
from ..models import build, public_params

if TYPE_CHECKING:
    from ..service import ProcessingService

log = logging.getLogger("app.api")

STATUS_CODES = {
    400: "invalid_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type",
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


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def dumps(value: Any) -> str:
    """JSON with NaN/inf as null (browsers reject NaN)."""
    return json.dumps(_clean(value), default=_json_default)


@dataclass
class Endpoint:
    """What the OpenAPI document says about one method of a handler."""

    summary: str
    body: type[param.Parameterized] | None = None
    query: type[param.Parameterized] | None = None
    responses: dict[int, str] = field(default_factory=lambda: {200: "OK"})
    tags: tuple[str, ...] = ()
    content_type: str = "application/json"


class BaseHandler(web.RequestHandler):
    """JSON handler: parses, calls the service once, serializes."""

    openapi: dict[str, Endpoint] = {}

    def initialize(self, service: "ProcessingService") -> None:
        self._service = service
        self.request_id = uuid.uuid4().hex[:12]

    @property
    def service(self) -> "ProcessingService":
        return self._service

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")

    def check_xsrf_cookie(self) -> None:  # an API authenticated by headers, not cookies
        return None

    # -- input -----------------------------------------------------------
    def json_body(self) -> Any:
        """The decoded JSON body; empty body → ``{}``; malformed → 400."""
        raw = self.request.body
        if not raw or not raw.strip():
            return {}
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidRequest(f"the request body is not valid JSON: {exc}") from None

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

    def _handle_request_exception(self, e: BaseException) -> None:
        if isinstance(e, ProcessingError):
            if self._finished:
                return
            if getattr(e, "retry_after", None):
                self.set_header("Retry-After", str(e.retry_after))  # type: ignore[attr-defined]
            self.clear_header("Content-Length")
            self.write_json(error_body(e.code, e.message, e.details, self.request_id), e.status)
            return
        super()._handle_request_exception(e)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, web.HTTPError) and exc.log_message and status_code < 500:
            message = exc.log_message % exc.args if exc.args else exc.log_message
        elif status_code == 405:
            message = f"method {self.request.method} is not allowed on {self.request.path}"
        elif status_code >= 500:
            message = f"internal error; see the server log for request {self.request_id}"
            log.error("request %s failed: %s %s", self.request_id, self.request.method, self.request.path,
                      exc_info=kwargs.get("exc_info"))
        else:
            message = self._reason
        code = STATUS_CODES.get(status_code, "error")
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(dumps(error_body(code, message, {}, self.request_id)))


def _convert(key: str, raw: str, p: param.Parameter) -> Any:
    if isinstance(p, param.Boolean):
        if raw.lower() in {"1", "true", "yes"}:
            return True
        if raw.lower() in {"0", "false", "no"}:
            return False
        raise InvalidRequest(f"'{key}' must be true or false, got {raw!r}", {"field": key})
    if isinstance(p, param.Integer):
        try:
            return int(raw)
        except ValueError:
            raise InvalidRequest(f"'{key}' must be an integer, got {raw!r}", {"field": key}) from None
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

    def prepare(self) -> None:
        raise NotFound(f"no API endpoint at {self.request.path}; see /api/processing/openapi.json")
