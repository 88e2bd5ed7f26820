"""Shared look: stylesheets, colours, number formats and small HTML pieces.

Panel renders every pane in its own shadow DOM, so page CSS does not reach into
panes: each HTML pane gets ``stylesheets=[CSS]`` (or ``WALL_CSS``) itself.
"""
from __future__ import annotations

import html
import math
import re
from pathlib import Path
from typing import Any

import panel as pn
from bokeh.models import Div, InlineStyleSheet, ScientificFormatter
from panel.theme.fast import Fast

STATIC = Path(__file__).resolve().parent.parent / "static"
CSS = (STATIC / "app.css").read_text()
WALL_CSS = (STATIC / "wall.css").read_text()

ACCENT = "#1c7ed6"
STATUS_COLORS = {
    "running": "#2f9e44", "starting": "#f08c00", "stopping": "#f08c00", "stopped": "#868e96", "error": "#c92a2a",
    "pending": "#f08c00", "completed": "#2f9e44", "failed": "#c92a2a", "cancelled": "#868e96",
}
PRIORITY_COLORS = {"CRITICAL": "#e03131", "HIGH": "#f76707", "NORMAL": "#1c7ed6", "LOW": "#868e96"}
SERIES_COLORS = {"memory": "#7048e8", "cpu": "#1c7ed6", "tasks": "#f76707", "workers": "#2f9e44", "tps": "#0ca678"}


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def esc_titles(columns: Any, titles: dict[str, str] | None = None) -> dict[str, str]:
    """Tabulator header titles, escaped: Tabulator puts a title into the page as HTML."""
    titles = titles or {}
    return {str(c): esc(titles.get(str(c), c)) for c in columns}


def esc_options(options: dict[str, Any]) -> dict[str, Any]:
    """Escaped labels for a MultiChoice: its picker (Choices.js) shows labels as HTML."""
    return {esc(label): value for label, value in options.items()}


class TextAlert(pn.pane.Alert):
    """An alert whose message is plain text: never read as Markdown or HTML.

    Messages carry user data (column names, file names, error texts that quote values).
    """

    def _transform_object(self, obj: Any) -> dict[str, Any]:
        text = "" if obj is None else str(obj)
        body = f"<p style='white-space:pre-wrap;margin:0'>{html.escape(text)}</p>"
        return dict(object=html.escape(body))  # Panel's markup model takes escaped HTML


SYSTEM_FONT = 'system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif'


def drop_font_cdn() -> None:
    """Remove the Fast design's Google Fonts stylesheet: pages use system fonts and fetch nothing from a third party.

    Panel resolves a design's bundled files by its class name, so a subclass cannot
    serve them; the class's resource table is changed instead (once per process).
    """
    Fast._resources = {**Fast._resources, "font": {}}


def fmt_duration(seconds: float | None) -> str:
    """``None`` → "—"; 75 → "1 min 15 s"; 4000 → "1 h 7 min"."""
    if seconds is None or not math.isfinite(seconds):
        return "—"
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


def fmt_bytes(n: float | None) -> str:
    """Decimal units, as the API writes memory: 1.5e9 → "1.50 GB"."""
    n = float(n or 0)
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n:.0f} B"


def fmt_number(value: Any) -> str:
    """A result number for people: 4 significant decimals, thousands separated."""
    if isinstance(value, bool) or value is None:
        return "—" if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != 0 and (abs(value) >= 1e9 or abs(value) < 1e-3):
            return f"{value:.4e}"
        return f"{value:,.4f}".rstrip("0").rstrip(".")
    return str(value)


def number_formatters(frame: Any) -> dict[str, Any]:
    """Tabulator formatters by dtype: floats in 4 decimals, scientific below 1e-3 or from 1e9 (p-values stay readable)."""
    return {str(c): ScientificFormatter(precision=4, power_limit_low=-3, power_limit_high=9, nan_format="—",
                                        null_format="—")
            for c in frame.select_dtypes("float").columns}


def progress_bar(percent: float | None, testid: str = "", label: str | None = None, big: bool = False) -> str:
    """A progress bar whose value is readable by people (the label) and tests (``data-value``)."""
    pct = max(0.0, min(100.0, float(percent or 0.0)))
    text = label if label is not None else f"{pct:.0f}%"
    tid = f" data-testid='{esc(testid)}'" if testid else ""
    cls = "pc-bar pc-bar-big" if big else "pc-bar"
    return (f"<div class='{cls}'{tid} data-value='{pct:.2f}' role='progressbar' aria-valuenow='{pct:.0f}' "
            f"aria-valuemin='0' aria-valuemax='100'><div class='pc-bar-fill' style='width:{pct:.2f}%'></div>"
            f"<span class='pc-bar-text'>{esc(text)}</span></div>")


def error_html(message: str | None, kind: str | None = None) -> str:
    """One clean line for an error, its remaining lines (tracebacks, Dask's tables) folded under "Details"."""
    text = (message or "").strip()
    if kind and not text.startswith(kind):
        text = f"{kind}: {text}"
    stage = re.search(r"\s*\(during [a-z_ ]+\)$", text)
    suffix = stage.group(0).strip() if stage else ""
    if stage:
        text = text[:stage.start()]
    summary, _, rest = text.partition("\n")
    summary = " ".join(part for part in (summary.strip(), suffix) if part)
    details = (f"<details><summary>Details</summary><pre class='pc-pre'>{esc(rest.strip())}</pre></details>"
               if rest.strip() else "")
    return f"<div class='pc-error-summary'>{esc(summary)}</div>{details}"


def badge(text: str, color: str | None = None, testid: str = "") -> str:
    color = color or STATUS_COLORS.get(text, "#868e96")
    tid = f" data-testid='{esc(testid)}'" if testid else ""
    return f"<span class='pc-badge' style='background:{color}'{tid}>{esc(text)}</span>"


def style_figure(fig: Any, dark: bool = False, font_size: str = "11pt") -> Any:
    """Quiet axes and grids, readable ticks; dark for the wall.

    The ranges are made unsyncable: auto-ranging moves them in the browser on every
    streamed point, and by default each move is sent back to the server as a
    document patch (one per chart per second per session).
    """
    fig.x_range.syncable = False
    fig.y_range.syncable = False
    fg, grid, bg = ("#ced4da", "#2b3440", "#111820") if dark else ("#495057", "#e9ecef", "#ffffff")
    fig.background_fill_color = bg
    fig.border_fill_color = bg
    fig.outline_line_color = None
    fig.min_border_left = 40  # room for the first time label
    fig.min_border_right = 36  # room for the last tick label
    for axis in (*fig.xaxis, *fig.yaxis):
        axis.major_label_text_color = fg
        axis.major_label_text_font_size = font_size
        axis.axis_line_color = grid
        axis.major_tick_line_color = grid
        axis.minor_tick_line_color = None
        axis.axis_label_text_color = fg
    fig.xgrid.grid_line_color = None
    fig.ygrid.grid_line_color = grid
    if fig.title is not None:
        fig.title.text_color = fg
        fig.title.text_font_size = font_size
    if fig.legend:
        for legend in fig.legend:
            legend.background_fill_alpha = 0.0
            legend.border_line_color = None
            legend.label_text_color = fg
            legend.label_text_font_size = font_size
    return fig


class LiveHTML(pn.viewable.Viewer):
    """HTML re-sent every few seconds: a Bokeh ``Div`` whose text is set directly.

    A Panel HTML pane recomputes all of its properties on every change (about 1 ms
    each); setting the Div's text costs a few hundredths of that, which matters when
    every open session updates several of them each second. The text is only sent
    when it changed.
    """

    def __init__(self, text: str = "", css: str = CSS, sizing_mode: str = "stretch_width",
                 styles: dict[str, str] | None = None, **params: Any):
        super().__init__(**params)
        self._div = Div(text=text, stylesheets=[InlineStyleSheet(css=css)], sizing_mode=sizing_mode,
                        styles=styles or {}, disable_math=True)
        self._pane = pn.pane.Bokeh(self._div, sizing_mode=sizing_mode)

    @property
    def text(self) -> str:
        return self._div.text

    @text.setter
    def text(self, value: str) -> None:
        if value != self._div.text:
            self._div.text = value

    def __panel__(self) -> pn.viewable.Viewable:
        return self._pane
