"""Monitoring beyond the time series: the service's recommendations, memory and CPU per
worker, and histograms of queue wait and run time (until now only on ``/metrics``)."""
from __future__ import annotations

import time
from typing import Any

import panel as pn
import param
from bokeh.models import ColumnDataSource, DataRange1d, FactorRange, HoverTool, Range1d
from bokeh.plotting import figure

from app import recommendations
from app.service import ProcessingService

from .live import LiveFeed
from .theme import CSS, SERIES_COLORS, esc, style_figure

EVERY_S = 15.0  # recommendations and histograms change slowly: one read per session this often

# loaded_only: a session's first samples can arrive before it has loaded, and a read started then
# resumes (after its await) outside the document lock, where pn.io.unlocked does nothing: Bokeh
# raises in its patch hook after the model changed, so the browser never got the change. That left
# the queue-wait histogram's x range without factors (a blank figure, no axes) while its data, set
# again by the onload read, arrived. The onload read is the first; samples refresh only after it.


class Recommendations(pn.viewable.Viewer):
    """What the service recommends now (scale up or down, raise a job's memory), with the reason."""

    service = param.ClassSelector(class_=ProcessingService, doc="The process's service.")
    feed = param.ClassSelector(class_=LiveFeed, doc="The session's live feed.")

    def __init__(self, **params: Any):
        super().__init__(**params)
        self._html = pn.pane.HTML("<div class='pc-muted'>Reading recommendations…</div>", stylesheets=[CSS],
                                  sizing_mode="stretch_width")
        self._read_at = 0.0
        self.feed.subscribe(self._on_sample)
        pn.state.onload(self.refresh)

    def _on_sample(self, _snap: dict[str, Any]) -> None:
        if pn.state.loaded and time.time() - self._read_at >= EVERY_S:  # before: see loaded_only
            pn.state.execute(self.refresh)

    async def refresh(self) -> None:
        self._read_at = time.time()
        body = await self.service.reading(recommendations.from_service, self.service)
        self._html.object = render_recommendations(body["recommendations"])

    def __panel__(self) -> pn.viewable.Viewable:
        return self._html


def render_recommendations(recs: list[dict[str, Any]]) -> str:
    if not recs:
        return "<div class='pc-muted' data-testid='recommendations'>Nothing to recommend: the cluster fits its work.</div>"
    items = "".join(
        f"<li><b>{esc(r['action'].replace('_', ' '))}</b>"
        f"{esc(_suggested(r.get('suggested') or {}))}: {esc(r['reason'])}</li>" for r in recs)
    return f"<ul class='pc-recs' data-testid='recommendations'>{items}</ul>"


def _suggested(suggested: dict[str, Any]) -> str:
    return " (" + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in suggested.items()) + ")" if suggested else ""


class WorkerCharts(pn.viewable.Viewer):
    """Memory (GB, of its limit) and CPU (%) of each worker, from the sampler's last reading."""

    service = param.ClassSelector(class_=ProcessingService, doc="The process's service.")
    feed = param.ClassSelector(class_=LiveFeed, doc="The session's live feed.")
    height = param.Integer(default=230, doc="Pixel height of each chart.")

    def __init__(self, **params: Any):
        super().__init__(**params)
        self.source = ColumnDataSource({"worker": [], "mem_gb": [], "limit_gb": [], "cpu": []})
        self.memory = self._figure("mem_gb", SERIES_COLORS["memory"], "GB", limit="limit_gb")
        self.cpu = self._figure("cpu", SERIES_COLORS["cpu"], "%", top=100)
        self.refresh()
        self.feed.subscribe(lambda _snap: self.refresh())

    def _figure(self, column: str, color: str, unit: str, limit: str | None = None, top: float | None = None) -> Any:
        fig = figure(x_range=FactorRange(), height=self.height, sizing_mode="stretch_width", tools="",
                     toolbar_location=None, y_range=Range1d(0, top) if top else DataRange1d(start=0))
        if limit:
            fig.vbar(x="worker", top=limit, width=0.7, source=self.source, color="#adb5bd", alpha=0.35)
        fig.vbar(x="worker", top=column, width=0.7, source=self.source, color=color, alpha=0.9)
        fig.add_tools(HoverTool(tooltips=[("worker", "@worker"), (unit, f"@{column}{{0.0}}")]))
        return style_figure(fig)

    def refresh(self) -> None:
        workers = sorted(self.service.workers(), key=lambda w: str(w["name"]))
        data = {"worker": [str(w["name"]) for w in workers],
                "mem_gb": [w["memory_bytes"] / 1e9 for w in workers],
                "limit_gb": [(w.get("memory_limit_bytes") or 0) / 1e9 for w in workers],
                "cpu": [float(w["cpu_percent"]) for w in workers]}
        if data["worker"] != list(self.memory.x_range.factors):
            self.memory.x_range.factors = self.cpu.x_range.factors = data["worker"]
        self.source.data = data

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Row(pn.pane.Bokeh(self.memory, sizing_mode="stretch_width"),
                      pn.pane.Bokeh(self.cpu, sizing_mode="stretch_width"), sizing_mode="stretch_width")


def short_duration(seconds: float) -> str:
    """1 → "1s", 300 → "5m", 14400 → "4h"."""
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def bucket_labels(upper_s: list[float]) -> list[str]:
    """"≤ 1s", "≤ 5s", …, "> 4h" for histogram buckets."""
    labels = [f"≤ {short_duration(b)}" for b in upper_s[:-1]]
    return [*labels, f"> {short_duration(upper_s[-2])}"]


class TimingHistograms(pn.viewable.Viewer):
    """How long completed jobs waited in the queue and ran (the /metrics histograms)."""

    service = param.ClassSelector(class_=ProcessingService, doc="The process's service.")
    feed = param.ClassSelector(class_=LiveFeed, doc="The session's live feed.")
    height = param.Integer(default=230, doc="Pixel height of each chart.")

    def __init__(self, **params: Any):
        super().__init__(**params)
        self.sources = {key: ColumnDataSource({"bucket": [], "count": []}) for key in ("wait", "run")}
        self.figures = {key: self._figure(key, color) for key, color in
                        (("wait", SERIES_COLORS["tasks"]), ("run", SERIES_COLORS["tps"]))}
        self._read_at = 0.0
        self.feed.subscribe(self._on_sample)
        pn.state.onload(self.refresh)

    def _figure(self, key: str, color: str) -> Any:
        fig = figure(x_range=FactorRange(), height=self.height, sizing_mode="stretch_width", tools="",
                     toolbar_location=None, y_range=DataRange1d(start=0))
        fig.vbar(x="bucket", top="count", width=0.8, source=self.sources[key], color=color, alpha=0.85)
        fig.xaxis.major_label_orientation = 0.6
        fig.add_tools(HoverTool(tooltips=[("took", "@bucket"), ("jobs", "@count")]))
        return style_figure(fig)

    def _on_sample(self, _snap: dict[str, Any]) -> None:
        if pn.state.loaded and time.time() - self._read_at >= EVERY_S:  # before: see loaded_only
            pn.state.execute(self.refresh)

    async def refresh(self) -> None:
        self._read_at = time.time()
        hist = await self.service.reading(self.service.jobs.timing_histograms)
        with pn.io.unlocked():  # after an await, outside the document lock
            for key, data in hist.items():
                labels = bucket_labels(data["upper_s"])
                if list(self.figures[key].x_range.factors) != labels:
                    self.figures[key].x_range.factors = labels
                self.sources[key].data = {"bucket": labels, "count": data["count"]}

    def __panel__(self) -> pn.viewable.Viewable:
        titles = {"wait": "Queue wait of completed jobs (24 h)", "run": "Run time of completed jobs (24 h)"}
        return pn.GridBox(*(pn.Card(pn.pane.Bokeh(self.figures[key], sizing_mode="stretch_width"), title=title,
                                    collapsible=False, margin=6, sizing_mode="stretch_width",
                                    css_classes=[f"chart-hist-{key}"]) for key, title in titles.items()),
                          ncols=2, sizing_mode="stretch_width")
