"""The job detail view: status, progress over time, ETA, attempts, resources, the result,
and (from :mod:`components.job_extras`) downloads, re-run, clone and the live log."""
from __future__ import annotations

import json
import time
from typing import Any

import panel as pn
import param
from bokeh.models import ColumnDataSource, HoverTool, Range1d
from bokeh.plotting import figure

from app.errors import ProcessingError
from app.service import ProcessingService
from app.times import epoch as _epoch

from .charts import time_format
from .job_extras import JobExtras
from .live import TERMINAL, LiveFeed, running_job
from .results import result_view
from .theme import (CSS, PRIORITY_COLORS, TextAlert, badge, esc, fmt_bytes, fmt_duration,
                    error_html, progress_bar, style_figure)

class JobDetail(pn.viewable.Viewer):
    """One job: status, progress over time, ETA, attempts, resources and its result."""

    service = param.ClassSelector(class_=ProcessingService, doc="The process's service.")
    feed = param.ClassSelector(class_=LiveFeed, doc="The session's live feed.")
    job_id = param.String(default=None, allow_None=True, doc="The job shown.")

    def __init__(self, **params: Any):
        super().__init__(**params)
        self._header = pn.pane.HTML("", stylesheets=[CSS], sizing_mode="stretch_width")
        self._progress = pn.pane.HTML("", stylesheets=[CSS], sizing_mode="stretch_width")
        self._info = pn.pane.HTML("", stylesheets=[CSS], sizing_mode="stretch_width")
        self._cancel = pn.widgets.Button(label="Cancel job", color="danger", visible=False, css_classes=["cancel-job"])
        self._message = TextAlert("", alert_type="danger", visible=False, sizing_mode="stretch_width")
        self._source = ColumnDataSource({"t": [], "progress": []})
        self._chart = pn.Column(pn.pane.Bokeh(self._progress_figure(), sizing_mode="stretch_width"),
                                sizing_mode="stretch_width", visible=False, css_classes=["job-progress-chart"])
        self._result = pn.Column(sizing_mode="stretch_width")
        self._extras = JobExtras(service=self.service)  # downloads, re-run, clone, the live log
        self._status: str | None = None
        self._job: dict[str, Any] = {}
        self._shown_id: str | None = None
        self._memo: dict[str, float] = {}
        self._was_live = False
        self._loaded_at = 0.0
        self._reads = 0  # loads started: an answer older than the newest one is dropped
        self._cancel.on_click(self._on_cancel)
        self.param.watch(lambda _e: self.reload(), "job_id")
        self.feed.subscribe(self._on_sample)
        self.reload()  # the job is read on the store's read pool once the page is up

    def _progress_figure(self) -> Any:
        fig = figure(x_axis_type="datetime", height=170, sizing_mode="stretch_width", tools="", toolbar_location=None,
                     y_range=Range1d(0, 105), title="Progress over time")
        fig.line("t", "progress", source=self._source, line_width=2, color="#1c7ed6")
        fig.scatter("t", "progress", source=self._source, size=5, color="#1c7ed6")
        fig.xaxis.formatter = time_format()
        fig.xaxis.ticker.desired_num_ticks = 3
        for ticker in fig.xaxis.ticker.tickers:
            ticker.desired_num_ticks = 3
        fig.yaxis.ticker.desired_num_ticks = 3
        fig.add_tools(HoverTool(formatters={"@t": "datetime"}, tooltips=[("time", "@t{%H:%M:%S}"), ("progress", "@progress{0.0} %")]))
        return style_figure(fig)

    def show(self, job_id: str | None) -> None:
        """Show ``job_id`` (re-read it even when it is already shown)."""
        if job_id == self.job_id:
            self.reload()
        else:
            self.job_id = job_id

    def reload(self) -> None:
        """Read the job again, soon (``load`` on the session's loop, once the page is up: the chart's
        raw Bokeh data may only change unlocked after that)."""
        self._loaded_at = time.time()
        pn.state.onload(self.load)

    async def load(self) -> None:
        """Read the job once from the service (on the store's read pool) and draw everything."""
        self._loaded_at = time.time()
        self._message.visible = False
        self._reads = read = self._reads + 1
        job_id = self.job_id
        if not job_id:
            self._clear("<div class='pc-muted'>Select a job in the table, or submit one.</div>")
            return
        try:
            job = await self.service.reading(self.service.jobs.status, job_id)
        except ProcessingError as exc:
            if read == self._reads:
                self._clear(f"<div class='pc-fail'>{esc(exc.message)}</div>")
            return
        if read != self._reads:  # another job was chosen, or a newer read answers instead
            return
        previous, self._job, self._status = self._status, job, job["status"]
        self._header.object = render_header(job)
        self._cancel.visible = job["status"] in ("pending", "running")
        self._draw_progress(job, None)
        self._info.object = render_info(job, None)
        self._chart.visible = worth_a_chart(job)
        fresh, self._shown_id = self._shown_id != job["job_id"], job["job_id"]
        with pn.io.unlocked():  # raw Bokeh data, possibly changed after an await (no document lock)
            if fresh or not len(self._source.data["t"]):
                self._source.data = progress_points(job)
            elif job["status"] in TERMINAL and previous not in TERMINAL:
                self._source.stream(progress_points(job, last_only=True))  # the end of what was watched live
        self._result.objects = self._result_objects(job)
        self._extras.show(job)

    def _clear(self, text: str) -> None:
        self._job, self._status, self._shown_id = {}, None, None
        self._header.object, self._progress.object, self._info.object = text, "", ""
        self._cancel.visible = self._chart.visible = False
        self._result.objects = []
        self._extras.show(None)

    def _result_objects(self, job: dict[str, Any]) -> list[Any]:
        if job["status"] == "completed":
            return [pn.pane.HTML("<h3 style='margin:8px 0 4px'>Result</h3>", stylesheets=[CSS]),
                    result_view(job.get("result_kind"), job.get("result"), job)]
        if job["status"] == "failed" and job.get("error"):
            error = job["error"]
            return [pn.pane.HTML(f"<div class='pc-fail' data-testid='job-error'>"
                                 f"{error_html(error.get('message'), error.get('type'))}</div>",
                                 stylesheets=[CSS], sizing_mode="stretch_width")]
        return []

    def _draw_progress(self, job: dict[str, Any], live: dict[str, Any] | None) -> None:
        status = job["status"]
        progress = live["progress"] if live else (100.0 if status == "completed" else float(job.get("progress") or 0.0))
        if status == "running":
            eta = live["eta_seconds"] if live else job.get("eta_seconds")
            note = f"ETA {fmt_duration(eta)}" + (f" · about {time.strftime('%H:%M:%S', time.gmtime(time.time() + eta))} UTC"
                                                  if eta is not None else "")
        elif status == "pending":
            wait = next((w for w in self.service.jobs.queue_view() if w["job_id"] == job["job_id"]), None)
            reason = wait["reason"] if wait else job.get("pending_reason") or "waiting for the next dispatch pass"
            position = f"#{wait['position']} in the queue · " if wait and wait["position"] is not None else ""
            note = f"<div class='pc-reason' data-testid='job-pending-reason'>{position}{esc(reason)}</div>"
        else:
            start, end = _epoch(job.get("started_at")), _epoch(job.get("completed_at"))
            note = f"{status} after {fmt_duration(end - start)} of work" if start and end else status
        self._progress.object = (progress_bar(progress, testid="job-progress", big=True)
                                 + f"<div class='pc-muted' style='margin-top:6px' data-testid='job-eta'>{note}</div>")

    def _on_sample(self, snap: dict[str, Any]) -> None:
        if not self.job_id or self._status is None or self._status in TERMINAL:
            return
        live = running_job(self.service, self.job_id, self._memo)
        pending = self.service.jobs.phase(self.job_id) == "pending"
        if live and self._status == "running":
            self._was_live = True
            self._chart.visible = live["elapsed_s"] >= CHART_AFTER_S
            self._draw_progress(self._job, live)
            self._info.object = render_info(self._job, live)
            self._source.stream({"t": [snap["ts"] * 1000.0], "progress": [live["progress"]]}, rollover=3600)
        elif pending and self._status == "pending":
            self._was_live = True
            self._draw_progress(self._job, None)
        elif self._was_live or live or pending or time.time() - self._loaded_at >= 5:
            self._was_live = False  # it started, ended or was requeued: read it again once
            self.reload()

    async def _on_cancel(self, _: Any) -> None:
        self._cancel.loading = True
        try:
            await self.service.jobs.cancel(self.job_id)
        except ProcessingError as exc:
            self._message.object, self._message.visible = exc.message, True
        finally:
            self._cancel.loading = False
        await self.load()

    def __panel__(self) -> pn.viewable.Viewable:
        # the result (or the error) first: it is what the analyst came for
        return pn.Column(self._header, self._progress, pn.Row(self._cancel), self._message, self._result, self._chart,
                         self._extras, self._info, sizing_mode="stretch_width")


CHART_AFTER_S = 2.0  # a job shorter than this has no progress worth a chart (its axis would read "000ms")


def worth_a_chart(job: dict[str, Any]) -> bool:
    """Whether the job ran (or has been running) long enough for a progress-over-time chart."""
    start = _epoch(job.get("started_at"))
    if job["status"] == "pending" or start is None:
        return False
    end = _epoch(job.get("completed_at")) or time.time()
    return end - start >= CHART_AFTER_S


def render_header(job: dict[str, Any]) -> str:
    return (f"<div class='pc-title'><span data-testid='job-title'>{esc(job['operation'])}</span>"
            f"<code data-testid='job-id'>{esc(job['job_id'])}</code>"
            f"{badge(job['status'], testid='job-status')}{badge(job['priority'], PRIORITY_COLORS.get(job['priority']))}</div>")


def render_info(job: dict[str, Any], live: dict[str, Any] | None) -> str:
    res = job.get("resources") or {}
    done = live["tasks_done"] if live else job.get("tasks_done")
    total = live["tasks_total"] if live else job.get("tasks_total")
    peak = live["peak_held_bytes"] if live else res.get("peak_memory_bytes")
    cpu = live["cpu_s"] if live else res.get("task_cpu_seconds")
    rows = [
        ("Dataset", f"<a href='./data?dataset={esc(job['dataset_id'])}'>{esc(job['dataset_id'])}</a>"),
        ("Reserved", f"{job.get('max_cores') or 0:g} cores · {job.get('max_memory_gb') or 0:g} GB"),
        ("Submitted", esc(_time(job.get("created_at")))), ("Started", esc(_time(job.get("started_at")))),
        ("Finished", esc(_time(job.get("completed_at")))),
        *([("Tasks", f"{done or 0} of {total} done")] if total else []),  # unknown counts are left out, not "— of —"
        ("Peak result memory", fmt_bytes(peak) if peak is not None else "—"),
        ("Task CPU time", f"{cpu:.2f} s" if cpu is not None else "—"),
        ("Parameters", f"<code>{esc(json.dumps(job.get('parameters') or {}))}</code>"),
    ]
    kv = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    attempts = job.get("attempts") or []
    table = "".join(
        f"<tr><td>{a['number']}</td><td>{esc(_time(a.get('started_at')))}</td><td>{esc(_time(a.get('ended_at')))}</td>"
        f"<td>{esc(a.get('outcome') or 'running')}</td><td>{error_html(a.get('cause')) if a.get('cause') else ''}</td></tr>"
        for a in attempts)
    attempts_html = (f"<table class='pc-table' data-testid='job-attempts'><tr><th>Attempt</th><th>Started</th><th>Ended</th>"
                     f"<th>Outcome</th><th>Cause</th></tr>{table}</table>" if attempts else
                     "<div class='pc-muted'>No attempt yet.</div>")
    return (f"<div class='pc-grid'><table class='pc-kv'>{kv}</table><div><b>Attempts ({len(attempts)})</b>"
            f"{attempts_html}</div></div>")


def _time(text: str | None) -> str:
    return (text or "—")[:19].replace("T", " ")


def progress_points(job: dict[str, Any], last_only: bool = False) -> dict[str, list[float]]:
    """What the store remembers of a job's progress: start, the ETA marks, the end."""
    points: list[tuple[float, float]] = []
    start = _epoch(job.get("started_at"))
    if start:
        points.append((start, 0.0))
    for mark, info in sorted((job.get("eta_history") or {}).items()):
        if mark.isdigit() and isinstance(info, dict) and info.get("at"):
            points.append((_epoch(info["at"]) or 0.0, float(mark)))
    end = _epoch(job.get("completed_at"))
    if end and job["status"] == "completed":
        points.append((end, 100.0))
    elif end:
        points.append((end, float(job.get("progress") or 0.0)))
    points.sort()
    if last_only:
        points = points[-1:]
    return {"t": [t * 1000.0 for t, _ in points], "progress": [p for _, p in points]}
