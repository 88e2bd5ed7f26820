"""The job table (one page at a time from ``jobs.list``) with search, dataset and date filters
(the detail view is in :mod:`components.job_detail`).

The table re-reads its page whenever a job it shows as pending or running is no
longer so in the engine's memory, a new job is queued or started, or the shared
counts of jobs per status change (a job that came and went between two samples);
between those, running rows are patched from memory every sample.
"""
from __future__ import annotations

import datetime
from typing import Any

import pandas as pd
import panel as pn
import param

from app.errors import InvalidRequest, ProcessingError
from app.models import PRIORITIES
from app.service import ProcessingService

from .live import LiveFeed, job_status_counts, memory_status, running_jobs
from .theme import CSS, STATUS_COLORS, TextAlert, fmt_duration

STATUSES = ("pending", "running", "completed", "failed", "cancelled")
TABLE_TITLES = {"job_id": "Job", "operation": "Operation", "dataset_id": "Dataset", "priority": "Priority",
                "status": "Status", "progress": "Progress", "note": "ETA / waiting for", "attempts": "Tries",
                "created": "Submitted", "cancel": ""}
SORTS = {"Newest first": ("created", True), "Oldest first": ("created", False),
         "Priority: highest first": ("priority", True), "Priority: lowest first": ("priority", False),
         "Status": ("status", False)}
CANCEL_HTML = "<span style='color:#c92a2a;font-weight:600;cursor:pointer'>✕ Cancel</span>"


def job_frame(jobs: list[dict[str, Any]]) -> pd.DataFrame:
    rows = [{
        "job_id": j["job_id"], "operation": j["operation"], "dataset_id": j["dataset_id"],
        "priority": j["priority"],
        "status": f"<b style='color:{STATUS_COLORS.get(j['status'], '#868e96')}'>{j['status']}</b>",
        "progress": round(float(j.get("progress") or 0.0), 1),
        "note": _note(j),
        "attempts": j.get("attempt_count") or 0,
        "created": (j.get("created_at") or "")[11:19],
        "cancel": CANCEL_HTML if j["status"] in ("pending", "running") else "",
    } for j in jobs]
    return pd.DataFrame(rows, columns=list(TABLE_TITLES))


def _note(job: dict[str, Any]) -> str:
    if job["status"] == "running":
        return f"ETA {fmt_duration(job.get('eta_seconds'))}"
    if job["status"] == "pending":
        return job.get("pending_reason") or "queued"
    return ""


class JobTable(pn.viewable.Viewer):
    """Jobs newest first, filtered by status and priority, one page from the service at a time."""

    service = param.ClassSelector(class_=ProcessingService, doc="The process's service.")
    feed = param.ClassSelector(class_=LiveFeed, doc="The session's live feed.")
    page_size = param.Integer(default=10, bounds=(1, 200), doc="Jobs per page.")
    selected = param.String(default=None, allow_None=True, doc="The job whose row was clicked last.")

    def __init__(self, **params: Any):
        super().__init__(**params)
        self._status = pn.widgets.MultiChoice(name="Status", options=list(STATUSES), value=[], width=300)
        self._priority = pn.widgets.MultiChoice(name="Priority", options=list(reversed(PRIORITIES)), value=[], width=300)
        # the order is the server's, across every page: a header click would sort only the rows shown
        self._sort = pn.widgets.Select(name="Sort", options=list(SORTS), value="Newest first", width=210,
                                       css_classes=["jobs-sort"])
        self._search = pn.widgets.TextInput(name="Search", placeholder="id, dataset, operation, parameters, error",
                                            width=300, css_classes=["jobs-search"])
        # the datasets to filter by are read on the store's read pool once the page is up
        self._dataset = pn.widgets.Select(name="Dataset", options={"All datasets": None}, value=None, width=210)
        self._after = pn.widgets.DatePicker(name="Submitted from", value=None, width=150)
        self._before = pn.widgets.DatePicker(name="to", value=None, width=150)
        self._prev = pn.widgets.Button(label="‹ Newer", width=90, disabled=True)
        self._next = pn.widgets.Button(label="Older ›", width=90, disabled=True)
        self._info = pn.pane.HTML("", stylesheets=[CSS])
        self._message = TextAlert("", alert_type="danger", visible=False, sizing_mode="stretch_width")
        self._table = pn.widgets.Tabulator(
            job_frame([]), show_index=False, disabled=True, selectable=1, titles=TABLE_TITLES,
            layout="fit_columns", sizing_mode="stretch_width", css_classes=["job-table"],
            configuration={"columnDefaults": {"headerSort": False}},
            formatters={"progress": {"type": "progress", "max": 100, "legend": True, "color": "#339af0"},
                        "status": {"type": "html"}, "cancel": {"type": "html"}},
            widths={"job_id": 145, "operation": 125, "priority": 100, "status": 100, "progress": 105, "attempts": 75,
                    "created": 110, "cancel": 85})
        self._offset = 0
        self._total = 0
        self._memo: dict[str, float] = {}
        self._shown: list[tuple[str, str]] = []  # (job_id, status) of the rows on screen
        self._rows: list[tuple[Any, ...]] | None = None  # (job_id, status, attempts) last sent to the browser
        self._live_ids: set[str] = set()  # queued or running in memory at the last read
        self._counts: dict[str, int] | None = None
        self._reads = 0  # refreshes started: an answer older than the newest one is dropped
        self._status.param.watch(self._filter_changed, "value")
        self._priority.param.watch(self._filter_changed, "value")
        self._sort.param.watch(self._filter_changed, "value")
        for widget in (self._search, self._dataset, self._after, self._before):
            widget.param.watch(self._filter_changed, "value")
        self._prev.on_click(lambda _e: self._page(-1))
        self._next.on_click(lambda _e: self._page(1))
        self._table.on_click(self._on_click)
        # the page and the datasets to filter by are read on the store's read pool once the page is up
        self.reload()
        pn.state.execute(self._load_datasets)
        self.feed.subscribe(self._on_sample)

    def reload(self) -> None:
        """Read the current page again, soon (``refresh`` on the session's loop)."""
        pn.state.execute(self.refresh)

    async def refresh(self) -> None:
        """Read the current page from the service, on the store's read pool."""
        sort, descending = SORTS[self._sort.value]
        self._reads = read = self._reads + 1
        live_ids = self.service.jobs.live_ids()  # before the read: a job started meanwhile shows as new
        try:
            filters = self._filters()
            offset, page = await self.service.reading(
                self._read_page, list(self._status.value), list(self._priority.value), self._offset,
                sort, descending, filters)
        except ProcessingError as exc:  # a search too long, a date range that ends before it starts
            if read == self._reads:
                self._message.object, self._message.visible = exc.message, True
            return
        if read != self._reads:  # a newer refresh (another filter, page or sample) answers instead
            return
        self._offset = offset
        self._message.visible = False
        self._total = page["total"]
        self._live_ids = live_ids
        rows = [(j["job_id"], j["status"], j.get("attempt_count")) for j in page["jobs"]]
        if rows != self._rows:  # an unchanged page is not re-sent: a re-render swallows a click landing in it
            self._rows = rows
            self._shown = [(job_id, status) for job_id, status, _ in rows]
            self._table.value = job_frame(page["jobs"])
        shown = len(page["jobs"])
        self._info.object = (f"<div class='pc-pager' data-testid='jobs-pager'>{self._offset + 1}–{self._offset + shown} "
                             f"of {self._total} jobs</div>" if shown else "<div class='pc-pager'>No jobs match.</div>")
        self._prev.disabled = self._offset == 0
        self._next.disabled = self._offset + shown >= self._total

    def _read_page(self, status: list[str], priority: list[str], offset: int, sort: str, descending: bool,
                   filters: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """The page at ``offset``, or the last one when it is past the end (a blocking read)."""
        page = self.service.jobs.list_sorted(status, priority, self.page_size, offset, sort, descending, **filters)
        if not page["jobs"] and offset:
            offset = max(0, offset - self.page_size)
            page = self.service.jobs.list_sorted(status, priority, self.page_size, offset, sort, descending, **filters)
        return offset, page

    def _filters(self) -> dict[str, Any]:
        """Search, dataset and the submission-date range, as ``jobs.list`` takes them."""
        after, before = self._after.value, self._before.value
        if after and before and before < after:
            raise InvalidRequest("the date range ends before it starts: choose a 'to' date on or after 'from'")
        return {"q": self._search.value.strip() or None, "dataset_id": self._dataset.value,
                "created_after": f"{after.isoformat()}T00:00:00Z" if after else None,
                "created_before": f"{(before + datetime.timedelta(days=1)).isoformat()}T00:00:00Z" if before else None}

    async def _load_datasets(self) -> None:
        _, rows = await self.service.reading(self.service.datasets.list, 500, 0)
        self._dataset.options = {"All datasets": None, **{r["dataset_id"]: r["dataset_id"] for r in rows}}

    def _filter_changed(self, _: Any) -> None:
        self._offset = 0
        self.reload()

    def _page(self, step: int) -> None:
        self._offset = max(0, self._offset + step * self.page_size)
        self.reload()

    def _stale(self) -> bool:
        """Whether memory says a shown row changed, or a job was queued or started since the last read."""
        for job_id, status in self._shown:
            if status in ("pending", "running") and memory_status(self.service, job_id) != status:
                return True  # started, ended or requeued (re-read until the store says so too)
        return bool(self.service.jobs.live_ids() - self._live_ids)

    async def _check_counts(self) -> None:
        counts = await job_status_counts(self.service)
        if self._counts is not None and counts != self._counts:
            self._counts = counts
            await self.refresh()
        self._counts = counts

    def _on_sample(self, _snap: dict[str, Any]) -> None:
        pn.state.execute(self._check_counts)
        if self._stale():
            self.reload()
            return
        live = {r["job_id"]: r for r in running_jobs(self.service, self._memo)}
        if not live:
            return
        patch: dict[str, list[tuple[int, Any]]] = {"progress": [], "note": []}
        for i, job_id in enumerate(self._table.value["job_id"]):
            if job_id in live:
                patch["progress"].append((i, round(live[job_id]["progress"], 1)))
                patch["note"].append((i, f"ETA {fmt_duration(live[job_id]['eta_seconds'])}"))
        if patch["progress"]:
            self._table.patch(patch, as_index=False)

    async def _on_click(self, event: Any) -> None:
        row = self._table.value.iloc[event.row]
        if event.column == "cancel" and row["cancel"]:
            try:
                await self.service.jobs.cancel(row["job_id"])
                self._message.visible = False
            except ProcessingError as exc:
                self._message.object, self._message.visible = exc.message, True
            await self.refresh()
        self.selected = row["job_id"]

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(
            pn.Row(self._status, self._priority, self._sort),
            pn.Row(self._search, self._dataset, self._after, self._before),
            self._message, self._table,
            pn.Row(self._prev, self._next, self._info), sizing_mode="stretch_width")
