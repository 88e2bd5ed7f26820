"""Live charts: Bokeh figures over a session's one ``LiveSource``.

A tick streams one row into the shared ColumnDataSource (with rollover), so the
plots are never rebuilt; the x range follows the newest point over the window.
"""
from __future__ import annotations

from typing import Any

import panel as pn
import param
from bokeh.models import ColumnDataSource, DataRange1d, DatetimeTickFormatter, HoverTool, Range1d
from bokeh.plotting import figure

from app.models import PRIORITIES

from .live import LiveSource
from .theme import PRIORITY_COLORS, style_figure

def time_format() -> DatetimeTickFormatter:
    """Clock-time ticks (a new model per figure: a Bokeh model belongs to one document)."""
    return DatetimeTickFormatter(seconds="%H:%M:%S", minsec="%H:%M:%S", minutes="%H:%M", hourmin="%H:%M",
                                 hours="%H:%M", days="%d %b", context=None)


def clock_ticks(fig: Any, ticks: int = 5) -> None:
    """About ``ticks`` clock-time ticks on the x axis, from Bokeh's sub-second, second-to-minute
    and hour tickers only: the charts span at most a day (``live.WINDOWS``), and the day, month
    and year tickers a datetime axis also carries were 9 of a chart's ~45 models, each of them
    serialised on the event loop whenever a page is opened."""
    ticker = fig.xaxis.ticker
    ticker.tickers = ticker.tickers[:3]
    ticker.desired_num_ticks = ticks
    for each in ticker.tickers:  # a datetime axis picks among several tickers
        each.desired_num_ticks = ticks


def time_figure(live: LiveSource, height: int | None, dark: bool, y_max: float | None = None,
                font_size: str = "11pt", title: str | None = None, ticks: int = 5) -> Any:
    """An empty time-series figure whose x range shows the last ``live.window_s``."""
    x_range = DataRange1d(follow="end", follow_interval=live.window_s * 1000, range_padding=0)
    y_range = Range1d(0, y_max) if y_max else DataRange1d(start=0, range_padding=0.1, only_visible=True)
    sizing = {"height": height, "sizing_mode": "stretch_width"} if height else {"sizing_mode": "stretch_both"}
    fig = figure(x_axis_type="datetime", x_range=x_range, y_range=y_range, tools="", toolbar_location=None,
                 title=title, **sizing)
    fig.xaxis.formatter = time_format()
    clock_ticks(fig, ticks)
    fig.yaxis.ticker.desired_num_ticks = 4
    return style_figure(fig, dark=dark, font_size=font_size)


class TimeSeriesChart(pn.viewable.Viewer):
    """Lines (or a stacked area) of some columns of the session's live metrics."""

    live = param.ClassSelector(class_=LiveSource, doc="The session's live metrics source.")
    lines = param.List(default=[], doc="(column, label, colour) for each line.")
    title = param.String(default="", doc="Chart title (empty: none).")
    stacked = param.Boolean(default=False, doc="Stack the columns as areas instead of lines.")
    total = param.String(default="queued", doc="Column drawn as a line over the stacked areas (their sum).")
    fill = param.Boolean(default=False, doc="Shade the area under the first line.")
    y_max = param.Number(default=None, allow_None=True, doc="Fixed top of the y axis (e.g. 100 for percent).")
    unit = param.String(default="", doc="Unit shown in the hover.")
    height = param.Integer(default=220, allow_None=True, doc="Pixel height; None stretches to the container.")
    dark = param.Boolean(default=False, doc="Wall colours.")
    font_size = param.String(default="11pt", doc="Tick and legend font size.")
    ticks = param.Integer(default=5, bounds=(2, 12), doc="About how many time ticks.")

    def __init__(self, **params: Any):
        super().__init__(**params)
        fig = time_figure(self.live, self.height, self.dark, self.y_max, self.font_size, self.title or None, self.ticks)
        source = self.live.source
        if self.stacked:
            fig.varea_stack([c for c, _, _ in self.lines], x="t", source=source, color=[c for _, _, c in self.lines],
                            legend_label=[label for _, label, _ in self.lines], alpha=0.85)
            fig.line("t", self.total, source=source, color="#495057", line_width=1.5)  # visible at zero too
        else:
            for i, (column, label, color) in enumerate(self.lines):
                if i == 0 and self.fill:
                    fig.varea(x="t", y1=0, y2=column, source=source, color=color, alpha=0.18)
                dash = "dashed" if i > 0 and self.fill else "solid"
                legend = {"legend_label": label} if len(self.lines) > 1 and not self.dark else {}
                fig.line("t", column, source=source, color=color, line_width=3 if self.dark else 2,
                         line_dash=dash, **legend)
        if fig.legend:  # beside the title, never over the data
            legend = fig.legend[0]
            legend.orientation, legend.margin, legend.padding = "horizontal", 0, 2
            fig.add_layout(legend, "above")
        fmt = "{0,0.0}" if self.unit in ("%", "GB", "/s") else "{0,0}"
        fig.add_tools(HoverTool(mode="vline", formatters={"@t": "datetime"}, tooltips=[
            ("time", "@t{%H:%M:%S}"), *[(label, f"@{column}{fmt} {self.unit}".rstrip()) for column, label, _ in self.lines]]))
        style_figure(fig, dark=self.dark, font_size=self.font_size)
        self.figure = fig
        self._pane = pn.pane.Bokeh(fig, sizing_mode="stretch_width" if self.height else "stretch_both")

    def set_window(self, window_s: float) -> None:
        """Show the last ``window_s`` seconds."""
        self.figure.x_range.follow_interval = window_s * 1000

    def __panel__(self) -> pn.viewable.Viewable:
        return self._pane


def queue_lines() -> list[tuple[str, str, str]]:
    """Queued jobs by priority, highest first, for a stacked chart."""
    return [(f"q_{p}", p.title(), PRIORITY_COLORS[p]) for p in reversed(PRIORITIES)]


OUTCOME_COLORS = {"completed": "#2f9e44", "failed": "#e03131", "cancelled": "#868e96"}


class ThroughputChart(pn.viewable.Viewer):
    """Jobs that completed, failed or were cancelled per time bucket (stacked bars); data replaced by ``update``."""

    height = param.Integer(default=220, doc="Pixel height.")

    def __init__(self, **params: Any):
        super().__init__(**params)
        outcomes = list(OUTCOME_COLORS)
        self.source = ColumnDataSource({"t": [], "width": [], "count": [], **{k: [] for k in outcomes}})
        fig = figure(x_axis_type="datetime", height=self.height, sizing_mode="stretch_width", tools="",
                     toolbar_location=None, y_range=DataRange1d(start=0, range_padding=0.1))
        fig.vbar_stack(outcomes, x="t", width="width", source=self.source, color=list(OUTCOME_COLORS.values()),
                       alpha=0.85, legend_label=outcomes)
        legend = fig.legend[0]
        legend.orientation, legend.margin, legend.padding = "horizontal", 0, 2
        fig.add_layout(legend, "above")
        fig.xaxis.formatter = time_format()
        clock_ticks(fig)
        fig.yaxis.ticker.desired_num_ticks = 4
        fig.add_tools(HoverTool(formatters={"@t": "datetime"}, tooltips=[
            ("around", "@t{%H:%M}"), *[(k, f"@{k}") for k in outcomes]]))
        self.figure = style_figure(fig)
        self._pane = pn.pane.Bokeh(fig, sizing_mode="stretch_width")

    def update(self, data: dict[str, list[Any]]) -> None:
        with pn.io.unlocked():  # called after an await, outside the document lock
            self.source.data = data

    def __panel__(self) -> pn.viewable.Viewable:
        return self._pane
