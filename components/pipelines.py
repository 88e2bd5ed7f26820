"""/pipelines: recent pipelines, and one pipeline's steps drawn as a graph whose nodes take
their job's state live (pending, running, completed, failed, cancelled)."""
from __future__ import annotations

from typing import Any

import panel as pn
import param
from bokeh.models import ColumnDataSource, HoverTool, Range1d
from bokeh.plotting import figure

from app.errors import ProcessingError
from app.service import ProcessingService

from .live import TERMINAL, LiveFeed
from .theme import CSS, STATUS_COLORS, TextAlert, badge, esc, style_figure

UNKNOWN_COLOR = "#868e96"


def levels(steps: list[dict[str, Any]]) -> dict[str, int]:
    """Each step's column: one more than the deepest step it needs (its inputs and depends_on)."""
    needs = {s["name"]: set(s.get("depends_on") or []) |
             ({s["dataset_id"][len("@step:"):]} if str(s.get("dataset_id", "")).startswith("@step:") else set())
             for s in steps}
    depth: dict[str, int] = {}

    def level(name: str, seen: frozenset[str] = frozenset()) -> int:
        if name not in depth:
            parents = [p for p in needs.get(name, ()) if p in needs and p not in seen]
            depth[name] = 1 + max((level(p, seen | {name}) for p in parents), default=-1)
        return depth[name]

    for s in steps:
        level(s["name"])
    return depth


def graph_data(pipeline: dict[str, Any]) -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
    """(nodes, edges) for the figure: positions by level, colours by status."""
    steps = pipeline["steps"]
    depth = levels(steps)
    rows: dict[int, int] = {}
    where: dict[str, tuple[float, float]] = {}
    for s in steps:
        column = depth[s["name"]]
        where[s["name"]] = (float(column), -float(rows.get(column, 0)))
        rows[column] = rows.get(column, 0) + 1
    nodes: dict[str, list[Any]] = {"x": [], "y": [], "name": [], "status": [], "job_id": [], "operation": [],
                                   "progress": [], "color": []}
    for s in steps:
        x, y = where[s["name"]]
        nodes["x"].append(x)
        nodes["y"].append(y)
        nodes["name"].append(s["name"])
        nodes["status"].append(s["status"])
        nodes["job_id"].append(s["job_id"])
        nodes["operation"].append(s["operation"])
        nodes["progress"].append(round(float(s.get("progress") or 0.0), 1))
        nodes["color"].append(STATUS_COLORS.get(s["status"], UNKNOWN_COLOR))
    edges: dict[str, list[Any]] = {"x0": [], "y0": [], "x1": [], "y1": []}
    for s in steps:
        parents = set(s.get("depends_on") or [])
        if str(s.get("dataset_id", "")).startswith("@step:"):
            parents.add(s["dataset_id"][len("@step:"):])
        for p in sorted(parents & set(where)):
            edges["x0"].append(where[p][0])
            edges["y0"].append(where[p][1])
            edges["x1"].append(where[s["name"]][0])
            edges["y1"].append(where[s["name"]][1])
    return nodes, edges


class PipelineView(pn.viewable.Viewer):
    """A pipeline picker, its status, and its steps as a graph (updated every sample while unfinished)."""

    service = param.ClassSelector(class_=ProcessingService, doc="The process's service.")
    feed = param.ClassSelector(class_=LiveFeed, doc="The session's live feed.")
    pipeline_id = param.String(default=None, allow_None=True, doc="The pipeline shown.")

    def __init__(self, **params: Any):
        super().__init__(**params)
        # the recent pipelines are read on the store's read pool once the page is up; until then
        # the picker holds the one the address names
        shown = {self.pipeline_id: self.pipeline_id} if self.pipeline_id else {}
        self._picker = pn.widgets.Select(name="Pipeline", options={"Choose a pipeline": None, **shown}, width=420)
        if self.pipeline_id:
            self._picker.value = self.pipeline_id
        self._header = pn.pane.HTML("", stylesheets=[CSS], sizing_mode="stretch_width")
        self._message = TextAlert("", alert_type="danger", visible=False, sizing_mode="stretch_width")
        self.nodes = ColumnDataSource({k: [] for k in ("x", "y", "name", "status", "job_id", "operation",
                                                       "progress", "color")})
        self.edges = ColumnDataSource({"x0": [], "y0": [], "x1": [], "y1": []})
        self.figure = self._figure()
        self._finished = True
        self._picker.param.watch(lambda e: self._show(e.new), "value")
        self.feed.subscribe(self._on_sample)
        self._show(self._picker.value)
        pn.state.execute(self._load_options)

    async def _load_options(self) -> None:
        rows = await self.service.reading(self.service.pipelines.recent, 200)
        options = {f"{r['name'] or r['pipeline_id']} ({r['pipeline_id']})": r["pipeline_id"] for r in rows}
        chosen = self._picker.value
        if chosen and chosen not in options.values():  # older than the recent ones: kept by its id
            options[chosen] = chosen
        self._picker.options = {"Choose a pipeline": None, **options}

    def _figure(self) -> Any:
        fig = figure(height=240, sizing_mode="stretch_width", tools="", toolbar_location=None,
                     x_range=Range1d(-0.5, 3.5), y_range=Range1d(-1.5, 0.5))
        fig.segment("x0", "y0", "x1", "y1", source=self.edges, line_width=2, color="#adb5bd")
        dots = fig.scatter("x", "y", source=self.nodes, size=34, color="color", line_color="#343a40")
        fig.text("x", "y", text="name", source=self.nodes, y_offset=-26, text_align="center", text_font_size="12px")
        fig.add_tools(HoverTool(renderers=[dots], tooltips=[("step", "@name"), ("job", "@job_id"),
                                                            ("operation", "@operation"), ("status", "@status"),
                                                            ("progress", "@progress %")]))
        fig.axis.visible = False
        fig.grid.visible = False
        return style_figure(fig)

    def _show(self, pipeline_id: str | None) -> None:
        self.pipeline_id = pipeline_id
        if pn.state.location is not None and pipeline_id:
            pn.state.location.update_query(id=pipeline_id)
        pn.state.onload(self.refresh)  # the graph's raw Bokeh data may change unlocked only once the page is up

    async def refresh(self) -> None:
        if not self.pipeline_id:
            self._header.object = "<div class='pc-muted'>Submit one with POST /api/processing/pipelines.</div>"
            return
        try:
            pipeline = await self.service.reading(self.service.pipelines.status, self.pipeline_id)
        except ProcessingError as exc:
            self._message.object, self._message.visible = exc.message, True
            return
        self._message.visible = False
        self._finished = pipeline["status"] in TERMINAL
        steps = pipeline["steps"]
        self._header.object = (
            f"<div class='pc-title'><span data-testid='pipeline-name'>{esc(pipeline['name'] or pipeline['pipeline_id'])}"
            f"</span><code>{esc(pipeline['pipeline_id'])}</code>{badge(pipeline['status'], testid='pipeline-status')}</div>"
            + "<ul class='pc-steps'>" + "".join(
                f"<li data-testid='pipeline-step'>{esc(s['name'])}: <a href='./jobs?job={esc(s['job_id'])}'>"
                f"{esc(s['job_id'])}</a> {badge(s['status'])}"
                + (f" <span class='pc-muted'>{esc(s['pending_reason'])}</span>" if s.get("pending_reason") else "")
                + "</li>" for s in steps) + "</ul>")
        nodes, edges = graph_data(pipeline)
        with pn.io.unlocked():
            self.nodes.data, self.edges.data = nodes, edges
            width = max(nodes["x"], default=0) + 0.5
            depth = min(nodes["y"], default=0) - 0.5
            self.figure.x_range.start, self.figure.x_range.end = -0.5, max(3.5, width)
            self.figure.y_range.start, self.figure.y_range.end = min(-1.5, depth), 0.5

    def _on_sample(self, _snap: dict[str, Any]) -> None:
        if self.pipeline_id and not self._finished:
            pn.state.execute(self.refresh)

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(self._picker, self._message, self._header, pn.pane.Bokeh(self.figure, sizing_mode="stretch_width"),
                         sizing_mode="stretch_width")
