"""The monitoring wall: a dark kiosk view for a screen across the room.

No controls; large type; fits 1920×1080 without scrolling. URL options:
``?panels=health,jobs,queue,memory,cpu`` picks the panels (``|`` separates
rotation groups, e.g. ``health,jobs,queue|memory,cpu``); ``?rotate=20`` shows
one group of panels at a time for 20 s each (without ``|``, the body panels are
grouped two by two). The health strip is never rotated away.

Panel sessions do not reconnect after a server restart, so ``Reconnect`` polls
the health endpoint from the browser and reloads the page once the server
answers again (or answers as a new process).
"""
from __future__ import annotations

import time
from typing import Any

import panel as pn
import param
from panel.custom import JSComponent

from app.service import ProcessingService

from .charts import TimeSeriesChart
from .live import LiveFeed, LiveSource, queue_counts, queued_jobs, running_jobs
from .theme import PRIORITY_COLORS, STATUS_COLORS, WALL_CSS, LiveHTML, esc, fmt_duration, progress_bar

PANELS = ("health", "jobs", "queue", "memory", "cpu")
BACKGROUND = "#0b1016"
PANEL_STYLE = {"background": "#111820", "border": "1px solid #243040", "border-radius": "1.3vh", "padding": "1.3vh 2vh"}
HEALTH_EVERY_S = 5.0


class Reconnect(JSComponent):
    """Browser-side watchdog: shows a banner while the server is unreachable and reloads the page when it is back."""

    health_url = param.String(default="/api/processing/health", doc="Health endpoint polled from the browser.")
    interval_ms = param.Integer(default=2000, bounds=(250, None), doc="Polling period.")
    timeout_ms = param.Integer(default=5000, bounds=(250, None), doc="A health request unanswered this long counts as down.")

    _esm = """
export function render({ model, el }) {
  const banner = document.createElement("div");
  banner.setAttribute("data-testid", "wall-offline");
  banner.style.cssText = "display:none;position:fixed;left:0;right:0;top:0;z-index:10000;padding:16px 24px;" +
    "background:#c92a2a;color:#fff;font:700 30px sans-serif;text-align:center;letter-spacing:.02em";
  el.appendChild(banner);
  let boot = null, down = false, lostAt = 0, reloading = false, busy = false;
  async function check() {
    // one request at a time, each given up after timeout_ms: requests left hanging across a
    // restart would otherwise hold the browser's few connections to this host, and the
    // checks queued behind them would never see the server come back
    if (reloading || busy) return;
    busy = true;
    const abort = new AbortController();
    const giveUp = setTimeout(() => abort.abort(), model.timeout_ms);
    let health = null;
    try {
      const r = await fetch(model.health_url, { cache: "no-store", signal: abort.signal });
      health = await r.json();
    } catch (e) { health = null; } finally { clearTimeout(giveUp); busy = false; }
    if (health === null || typeof health.uptime_s !== "number") {
      if (!down) { down = true; lostAt = Date.now(); }
      banner.style.display = "block";
      banner.textContent = "Server unreachable for " + Math.round((Date.now() - lostAt) / 1000) + " s: reconnecting…";
      return;
    }
    const started = Date.parse(health.timestamp) / 1000 - health.uptime_s;
    if (boot === null) boot = started;
    if (down || Math.abs(started - boot) > 2) {
      reloading = true;
      banner.style.display = "block";
      banner.style.background = "#2f9e44";
      banner.textContent = "Server is back: reloading…";
      window.location.reload();
    }
  }
  const timer = setInterval(check, model.interval_ms);
  check();
  model.on("remove", () => clearInterval(timer));
}
"""


def breakable(name: str) -> str:
    """Escaped, with line-break chances after underscores: long operation names wrap instead of being cut."""
    return esc(name).replace("_", "_<wbr>")


class WallPanel(pn.viewable.Viewer):
    """An HTML panel of the wall that re-renders from each sample (only when its text changes)."""

    service = param.ClassSelector(class_=ProcessingService, doc="The process's service.")
    feed = param.ClassSelector(class_=LiveFeed, doc="The session's live feed.")

    _sizing = "stretch_both"
    _styles: dict[str, str] = {}

    def __init__(self, **params: Any):
        super().__init__(**params)
        self._pane = LiveHTML(css=WALL_CSS, sizing_mode=self._sizing, styles=self._styles)
        self.refresh(self.service.sampler.latest)
        self.feed.subscribe(self.refresh)

    def render(self, snap: dict[str, Any]) -> str:
        raise NotImplementedError

    def refresh(self, snap: dict[str, Any]) -> None:
        self._pane.text = self.render(snap)

    def __panel__(self) -> pn.viewable.Viewable:
        return self._pane


class WallHealth(WallPanel):
    """Cluster state and its figures in one strip."""

    _sizing = "stretch_width"  # a strip: its height follows the screen, it does not share it
    _styles = {"height": "16vh", "min-height": "100px"}

    def __init__(self, **params: Any):
        self._health: dict[str, Any] = {}
        self._health_at = 0.0
        super().__init__(**params)

    def render(self, snap: dict[str, Any]) -> str:
        if time.time() - self._health_at >= HEALTH_EVERY_S:  # the store check inside is itself throttled
            self._health, self._health_at = self.service.health(), time.time()
        s = self.service.cluster_status()
        queue = snap.get("queue") or {}
        color = STATUS_COLORS.get(s["status"], "#868e96")
        degraded = self._health.get("status") == "degraded"
        reasons = "; ".join(self._health.get("reasons") or [])
        mem = s["memory_usage_percent"]
        mem_cls = " wall-bad" if mem >= 90 else (" wall-warn" if mem >= 75 else "")
        stats = [
            ("Workers", f"<span data-testid='wall-workers'>{s['n_workers']}</span>"
                        f"<small class='wall-note'> · {s['total_cores']} cores</small>", "wall-workers-tile", ""),
            ("Memory", f"{mem:.0f}<small>%</small>", "wall-memory", mem_cls),
            ("CPU", f"{s['cpu_percent']:.0f}<small>%</small>", "wall-cpu", ""),
            ("Tasks/s", f"{s['tasks_per_second']:.0f}", "wall-tps", ""),
            ("Running", f"{queue.get('running', 0)}", "wall-jobs-running", ""),
            ("Queued", f"{queue.get('queued', 0)}", "wall-jobs-queued", ""),
        ]
        tiles = "".join(f"<div class='wall-stat'><div class='wall-label'>{label}</div>"
                        f"<div class='wall-value{cls}' data-testid='{tid}'>{value}</div></div>"
                        for label, value, tid, cls in stats)
        # "degraded" in smaller type: in full size it pushed the stat tiles into ellipses at 1280 px
        state = esc(s["status"]) + ("<small class='wall-degraded'> · degraded</small>"
                                    if degraded and s["status"] == "running" else "")
        sub = (f"<div class='wall-reasons' data-testid='wall-reasons'>{esc(reasons)}</div>" if degraded else
               f"<div class='wall-updated' data-testid='wall-updated'>Updated {(s['sampled_at'] or '')[11:19]} UTC</div>")
        return (f"<div class='wall-health'><div class='wall-id'><div class='wall-title'>Processing cluster</div>"
                f"<div class='wall-state' data-testid='wall-status' style='color:{color}'>"
                f"<span class='dot' style='background:{color}'></span>{state}</div>{sub}</div>"
                f"<div class='wall-stats'>{tiles}</div></div>")


class WallJobs(WallPanel):
    """Running jobs with progress and ETA, largest first, and how many wait."""

    limit = param.Integer(default=5, bounds=(1, None), doc="Most jobs shown.")

    def __init__(self, **params: Any):
        self._memo: dict[str, float] = {}
        super().__init__(**params)

    def render(self, snap: dict[str, Any]) -> str:
        jobs = running_jobs(self.service, self._memo)
        self._memo = {j["job_id"]: self._memo[j["job_id"]] for j in jobs}
        waiting = queued_jobs(self.service)
        rows = []
        for j in jobs[: self.limit]:
            eta = "finishing" if j["progress"] >= 99 else fmt_duration(j["eta_seconds"])
            rows.append(
                f"<div class='wall-job' data-testid='wall-job'><div><div class='wall-job-name'>{breakable(j['operation'])}</div>"
                f"<div class='wall-job-sub'>{esc(j['dataset_id'])} · {j['priority']} · {esc(j['job_id'])}</div></div>"
                f"{progress_bar(j['progress'], testid='wall-job-progress')}"
                f"<div class='wall-job-eta'><small>ETA</small>{eta}</div></div>")
        if not rows:
            rows.append("<div class='wall-empty'>No job running</div>")
        if len(jobs) > self.limit:
            rows.append(f"<div class='wall-more'>+ {len(jobs) - self.limit} more running</div>")
        title = f"Running jobs <span data-testid='wall-running'>{len(jobs)}</span>"
        if waiting:
            title += f" · waiting <span>{len(waiting)}</span>"
        return f"<div class='wall-panel-title'>{title}</div><div class='wall-jobs'>{''.join(rows)}</div>"


class WallQueue(WallPanel):
    """Queued jobs by priority in four big tiles."""

    def render(self, snap: dict[str, Any]) -> str:
        tiles = "".join(
            f"<div class='wall-q' style='border-color:{PRIORITY_COLORS[p]}'><div class='wall-label'>{p}</div>"
            f"<div class='wall-value' data-testid='wall-queue-{p.lower()}'>{n}</div></div>"
            for p, n in queue_counts(snap).items())
        queue = snap.get("queue") or {}
        foot = (f"<b>{queue.get('running', 0)}</b> of {self.service.settings.max_concurrent_jobs} job slots in use · "
                f"<b>{queue.get('reserved_cores', 0):g}</b> of {snap.get('total_cores', 0)} cores reserved")
        return (f"<div class='wall-panel-title'>Queue by priority</div><div class='wall-queue'>{tiles}</div>"
                f"<div class='wall-q-foot'>{foot}</div>")


class WallChart(pn.viewable.Viewer):
    """A big live chart with its current value in the title."""

    service = param.ClassSelector(class_=ProcessingService, doc="The process's service.")
    feed = param.ClassSelector(class_=LiveFeed, doc="The session's live feed.")
    live = param.ClassSelector(class_=LiveSource, doc="The session's live metrics.")
    kind = param.Selector(default="memory", objects=["memory", "cpu"], doc="Which metric.")

    def __init__(self, **params: Any):
        super().__init__(**params)
        lines = ([("mem_used", "Used GB", "#b197fc"), ("mem_total", "Limit GB", "#868e96")] if self.kind == "memory"
                 else [("cpu", "CPU %", "#4dabf7")])
        self._chart = TimeSeriesChart(live=self.live, lines=lines, fill=True, dark=True, height=None,
                                      y_max=100 if self.kind == "cpu" else None, font_size="15pt", ticks=3,
                                      unit="GB" if self.kind == "memory" else "%")
        self._title = LiveHTML(css=WALL_CSS, styles={"height": "5.4vh"})
        self.refresh(self.service.sampler.latest)
        self.feed.subscribe(self.refresh)

    def refresh(self, snap: dict[str, Any]) -> None:
        if self.kind == "memory":
            used, total = (snap.get("used_memory_bytes") or 0) / 1e9, (snap.get("total_memory_bytes") or 0) / 1e9
            value = f"{used:.1f} / {total:.1f} GB"
        else:
            value = f"{snap.get('cpu_percent') or 0:.0f} %"
        text = (f"<div class='wall-chart-title'>{'Memory' if self.kind == 'memory' else 'CPU'}"
                f"<b data-testid='wall-{self.kind}-now'>{value}</b></div>")
        self._title.text = text

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(self._title, self._chart, sizing_mode="stretch_both")


def parse_panels(raw: str | None, rotate: float | None) -> tuple[bool, list[list[str]]]:
    """(show health, groups of body panels) from ``?panels=`` and ``?rotate=``; unknown names are ignored."""
    text = raw or ",".join(PANELS)
    groups = [[p.strip() for p in chunk.split(",") if p.strip() in PANELS] for chunk in text.split("|")]
    health = any("health" in g for g in groups)
    groups = [[p for p in g if p != "health"] for g in groups]
    groups = [g for g in groups if g]
    if rotate and len(groups) == 1 and len(groups[0]) > 2:
        body = groups[0]
        groups = [body[i:i + 2] for i in range(0, len(body), 2)]
    if not rotate:
        groups = [[p for g in groups for p in g]] if groups else []
    return health, groups


class Wall(pn.viewable.Viewer):
    """The whole wall: the health strip over the (rotating) groups of panels."""

    service = param.ClassSelector(class_=ProcessingService, doc="The process's service.")
    panels = param.String(default=None, allow_None=True, doc="Comma-separated panels; '|' separates rotation groups.")
    rotate = param.Number(default=None, allow_None=True, bounds=(2, None), doc="Seconds per group of panels.")

    def __init__(self, **params: Any):
        super().__init__(**params)
        self.feed = LiveFeed(service=self.service)
        self.live = LiveSource(self.feed, window_s=600)
        self._show_health, self._groups = parse_panels(self.panels, self.rotate)
        self._group = 0
        self._switched = time.time()
        self._layouts = [self._group_layout(g) for g in self._groups]
        for i, layout in enumerate(self._layouts):
            layout.visible = i == 0
        if self.rotate and len(self._layouts) > 1:
            self.feed.subscribe(self._maybe_rotate)

    def _panel(self, name: str) -> pn.viewable.Viewable:
        common = {"service": self.service, "feed": self.feed}
        body = {"jobs": lambda: WallJobs(**common), "queue": lambda: WallQueue(**common),
                "memory": lambda: WallChart(live=self.live, kind="memory", **common),
                "cpu": lambda: WallChart(live=self.live, kind="cpu", **common)}[name]()
        return pn.Column(body, sizing_mode="stretch_both", styles=PANEL_STYLE, margin=10, css_classes=[f"wall-{name}"])

    def _group_layout(self, names: list[str]) -> pn.Column:
        rows = [names[i:i + 2] for i in range(0, len(names), 2)]
        return pn.Column(*[pn.Row(*[self._panel(n) for n in row], sizing_mode="stretch_both") for row in rows],
                         sizing_mode="stretch_both")

    def _maybe_rotate(self, _snap: dict[str, Any]) -> None:
        if time.time() - self._switched < (self.rotate or 0):
            return
        self._switched = time.time()
        self._layouts[self._group].visible = False
        self._group = (self._group + 1) % len(self._layouts)
        self._layouts[self._group].visible = True

    def __panel__(self) -> pn.viewable.Viewable:
        health = [pn.Column(WallHealth(service=self.service, feed=self.feed), sizing_mode="stretch_width",
                            margin=(10, 10, 0, 10))] if self._show_health else []
        return pn.Column(*health, *self._layouts, Reconnect(width=0, height=0, margin=0),
                         sizing_mode="stretch_both", css_classes=["wall"],
                         styles={"background": BACKGROUND, "overflow": "hidden", "height": "100vh", "width": "100vw"})
