"""Cluster components: live status cards and the start/stop/scale controls."""
from __future__ import annotations

import html
from typing import Any

import panel as pn
import param

from app.errors import ProcessingError
from app.service import ProcessingService

from .theme import CSS

STATUS_COLORS = {"running": "#2f9e44", "starting": "#f08c00", "stopping": "#f08c00", "stopped": "#868e96", "error": "#c92a2a"}


class ClusterCards(pn.viewable.Viewer):
    """Status, workers, cores, memory and active tasks, refreshed from the shared sampler."""

    service = param.ClassSelector(class_=ProcessingService, doc="The process's service.")
    period_ms = param.Integer(default=1000, bounds=(200, None), doc="Refresh period of this session.")

    def __init__(self, **params: Any):
        super().__init__(**params)
        self._cards = pn.pane.HTML(sizing_mode="stretch_width", stylesheets=[CSS])
        self._memory_bar = pn.indicators.Progress(value=0, max=100, sizing_mode="stretch_width", bar_color="info")
        self.refresh()
        pn.state.add_periodic_callback(self.refresh, period=self.period_ms)

    def refresh(self) -> None:
        """Copy the sampler's latest reading into the page (no Dask query)."""
        s = self.service.cluster_status()
        self._cards.object = render_cards(s)
        self._memory_bar.value = int(min(100, s["memory_usage_percent"]))

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(self._cards, self._memory_bar, sizing_mode="stretch_width")


def _card(label: str, value: Any, testid: str) -> str:
    return (f"<div class='pc-card'><div class='pc-label'>{label}</div>"
            f"<div class='pc-value' data-testid='{testid}'>{value}</div></div>")


def render_cards(s: dict[str, Any]) -> str:
    """Status line and figure cards as HTML (one pane: cheap to update, easy to read)."""
    color = STATUS_COLORS.get(s["status"], "#868e96")
    error = f"<div class='pc-error'>{html.escape(s['error'])}</div>" if s.get("error") else ""
    url = s.get("dashboard_url")
    link = f"<a href='{html.escape(url)}' target='_blank'>Dask dashboard ↗</a>" if url else ""
    adaptive = s.get("adaptive")
    scaling = f" · adaptive {adaptive['minimum']}–{adaptive['maximum']}" if adaptive else ""
    cards = "".join([
        _card("Workers", s["n_workers"], "card-workers"),
        _card("Cores", s["total_cores"], "card-cores"),
        _card("Memory", f"{s['used_memory']} / {s['total_memory']}", "card-memory"),
        _card("Active tasks", s["active_tasks"], "card-tasks"),
    ])
    return (
        f"<div class='pc-status'>Cluster: <b style='color:{color}' data-testid='cluster-status'>{s['status']}</b>"
        f" <span class='pc-muted'>({s['mode']}{scaling})</span> {link}</div>{error}"
        f"<div class='pc-cards'>{cards}</div>"
        f"<div class='pc-muted'>Memory used {s['memory_usage_percent']:.1f}% · sampled {s['sampled_at']}</div>"
    )


class ClusterControls(pn.viewable.Viewer):
    """Start, stop and scale buttons with feedback while they work."""

    service = param.ClassSelector(class_=ProcessingService, doc="The process's service.")

    def __init__(self, **params: Any):
        super().__init__(**params)
        limit = self.service.settings.max_workers
        self._start = pn.widgets.Button(label="Start cluster", color="success", css_classes=["start-cluster"])
        self._stop = pn.widgets.Button(label="Stop cluster", color="danger", css_classes=["stop-cluster"])
        self._mode = pn.widgets.RadioButtonGroup(options=["Fixed", "Adaptive"], value="Fixed")
        self._n = pn.widgets.IntInput(name="Workers", value=self.service.settings.n_workers, start=0, end=limit, width=120)
        self._min = pn.widgets.IntInput(name="Minimum", value=1, start=0, end=limit, width=120, visible=False)
        self._max = pn.widgets.IntInput(name="Maximum", value=max(1, self.service.settings.n_workers), start=0, end=limit, width=120, visible=False)
        self._scale = pn.widgets.Button(label="Scale", color="primary", css_classes=["scale-cluster"])
        self._message = pn.pane.Alert("", alert_type="light", visible=False)
        self._start.on_click(self._on_start)
        self._stop.on_click(self._on_stop)
        self._scale.on_click(self._on_scale)
        self._mode.param.watch(self._on_mode, "value")

    def _on_mode(self, event: Any) -> None:
        adaptive = event.new == "Adaptive"
        self._n.visible = not adaptive
        self._min.visible = self._max.visible = adaptive

    def _say(self, text: str, kind: str = "success") -> None:
        self._message.object, self._message.alert_type, self._message.visible = text, kind, True

    async def _run(self, button: pn.widgets.Button, working: str, action: Any) -> None:
        label = button.label
        button.loading, button.disabled, button.label = True, True, working
        try:
            self._say(await action())
        except ProcessingError as exc:
            self._say(exc.message, "danger")
        finally:
            button.loading, button.disabled, button.label = False, False, label

    async def _on_start(self, _: Any) -> None:
        async def act() -> str:
            started, info = await self.service.start_cluster()
            return (f"Cluster started: {info['n_workers']} workers, {info['total_cores']} cores"
                    if started else "The cluster is already running")
        await self._run(self._start, "Starting…", act)

    async def _on_stop(self, _: Any) -> None:
        async def act() -> str:
            return "Cluster stopped" if await self.service.stop_cluster() else "The cluster is not running"
        await self._run(self._stop, "Stopping…", act)

    async def _on_scale(self, _: Any) -> None:
        async def act() -> str:
            if self._mode.value == "Fixed":
                await self.service.scale_cluster(n_workers=self._n.value)
                return f"Scaling to {self._n.value} workers"
            await self.service.scale_cluster(adaptive={"minimum": self._min.value, "maximum": self._max.value})
            return f"Adaptive scaling between {self._min.value} and {self._max.value} workers"
        await self._run(self._scale, "Scaling…", act)

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(
            pn.Row(self._start, self._stop),
            pn.pane.Markdown("**Scale**"), self._mode, pn.Row(self._n, self._min, self._max, self._scale),
            self._message, sizing_mode="stretch_width",
        )


