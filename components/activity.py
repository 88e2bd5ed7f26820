"""What the cluster is doing: running jobs with progress and ETA, the queue by priority.

Both read only memory (the job engine's running/pending maps and the sampler's last
reading) and re-render only when what they show has changed.
"""
from __future__ import annotations

from typing import Any

import panel as pn
import param

from app.service import ProcessingService

from .live import LiveFeed, queue_counts, queued_jobs, running_jobs
from .theme import CSS, PRIORITY_COLORS, LiveHTML, badge, esc, fmt_duration, progress_bar


class HTMLView(pn.viewable.Viewer):
    """Live HTML that is only re-sent when its text changes."""

    def __init__(self, **params: Any):
        super().__init__(**params)
        self._html = LiveHTML(css=CSS)

    def _show(self, text: str) -> None:
        self._html.text = text

    def __panel__(self) -> pn.viewable.Viewable:
        return self._html


class RunningJobs(HTMLView):
    """Running jobs (progress bar, ETA) and how many wait, refreshed every sample."""

    service = param.ClassSelector(class_=ProcessingService, doc="The process's service.")
    feed = param.ClassSelector(class_=LiveFeed, doc="The session's live feed.")
    limit = param.Integer(default=8, bounds=(1, None), doc="Most jobs listed.")

    def __init__(self, **params: Any):
        super().__init__(**params)
        self._memo: dict[str, float] = {}
        self.refresh()
        self.feed.subscribe(lambda _snap: self.refresh())

    def refresh(self) -> None:
        jobs = running_jobs(self.service, self._memo)
        self._memo = {j["job_id"]: self._memo[j["job_id"]] for j in jobs}
        waiting = queued_jobs(self.service)
        self._show(render_running(jobs, waiting, self.limit))


def render_running(jobs: list[dict[str, Any]], waiting: list[dict[str, Any]], limit: int) -> str:
    rows = []
    for j in jobs[:limit]:
        eta = "finishing" if j["progress"] >= 99 else f"ETA {fmt_duration(j['eta_seconds'])}"
        rows.append(
            f"<div class='pc-job' data-testid='running-job' data-job='{esc(j['job_id'])}'>"
            f"<div><div class='pc-job-name'><a href='./jobs?job={esc(j['job_id'])}'>{esc(j['operation'])}</a> "
            f"{badge(j['priority'], PRIORITY_COLORS.get(j['priority']))}</div>"
            f"<div class='pc-job-sub'>{esc(j['job_id'])} · {esc(j['dataset_id'])} · {fmt_duration(j['elapsed_s'])} so far</div></div>"
            f"{progress_bar(j['progress'], testid='running-job-progress')}"
            f"<div class='pc-job-eta' data-testid='running-job-eta'>{eta}</div></div>")
    if not rows:
        rows.append("<div class='pc-empty'>No job is running.</div>")
    more = len(jobs) - limit
    if more > 0:
        rows.append(f"<div class='pc-muted'>… and {more} more running</div>")
    if waiting:
        first = waiting[0]
        rows.append(f"<div class='pc-muted' data-testid='waiting-summary'>{len(waiting)} waiting · next: "
                    f"<a href='./jobs?job={esc(first['job_id'])}'>{esc(first['job_id'])}</a> ({esc(first['reason'])})</div>")
    return f"<div class='pc-jobs' data-testid='running-jobs'>{''.join(rows)}</div>"


class QueueSummary(HTMLView):
    """Queued jobs by priority and the running count against the limit."""

    service = param.ClassSelector(class_=ProcessingService, doc="The process's service.")
    feed = param.ClassSelector(class_=LiveFeed, doc="The session's live feed.")

    def __init__(self, **params: Any):
        super().__init__(**params)
        self.refresh(self.service.sampler.latest)
        self.feed.subscribe(self.refresh)

    def refresh(self, snap: dict[str, Any]) -> None:
        self._show(render_queue(snap, self.service.settings.max_concurrent_jobs))


def render_queue(snap: dict[str, Any], max_concurrent: int) -> str:
    tiles = "".join(
        f"<div class='pc-queue-tile' style='background:{PRIORITY_COLORS[p]}' data-testid='queue-{p.lower()}'>"
        f"<div class='pc-label'>{p.title()}</div><div class='pc-value'>{n}</div></div>"
        for p, n in queue_counts(snap).items())
    queue = snap.get("queue") or {}
    cores = snap.get("total_cores") or 0
    foot = (f"<b data-testid='queue-running'>{queue.get('running', 0)}</b> running of {max_concurrent} allowed · "
            f"<b data-testid='queue-total'>{queue.get('queued', 0)}</b> queued · "
            f"{queue.get('reserved_cores', 0):g} of {cores} cores and {queue.get('reserved_memory_gb', 0):g} GB reserved")
    return f"<div class='pc-queue'>{tiles}</div><div class='pc-queue-foot pc-muted'>{foot}</div>"
