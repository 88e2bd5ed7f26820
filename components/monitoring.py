"""Monitoring: live time series over a selectable window, queue depth by priority and
the throughput of completed jobs.

The last 5 minutes come from the sampler's buffer; longer windows are read once from
the store (in an executor) when the window is chosen, then streamed at the
window's step.
"""
from __future__ import annotations

from typing import Any

import panel as pn
import param

from app.service import ProcessingService

from .charts import ThroughputChart, TimeSeriesChart, queue_lines
from .insights import Recommendations, TimingHistograms, WorkerCharts
from .live import WINDOWS, LiveFeed, LiveSource, job_throughput, metric_history
from .theme import CSS, SERIES_COLORS

THROUGHPUT_EVERY_S = 15.0


class MonitoringCharts(pn.viewable.Viewer):
    """Memory, CPU, active tasks, workers, tasks/s, queue depth and completed jobs."""

    service = param.ClassSelector(class_=ProcessingService, doc="The process's service.")
    feed = param.ClassSelector(class_=LiveFeed, doc="The session's live feed.")
    window = param.Selector(default="Last 5 min", objects=list(WINDOWS), doc="How far back the charts look.")

    def __init__(self, **params: Any):
        super().__init__(**params)
        self.live = LiveSource(self.feed, WINDOWS[self.window])
        chart = dict(live=self.live, height=230, ticks=3)  # two charts a row: clock labels must not touch at 1280 px
        self.charts = {
            "memory": TimeSeriesChart(lines=[("mem_used", "Used", SERIES_COLORS["memory"]),
                                             ("mem_total", "Limit", "#adb5bd")], fill=True, unit="GB", **chart),
            "cpu": TimeSeriesChart(lines=[("cpu", "CPU", SERIES_COLORS["cpu"])], fill=True, y_max=100, unit="%", **chart),
            "tasks": TimeSeriesChart(lines=[("tasks", "Active tasks", SERIES_COLORS["tasks"])], fill=True, **chart),
            "workers": TimeSeriesChart(lines=[("workers", "Workers", SERIES_COLORS["workers"])], **chart),
            "tps": TimeSeriesChart(lines=[("tps", "Tasks/s", SERIES_COLORS["tps"])], fill=True, unit="/s", **chart),
            "queue": TimeSeriesChart(lines=queue_lines(), stacked=True, **chart),
        }
        self.throughput = ThroughputChart(height=230)
        self.recommendations = Recommendations(service=self.service, feed=self.feed)
        self.workers = WorkerCharts(service=self.service, feed=self.feed)
        self.histograms = TimingHistograms(service=self.service, feed=self.feed)
        self._window = pn.widgets.RadioButtonGroup.from_param(self.param.window, button_type="primary",
                                                              button_style="outline", css_classes=["window-picker"])
        self._note = pn.pane.HTML("", stylesheets=[CSS])
        self._since_throughput = 0.0
        self.feed.subscribe(self._on_sample)
        pn.state.onload(self._refresh_throughput)

    @param.depends("window", watch=True)
    async def _window_changed(self) -> None:
        seconds = WINDOWS[self.window]
        self._note.object = "<span class='pc-muted'>Loading history…</span>"
        samples = await metric_history(self.service, seconds)
        self.live.load(samples, seconds)
        with pn.io.unlocked():
            for chart in self.charts.values():
                chart.set_window(seconds)
        self._note.object = f"<span class='pc-muted' data-testid='window-points'>{len(samples)} points</span>"
        await self._refresh_throughput()

    async def _refresh_throughput(self) -> None:
        self.throughput.update(await job_throughput(self.service, WINDOWS[self.window]))

    def _on_sample(self, snap: dict[str, Any]) -> None:
        self._since_throughput += 1
        if self._since_throughput * self.service.settings.live_interval >= THROUGHPUT_EVERY_S:
            self._since_throughput = 0
            pn.state.execute(self._refresh_throughput)

    def __panel__(self) -> pn.viewable.Viewable:
        titles = {"memory": "Memory (GB)", "cpu": "CPU (%)", "tasks": "Active tasks", "workers": "Workers",
                  "tps": "Tasks per second", "queue": "Queued jobs by priority"}
        cards = [pn.Card(chart, title=titles[key], sizing_mode="stretch_width", collapsible=False, margin=6,
                         css_classes=[f"chart-{key}"]) for key, chart in self.charts.items()]
        cards.append(pn.Card(self.throughput, title="Jobs ended: completed, failed, cancelled (per bucket)",
                             sizing_mode="stretch_width", collapsible=False, margin=6, css_classes=["chart-throughput"]))
        card = dict(sizing_mode="stretch_width", collapsible=False, margin=6)
        return pn.Column(
            pn.Card(self.recommendations, title="Recommendations", css_classes=["monitoring-recommendations"], **card),
            pn.Row(self._window, self._note), pn.GridBox(*cards, ncols=2, sizing_mode="stretch_width"),
            pn.Card(self.workers, title="Memory (GB) and CPU (%) per worker", css_classes=["chart-per-worker"], **card),
            self.histograms,
            sizing_mode="stretch_width")
