"""The health banner: what ``/api/processing/health`` lists as reasons (a start-up step
that failed, lost workers, a stalled sampler…), shown at the top of every analyst page."""
from __future__ import annotations

import time
from typing import Any

import panel as pn
import param

from app.service import ProcessingService

from .live import LiveFeed
from .theme import CSS, LiveHTML, esc

HEALTH_EVERY_S = 5.0  # health() checks the store (itself throttled); no need to ask every tick


def render_banner(reasons: list[str]) -> str:
    """The reasons as an alert, or nothing when there are none."""
    if not reasons:
        return ""
    items = "".join(f"<li data-testid='health-reason'>{esc(r)}</li>" for r in reasons)
    return (f"<div class='pc-banner' role='alert' data-testid='health-banner'><b>The service is degraded.</b>"
            f"<ul>{items}</ul></div>")


class HealthBanner(pn.viewable.Viewer):
    """Health reasons, re-read every few seconds; hidden while the service is healthy."""

    service = param.ClassSelector(class_=ProcessingService, doc="The process's service.")
    feed = param.ClassSelector(class_=LiveFeed, default=None, allow_None=True,
                               doc="The session's live feed; without one the banner polls on its own.")

    def __init__(self, **params: Any):
        super().__init__(**params)
        self._html = LiveHTML(css=CSS)
        self._box = pn.Column(self._html, sizing_mode="stretch_width", margin=(8, 8, 0, 8), visible=False)
        self._read_at = 0.0
        self.refresh()
        if self.feed is not None:
            self.feed.subscribe(self._on_sample)
        elif pn.state.curdoc is not None:
            pn.state.add_periodic_callback(self.refresh, period=int(HEALTH_EVERY_S * 1000))

    def _on_sample(self, _snap: dict[str, Any]) -> None:
        if time.time() - self._read_at >= HEALTH_EVERY_S:
            self.refresh()

    def refresh(self) -> None:
        """Ask the service for its health (memory and a throttled store check)."""
        self._read_at = time.time()
        text = render_banner(list(self.service.health().get("reasons") or []))
        self._html.text = text
        self._box.visible = bool(text)

    def __panel__(self) -> pn.viewable.Viewable:
        return self._box
