"""The job page's actions and log: download the result (CSV, Parquet), re-run, clone into
the form, and the job's log, followed live while the job is not finished."""
from __future__ import annotations

import json
import logging
from typing import Any

import panel as pn
import param

from app.errors import ProcessingError
from app.service import ProcessingService

from .live import TERMINAL
from .theme import CSS, TextAlert, esc

log = logging.getLogger(__name__)
FOLLOW_MS = 1000  # how often the log of an unfinished job is read again
LOG_LINES = 500  # lines read per poll (the API's page)
LEVEL_CLASS = {"info": "pc-log-info", "warning": "pc-log-warning", "error": "pc-log-error"}
LOG_CSS = """
.pc-log { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12px; max-height: 320px;
          overflow-y: auto; border: 1px solid var(--pc-border, #ccc); border-radius: 4px; padding: 6px 8px; }
.pc-log-line { white-space: pre-wrap; margin: 1px 0; }
.pc-log-time { opacity: 0.7; margin-right: 6px; }
.pc-log-warning { color: #b35c00; }
.pc-log-error { color: #c92a2a; }
.pc-log details pre { margin: 2px 0 6px 16px; white-space: pre-wrap; }
.pc-actions a { margin-right: 12px; }
"""


def render_log(lines: list[dict[str, Any]]) -> str:
    """The log as HTML: every message and traceback escaped (they carry user data)."""
    if not lines:
        return "<div class='pc-log' data-testid='job-log'><span class='pc-muted'>No log lines yet.</span></div>"
    out = []
    for line in lines:
        traceback = (line.get("details") or {}).get("traceback")
        extra = (f"<details><summary>traceback</summary><pre>{esc(traceback)}</pre></details>" if traceback else "")
        out.append(f"<div class='pc-log-line {LEVEL_CLASS.get(line.get('level'), '')}' data-testid='job-log-line'>"
                   f"<span class='pc-log-time'>{esc(line.get('timestamp', ''))}</span>{esc(line.get('message', ''))}"
                   f"{extra}</div>")
    return f"<div class='pc-log' data-testid='job-log'>{''.join(out)}</div>"


def render_actions(job: dict[str, Any]) -> str:
    """Download links for a completed job, and the clone link for any job."""
    job_id = esc(job["job_id"])
    links = []
    if job["status"] == "completed":
        for fmt, label in (("csv", "Download CSV"), ("parquet", "Download Parquet")):
            links.append(f"<a href='./api/processing/jobs/{job_id}/result.{fmt}' download "
                         f"data-testid='download-{fmt}'>{label}</a>")
    links.append(f"<a href='./jobs?clone={job_id}' data-testid='clone-job'>Clone into the form</a>")
    return f"<div class='pc-actions'>{''.join(links)}</div>"


class JobExtras(pn.viewable.Viewer):
    """Downloads, re-run, clone, and the live log of the job ``show`` was given."""

    service = param.ClassSelector(class_=ProcessingService, doc="The process's service.")

    def __init__(self, **params: Any):
        super().__init__(**params)
        self._job: dict[str, Any] = {}
        self._lines: list[dict[str, Any]] = []
        self._since = 0
        self._actions = pn.pane.HTML("", stylesheets=[CSS, LOG_CSS], sizing_mode="stretch_width")
        self._rerun = pn.widgets.Button(label="Re-run", css_classes=["rerun-job"], width=110, visible=False)
        self._message = TextAlert("", alert_type="light", visible=False, sizing_mode="stretch_width")
        self._log = pn.pane.HTML(render_log([]), stylesheets=[CSS, LOG_CSS], sizing_mode="stretch_width")
        self._card = pn.Card(self._log, title="Log", collapsed=False, sizing_mode="stretch_width",
                             css_classes=["job-log-card"], visible=False)
        self._follow: Any = None
        self._rerun.on_click(self._on_rerun)

    def show(self, job: dict[str, Any] | None) -> None:
        """The job now shown (None: nothing); its log is read again from the start on a new job."""
        if not job:
            self._job, self._lines, self._since = {}, [], 0
            self._actions.object, self._rerun.visible, self._card.visible = "", False, False
            self._stop_following()
            return
        fresh = job["job_id"] != self._job.get("job_id")
        self._job = job
        if fresh:
            self._lines, self._since = [], 0
            self._log.object = render_log([])
            self._message.visible = False
        self._actions.object = render_actions(job)
        self._rerun.visible = self._card.visible = True
        pn.state.execute(self._read_log)
        # followed until the log of a finished job has been read once too: a read that came
        # to nothing (seen once in CI: a finished job's page stayed without its lines) is redone
        self._start_following()

    def _start_following(self) -> None:
        if self._follow is None and pn.state.curdoc is not None:
            self._follow = pn.state.add_periodic_callback(self._read_log, period=FOLLOW_MS)

    def _stop_following(self) -> None:
        if self._follow is not None:
            self._follow.stop()
            self._follow = None

    async def _read_log(self) -> None:
        job_id = self._job.get("job_id")
        if not job_id:
            return
        since = self._since
        try:
            answer = await self.service.reading(self.service.jobs.logs, job_id, since, LOG_LINES)
        except ProcessingError as exc:
            self._log.object = f"<div class='pc-fail'>{esc(exc.message)}</div>"
            return
        if job_id != self._job.get("job_id") or since != self._since:
            return  # another job was chosen meanwhile, or another read took these lines already
        if answer["lines"]:
            self._lines = (self._lines + answer["lines"])[-2000:]
            self._since = answer["next_since"]
            self._log.object = render_log(self._lines)
        if self._job.get("status") in TERMINAL and not answer["more"]:
            self._stop_following()

    async def _on_rerun(self, _: Any) -> None:
        job_id = self._job.get("job_id")
        if not job_id:
            return
        try:
            again = await self.service.jobs.rerun(job_id)
        except ProcessingError as exc:
            self._say(f"Not re-run: {exc.message}", "danger")
            return
        link = f"./jobs?job={esc(again['job_id'])}"
        self._message.alert_type = "success"
        self._message.object = f"Re-run submitted as {again['job_id']}."
        self._message.visible = True
        self._actions.object = render_actions(self._job) + (
            f"<div class='pc-help'>Re-run: <a href='{link}' data-testid='rerun-link'>{esc(again['job_id'])}</a></div>")

    def _say(self, text: str, kind: str) -> None:
        self._message.alert_type, self._message.object, self._message.visible = kind, text, True

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(pn.Row(self._rerun, self._actions, sizing_mode="stretch_width"), self._message, self._card,
                         sizing_mode="stretch_width")


def clone_values(job: dict[str, Any]) -> dict[str, Any]:
    """What the submit form is filled with to clone ``job``."""
    return {"operation": job["operation"], "dataset_id": job["dataset_id"],
            "parameters": json.loads(json.dumps(job.get("parameters") or {})), "priority": job["priority"],
            "max_cores": job["max_cores"], "max_memory_gb": job["max_memory_gb"]}
