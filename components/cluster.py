"""Cluster components: live status cards, the start/stop/scale controls, the
per-worker table and the history of cluster events."""
from __future__ import annotations

import html
from typing import Any

import pandas as pd
import panel as pn
import param

from app.errors import ProcessingError
from app.service import ProcessingService

from .live import LiveFeed
from .theme import CSS, STATUS_COLORS, LiveHTML, TextAlert, fmt_bytes, progress_bar


class ClusterCards(pn.viewable.Viewer):
    """Status, workers, cores, memory and active tasks, refreshed from the shared sampler."""

    service = param.ClassSelector(class_=ProcessingService, doc="The process's service.")
    feed = param.ClassSelector(class_=LiveFeed, default=None, doc="The session's live feed (one is made when absent).")

    def __init__(self, **params: Any):
        super().__init__(**params)
        if self.feed is None:
            self.feed = LiveFeed(service=self.service)
        self._cards = LiveHTML(css=CSS)
        self.refresh()
        self.feed.subscribe(lambda _snap: self.refresh())

    def refresh(self) -> None:
        """Copy the sampler's latest reading into the page (no Dask query)."""
        s = self.service.cluster_status()
        self._cards.text = render_cards(s)

    def __panel__(self) -> pn.viewable.Viewable:
        return self._cards


def _card(label: str, value: Any, testid: str) -> str:
    return (f"<div class='pc-card'><div class='pc-label'>{label}</div>"
            f"<div class='pc-value' data-testid='{testid}'>{value}</div></div>")


def render_cards(s: dict[str, Any]) -> str:
    """Status line and figure cards as HTML (one pane: cheap to update, easy to read)."""
    color = STATUS_COLORS.get(s["status"], "#868e96")
    error = f"<div class='pc-error'>{html.escape(s['error'])}</div>" if s.get("error") else ""
    url = s.get("dashboard_url")
    link = f"<a href='{html.escape(url)}' target='_blank' data-testid='dask-dashboard-link'>Dask dashboard ↗</a>" if url else ""
    adaptive = s.get("adaptive")
    scaling = f" · adaptive {adaptive['minimum']}–{adaptive['maximum']}" if adaptive else ""
    memory = f"{s['used_memory_bytes'] / 1e9:.2f} <small>/ {s['total_memory_bytes'] / 1e9:.2f} GB</small>"
    cards = "".join([
        _card("Workers", s["n_workers"], "card-workers"),
        _card("Cores", s["total_cores"], "card-cores"),
        _card("Memory", memory, "card-memory"),
        _card("CPU", f"{s['cpu_percent']:.0f}<small> %</small>", "card-cpu"),
        _card("Active tasks", s["active_tasks"], "card-tasks"),
    ])
    sampled = (s.get("sampled_at") or "")[11:19]
    memory_bar = progress_bar(s["memory_usage_percent"], testid="memory-bar",
                              label=f"memory {s['memory_usage_percent']:.0f}% used")
    return (
        f"<div class='pc-status'>Cluster: <b style='color:{color}' data-testid='cluster-status'>{s['status']}</b>"
        f" <span class='pc-muted'>({s['mode']}{scaling})</span> {link}</div>{error}"
        f"<div class='pc-cards'>{cards}</div>"
        f"{memory_bar}"
        f"<div class='pc-muted' style='margin-top:6px'>{s['tasks_per_second']:.1f} tasks/s · sampled {sampled} UTC</div>"
    )


class ClusterControls(pn.viewable.Viewer):
    """Start, stop and scale buttons with feedback while they work.

    Stop asks first, saying how many jobs run; the buttons and the scaling mode
    follow the cluster's state (Start only when stopped, Stop only when running).
    """

    service = param.ClassSelector(class_=ProcessingService, doc="The process's service.")
    feed = param.ClassSelector(class_=LiveFeed, default=None, allow_None=True,
                               doc="The session's live feed: when given, scaling reports workers as they arrive.")

    def __init__(self, **params: Any):
        super().__init__(**params)
        self._target: int | None = None
        self._starting: int | None = None  # workers expected after a start, until they are all up
        limit = self.service.settings.max_workers
        self._start = pn.widgets.Button(label="Start cluster", color="success", css_classes=["start-cluster"])
        self._stop = pn.widgets.Button(label="Stop cluster", color="danger", css_classes=["stop-cluster"])
        self._mode = pn.widgets.RadioButtonGroup(options=["Fixed", "Adaptive"], value="Fixed")
        # no widget bounds: a spinner silently clamps what was typed; the form checks and says why instead
        self._n = pn.widgets.IntInput(name=f"Workers (0–{limit})", value=self.service.settings.n_workers, width=130,
                                      css_classes=["scale-workers"])
        self._min = pn.widgets.IntInput(name="Minimum", value=1, width=120, visible=False, css_classes=["scale-min"])
        self._max = pn.widgets.IntInput(name=f"Maximum (≤ {limit})", value=max(1, self.service.settings.n_workers),
                                        width=130, visible=False, css_classes=["scale-max"])
        self._scale = pn.widgets.Button(label="Scale", color="primary", css_classes=["scale-cluster"], align="end")
        self._message = TextAlert("", alert_type="light", visible=False)
        self._confirm_text = pn.pane.HTML("", stylesheets=[CSS], sizing_mode="stretch_width")
        self._confirm_yes = pn.widgets.Button(label="Yes, stop the cluster", color="danger", css_classes=["confirm-stop"])
        self._confirm_no = pn.widgets.Button(label="Keep it running", css_classes=["cancel-stop"])
        self._confirm = pn.Column(self._confirm_text, pn.Row(self._confirm_yes, self._confirm_no), visible=False,
                                  sizing_mode="stretch_width", css_classes=["stop-confirm"])
        self._busy = False
        self._start.on_click(self._on_start)
        self._stop.on_click(self._ask_stop)
        self._confirm_yes.on_click(self._on_stop)
        self._confirm_no.on_click(self._keep_running)
        self._scale.on_click(self._on_scale)
        self._mode.param.watch(self._on_mode, "value")
        self._show_state(self.service.cluster_status())
        bounds = self.adaptive_bounds()
        if bounds is not None:  # after a reload the form shows what the cluster does
            self._min.value, self._max.value = bounds
            self._mode.value = "Adaptive"
        if self.feed is not None:
            self.feed.subscribe(self._on_sample)

    def adaptive_bounds(self) -> tuple[int, int] | None:
        """(minimum, maximum) when the cluster scales adaptively, else None."""
        adaptive = self.service.cluster_status().get("adaptive")
        return (int(adaptive["minimum"]), int(adaptive["maximum"])) if adaptive else None

    def _show_state(self, s: dict[str, Any]) -> None:
        """Enable what makes sense in this state (nothing while an action runs)."""
        if self._busy:
            return
        status = s.get("status")
        self._start.disabled = status in ("running", "starting", "stopping")
        self._stop.disabled = status in ("stopped", "stopping")

    def _confirm_html(self) -> str:
        running, waiting = len(self.service.jobs.running_view()), len(self.service.jobs.queue_view())
        jobs = (f"<b data-testid='stop-running-count'>{running}</b> job{'s' if running != 1 else ''} running"
                + (": they stop now and go back to the queue, to run again once the cluster is started."
                   if running else "."))
        queued = f" {waiting} queued job{'s' if waiting != 1 else ''} wait for workers." if waiting else ""
        return (f"<div class='pc-reason' data-testid='stop-confirm'>Stop the cluster? {jobs}{queued}</div>")

    def _ask_stop(self, _: Any) -> None:
        self._confirm_text.object = self._confirm_html()
        self._confirm.visible = True

    def _keep_running(self, _: Any) -> None:
        self._confirm.visible = False
        self._say("The cluster keeps running.", "light")

    def _on_sample(self, snap: dict[str, Any]) -> None:
        """Follow the cluster's state; while scaling to a fixed size, say how many workers are up."""
        self._show_state(self.service.cluster_status())
        if self._confirm.visible:
            self._confirm_text.object = self._confirm_html()  # the count stays current while the user decides
        if self._starting is not None and not self._busy:
            n = snap.get("n_workers", 0)
            if n >= self._starting:
                self._say(f"Cluster started: {n} workers, {snap.get('total_cores', 0)} cores")
                self._starting = None
            else:
                self._say(f"Cluster started: workers joining… {n} of {self._starting}", "info")
        if self._target is None:
            return
        n = snap.get("n_workers", 0)
        if n == self._target:
            self._say(f"Scaled: {n} workers running")
            self._target = None
        else:
            self._say(f"Scaling to {self._target} workers… {n} running now", "info")

    def _on_mode(self, event: Any) -> None:
        adaptive = event.new == "Adaptive"
        self._n.visible = not adaptive
        self._min.visible = self._max.visible = adaptive

    def _say(self, text: str, kind: str = "success") -> None:
        self._message.object, self._message.alert_type, self._message.visible = text, kind, True

    async def _run(self, button: pn.widgets.Button, working: str, action: Any) -> None:
        label = button.label
        self._busy = True
        button.loading, button.disabled, button.label = True, True, working
        try:
            self._say(await action())
        except ProcessingError as exc:
            self._say(exc.message, "danger")
        finally:
            button.loading, button.disabled, button.label = False, False, label
            self._busy = False
            self._show_state(self.service.cluster_status())

    async def _on_start(self, _: Any) -> None:
        async def act() -> str:
            started, info = await self.service.start_cluster()
            if not started:
                return "The cluster is already running"
            expected = self.service.settings.n_workers
            if info["n_workers"] < expected and self.feed is not None:
                self._starting = expected  # workers still joining: the samples finish the message
                return f"Cluster started: workers joining… {info['n_workers']} of {expected}"
            return f"Cluster started: {info['n_workers']} workers, {info['total_cores']} cores"
        await self._run(self._start, "Starting…", act)

    async def _on_stop(self, _: Any) -> None:
        self._confirm.visible = False

        async def act() -> str:
            return "Cluster stopped" if await self.service.stop_cluster() else "The cluster is not running"
        await self._run(self._stop, "Stopping…", act)

    def _scale_problem(self) -> str | None:
        """Why the typed sizes cannot be asked for, or None."""
        limit = self.service.settings.max_workers
        sizes = [self._n.value] if self._mode.value == "Fixed" else [self._min.value, self._max.value]
        if any(v is None for v in sizes):
            return "Type a number of workers."
        if any(v < 0 or v > limit for v in sizes):
            return f"Workers must be between 0 and {limit} (MAX_WORKERS); nothing was changed."
        if self._mode.value == "Adaptive" and self._min.value > self._max.value:
            return "The minimum must not exceed the maximum; nothing was changed."
        return None

    async def _on_scale(self, _: Any) -> None:
        problem = self._scale_problem()
        if problem:
            self._say(problem, "danger")
            return

        async def act() -> str:
            if self._mode.value == "Fixed":
                await self.service.scale_cluster(n_workers=self._n.value)
                self._target = self._n.value
                return f"Scaling to {self._n.value} workers…"
            await self.service.scale_cluster(adaptive={"minimum": self._min.value, "maximum": self._max.value})
            return f"Adaptive scaling between {self._min.value} and {self._max.value} workers"
        await self._run(self._scale, "Scaling…", act)

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(
            pn.Row(self._start, self._stop), self._confirm,
            pn.pane.HTML("<b>Scale</b> <span class='pc-muted'>a fixed number of workers, or adaptive between a minimum "
                         "and a maximum</span>", stylesheets=[CSS], margin=(14, 10, 0, 10)),
            self._mode, pn.Row(self._n, self._min, self._max, self._scale),
            self._message, sizing_mode="stretch_width",
        )




WORKER_COLUMNS = {"name": "Worker", "address": "Address", "nthreads": "Threads", "memory": "Memory",
                  "memory_pct": "Mem %", "cpu_percent": "CPU %", "executing": "Running",
                  "active_tasks": "Tasks", "heartbeat_age_s": "Beat (s)", "status": "Status"}


def worker_frame(workers: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per worker, as the table shows it."""
    rows = []
    for w in workers:
        limit = w.get("memory_limit_bytes") or 0
        rows.append({
            "name": w["name"], "address": w["address"], "nthreads": w["nthreads"],
            "memory": f"{fmt_bytes(w['memory_bytes'])} / {fmt_bytes(limit)}",
            "memory_pct": round(100.0 * w["memory_bytes"] / limit, 1) if limit else 0.0,
            "cpu_percent": round(float(w["cpu_percent"]), 1), "executing": w["executing"],
            "active_tasks": w["active_tasks"], "heartbeat_age_s": round(float(w["heartbeat_age_s"]), 1),
            "status": w["status"],
        })
    return pd.DataFrame(rows, columns=list(WORKER_COLUMNS))


class WorkerTable(pn.viewable.Viewer):
    """Per-worker memory, CPU, tasks and heartbeat from the sampler's last reading."""

    service = param.ClassSelector(class_=ProcessingService, doc="The process's service.")
    feed = param.ClassSelector(class_=LiveFeed, doc="The session's live feed.")

    def __init__(self, **params: Any):
        super().__init__(**params)
        self._table = pn.widgets.Tabulator(
            worker_frame(self.service.workers()), show_index=False, disabled=True, selectable=False,
            titles=WORKER_COLUMNS, layout="fit_columns", sizing_mode="stretch_width",
            widths={"address": 190, "memory": 180},
            formatters={"memory_pct": {"type": "progress", "max": 100, "legend": True, "color": "#7048e8"},
                        "cpu_percent": {"type": "progress", "max": 100, "legend": True, "color": "#1c7ed6"}},
            css_classes=["worker-table"])
        self._empty = pn.pane.HTML("<div class='pc-muted'>No workers: start or scale the cluster.</div>",
                                   stylesheets=[CSS], visible=False)
        self.refresh()
        self.feed.subscribe(lambda _snap: self.refresh())

    def refresh(self) -> None:
        frame = worker_frame(self.service.workers())
        self._empty.visible = frame.empty
        if not frame.equals(self._table.value):
            self._table.value = frame

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(self._empty, self._table, sizing_mode="stretch_width")


class ClusterEvents(pn.viewable.Viewer):
    """The latest start, scale and stop events; re-read when the cluster's state changes."""

    service = param.ClassSelector(class_=ProcessingService, doc="The process's service.")
    feed = param.ClassSelector(class_=LiveFeed, doc="The session's live feed.")
    limit = param.Integer(default=8, bounds=(1, 100), doc="Events shown.")

    def __init__(self, **params: Any):
        super().__init__(**params)
        self._html = pn.pane.HTML("", stylesheets=[CSS], sizing_mode="stretch_width")
        self._seen: tuple = ()
        self._reads = 0  # refreshes started: an answer older than the newest one is dropped
        pn.state.execute(self.refresh)  # the events are read on the store's read pool once the page is up
        self.feed.subscribe(self._on_sample)

    def _on_sample(self, snap: dict[str, Any]) -> None:
        key = (snap.get("status"), snap.get("n_workers"), self.service.cluster_status().get("adaptive") is not None)
        if key != self._seen:
            self._seen = key
            pn.state.execute(self.refresh)

    async def refresh(self) -> None:
        """One small store read, on the read pool: the newest events."""
        self._reads = read = self._reads + 1
        _, events = await self.service.reading(self.service.cluster_events, self.limit, 0)
        if read != self._reads:
            return
        rows = "".join(
            f"<tr><td>{html.escape((e.get('timestamp') or '')[:19].replace('T', ' '))}</td>"
            f"<td><b>{html.escape(e['event'])}</b></td>"
            f"<td>{html.escape(', '.join(f'{k}={v}' for k, v in (e.get('details') or {}).items()))}</td></tr>"
            for e in events)
        self._html.object = (f"<table class='pc-table' data-testid='cluster-events'><tr><th>When (UTC)</th><th>Event</th>"
                             f"<th>Details</th></tr>{rows}</table>" if rows else "<div class='pc-muted'>No events yet.</div>")

    def __panel__(self) -> pn.viewable.Viewable:
        return self._html
