"""Domain errors raised by the service layer; the API maps each ``code`` to a status."""
from __future__ import annotations

from typing import Any


SHOWN_CHARS = 200  # long user values are cut to this in messages and logs
MAX_MESSAGE_CHARS = 2000  # no public message (nor the log line that repeats it) grows past this


def shorten(value: str, limit: int = SHOWN_CHARS) -> str:
    """``value`` cut to ``limit`` characters (with how many were left out), for messages and logs."""
    return value if len(value) <= limit else f"{value[:limit]}… ({len(value) - limit} more characters)"


class ProcessingError(Exception):
    """An error with a public message; ``code`` is stable and machine-readable."""

    code = "error"
    status = 500

    def __init__(self, message: str, details: dict[str, Any] | None = None, code: str | None = None):
        message = shorten(message, MAX_MESSAGE_CHARS)  # it may quote a user's value of any length
        super().__init__(message)
        self.message = message
        self.details = details or {}
        if code:
            self.code = code


class InvalidRequest(ProcessingError):
    """The request is malformed or a value is out of range (400)."""

    code = "invalid_request"
    status = 400


class Unauthorized(ProcessingError):
    code = "unauthorized"
    status = 401


class Forbidden(ProcessingError):
    """A path outside the allowed data roots, or an action not permitted (403)."""

    code = "forbidden"
    status = 403


class NotFound(ProcessingError):
    code = "not_found"
    status = 404


class Conflict(ProcessingError):
    """The request conflicts with the current state (409)."""

    code = "conflict"
    status = 409


class ClusterNotRunning(Conflict):
    code = "cluster_not_running"


class PayloadTooLarge(ProcessingError):
    code = "payload_too_large"
    status = 413


class Unprocessable(ProcessingError):
    """The input was well-formed but could not be read (e.g. a corrupt file) (422)."""

    code = "unprocessable"
    status = 422


class TooManyRequests(ProcessingError):
    code = "too_many_requests"
    status = 429

    def __init__(self, message: str, retry_after: int = 5, details: dict[str, Any] | None = None):
        super().__init__(message, details)
        self.retry_after = retry_after


class UnsupportedMediaType(ProcessingError):
    code = "unsupported_media_type"
    status = 415
