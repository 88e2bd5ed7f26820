"""Monitoring endpoints: metric history, the live buffer, Prometheus text and
recommendations. Every read of the store runs on its read pool (``service.reading``)."""
from __future__ import annotations

import json
import math
import re
import time
from typing import Any

import param

from .. import prometheus, recommendations
from ..errors import InvalidRequest
from ..jsonsafe import json_safe
from ..metrics import fmt_gb
from ..times import iso, parse_iso
from .base import BaseHandler, Endpoint, dumps

WINDOW = re.compile(r"^(\d+)([smhd])$")
UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_WINDOW_S = 366 * 86400
EPOCH_MAX = 1e11  # larger numbers are epoch milliseconds, not seconds


class HistoryQuery(param.Parameterized):
    """Which metric history to return: a time range (or a window), a row limit and an optional step."""

    since = param.String(default=None, allow_None=True,
                         doc="Start: ISO-8601 (2024-01-01T10:00:00Z) or epoch seconds.")
    until = param.String(default=None, allow_None=True, doc="End (inclusive): ISO-8601 or epoch seconds; default now.")
    window = param.String(default=None, allow_None=True,
                          doc="Shortcut for since=now-window: 5m, 1h, 24h, 7d (any <n>s|m|h|d). Not with since.")
    limit = param.Integer(default=1000, bounds=(1, 10000), doc="Most rows returned, the newest (1–10000).")
    step = param.Number(default=None, allow_None=True, bounds=(1, None),
                        doc="Downsample: at most one row (the last) per step-second bucket (≥ 1).")


class LiveQuery(param.Parameterized):
    """How much of the sampler's in-memory buffer to return."""

    seconds = param.Number(default=60, bounds=(1, 3600), doc="Samples of the last this many seconds (1–3600).")


def parse_instant(key: str, raw: str) -> float:
    """Epoch seconds from ISO-8601 (naive = UTC) or a number of epoch seconds."""
    try:
        value = float(raw)
    except ValueError:
        pass
    else:
        if not math.isfinite(value) or not 0 <= value < EPOCH_MAX:
            raise InvalidRequest(f"'{key}' must be epoch seconds (not milliseconds) or ISO-8601, got {raw!r}",
                                 {"field": key})
        return value
    text = raw.strip()
    if "T" in text and " " in text.split("T", 1)[1]:
        text = text.replace(" ", "+")  # an unescaped '+' of a UTC offset arrives as a space
    try:
        return parse_iso(text).timestamp()
    except ValueError:
        raise InvalidRequest(
            f"'{key}' must be an ISO-8601 timestamp (e.g. 2024-01-01T10:00:00Z) or epoch seconds, got {raw!r}",
            {"field": key}) from None


def parse_window(raw: str) -> float:
    """Seconds of a window such as ``5m``, ``1h``, ``24h`` or ``7d``."""
    match = WINDOW.match(raw.strip())
    seconds = int(match.group(1)) * UNIT_S[match.group(2)] if match else 0
    if not 0 < seconds <= MAX_WINDOW_S:
        raise InvalidRequest(f"'window' must be a duration such as 5m, 1h, 24h or 7d (at most 366d), got {raw!r}",
                             {"field": "window"})
    return seconds


def time_range(q: HistoryQuery, now: float) -> tuple[float | None, float | None]:
    """(since, until) in epoch seconds from the query's since/until/window."""
    if q.window is not None and q.since is not None:
        raise InvalidRequest("give either 'since' or 'window', not both", {"field": "window"})
    until = parse_instant("until", q.until) if q.until is not None else None
    since = parse_instant("since", q.since) if q.since is not None else None
    if q.window is not None:
        since = (until if until is not None else now) - parse_window(q.window)
    if since is not None and until is not None and until < since:
        raise InvalidRequest(f"'until' ({iso(until)}) is before 'since' ({iso(since)})", {"field": "until"})
    return since, until


def history_entry(ts: float, total: Any, used: Any, head: str, counts: str, rest: str, queue_text: str | None) -> str:
    """One stored metric row (``store_reads.HISTORY_PARTS``) as the contract's history entry, JSON:
    timestamp, ts, n_workers, total_memory, used_memory, total_cores, active_tasks,
    total_memory_bytes, used_memory_bytes, memory_usage_percent, cpu_percent, tasks_per_second,
    status and queue (the sampler's queue figures)."""
    percent = round(100.0 * used / total, 2) if total else 0.0
    if queue_text is not None:  # text SQLite does not read as JSON: as the store decodes it, or the text
        try:
            queue = json.dumps(json_safe(json.loads(queue_text)))
        except ValueError:
            queue = json.dumps(queue_text)
        rest = rest[:-len("null}")] + queue + "}"
    return (f'{head[:-1]},"total_memory":"{fmt_gb(total)}","used_memory":"{fmt_gb(used)}",{counts[1:-1]},'
            f'"memory_usage_percent":{percent if math.isfinite(percent) else "null"},{rest[1:]}')


def live_row(s: dict[str, Any]) -> dict[str, Any]:
    """A sampler reading without its per-worker list."""
    row = {k: v for k, v in s.items() if k != "workers"}
    row["total_memory"] = fmt_gb(s.get("total_memory_bytes"))
    row["used_memory"] = fmt_gb(s.get("used_memory_bytes"))
    return row


class ClusterMetricsHandler(BaseHandler):
    openapi = {"get": Endpoint(
        "Cluster metric history from SQLite, oldest first: since/until or window, limit, step (downsampling)",
        query=HistoryQuery, tags=("metrics",),
    )}

    async def get(self) -> None:
        q = self.parse_query(HistoryQuery)
        since, until = time_range(q, time.time())
        self.finish(await self.service.reading(self._body, since, until, q))

    def _body(self, since: float | None, until: float | None, q: HistoryQuery) -> str:
        """The answer as JSON, read and encoded on the read pool (up to 10000 rows, each mostly
        encoded by SQLite)."""
        total, rows = self.service.metric_history_entries(since, until, q.limit, q.step)
        extra: dict[str, Any] = {"step": q.step} if q.step else {}
        extra.update({k: iso(v) for k, v in (("since", since), ("until", until)) if v is not None})
        parts = [f'"total": {int(total)}', f'"metrics": [{", ".join(history_entry(*row) for row in rows)}]']
        parts += [f"{json.dumps(k)}: {dumps(v)}" for k, v in extra.items()]
        return "{" + ", ".join(parts) + "}"



class LiveMetricsHandler(BaseHandler):
    openapi = {"get": Endpoint("The sampler's in-memory readings of the last seconds (no per-worker lists)",
                               query=LiveQuery, tags=("metrics",))}

    def get(self) -> None:
        q = self.parse_query(LiveQuery)
        samples = [live_row(s) for s in self.service.sampler.history(q.seconds)]
        self.write_json({"total": len(samples), "interval_s": self.service.settings.live_interval,
                         "samples": samples})


class PrometheusHandler(BaseHandler):
    openapi = {"get": Endpoint("Prometheus text exposition (text/plain; version=0.0.4): cluster, jobs, attempts",
                               tags=("metrics",), response_type=prometheus.CONTENT_TYPE)}

    async def get(self) -> None:
        body = await self.service.reading(prometheus.render, self.service)
        self.set_header("Content-Type", prometheus.CONTENT_TYPE)
        self.finish(body)


class RecommendationsHandler(BaseHandler):
    openapi = {"get": Endpoint("Scale up/down and per-job memory advice, with the evidence", tags=("metrics",))}

    async def get(self) -> None:
        body = await self.service.reading(recommendations.from_service, self.service)
        self.write_json(body)


ROUTES = [
    (r"/api/processing/metrics/cluster", ClusterMetricsHandler),
    (r"/api/processing/metrics/live", LiveMetricsHandler),
    (r"/api/processing/metrics/prometheus", PrometheusHandler),
    (r"/metrics", PrometheusHandler),
    (r"/api/processing/recommendations", RecommendationsHandler),
]
