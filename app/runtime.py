"""The process's one service object, set by the server before serving pages.

Panel app functions run once per browser session; they reach the shared service
here instead of creating their own.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .service import ProcessingService

_service: "ProcessingService | None" = None


def set_service(service: "ProcessingService | None") -> None:
    global _service
    _service = service


def get_service() -> "ProcessingService":
    if _service is None:
        raise RuntimeError("the processing service has not been started")
    return _service
