"""A browser page watched for what a page must never do: open a dialog, or talk to any host but the server."""
from __future__ import annotations

from typing import Any
from urllib.parse import urlparse


class PageGuard:
    """Records dialogs (and dismisses them) and aborts every request that leaves the server's origin."""

    def __init__(self, page: Any, server_url: str):
        self.page = page
        self.origin = urlparse(server_url).netloc
        self.dialogs: list[str] = []
        self.foreign: list[str] = []
        page.on("dialog", self._on_dialog)
        page.route("**/*", self._on_route)

    def _on_dialog(self, dialog: Any) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def _on_route(self, route: Any) -> None:
        url = urlparse(route.request.url)
        if url.scheme in ("data", "blob", "about") or url.netloc == self.origin:
            route.continue_()
            return
        self.foreign.append(route.request.url)
        route.abort()

    def clear(self) -> None:
        self.dialogs.clear()
        self.foreign.clear()


def injected_images(page: Any) -> int:
    """``<img src=x>`` elements anywhere in the page, shadow roots included (Playwright's CSS pierces them)."""
    return page.locator("img[src='x']").count()
