"""Time as the API writes it (ISO-8601 UTC with a Z) and reads it back."""
from __future__ import annotations

import time
from datetime import datetime, timezone


def iso(ts: float | None) -> str | None:
    """Epoch seconds as ISO-8601 UTC with milliseconds and a Z (None stays None)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utcnow() -> str:
    """Now as an ISO-8601 UTC string with a Z, the API's time format."""
    return iso(time.time())  # type: ignore[return-value]


def parse_iso(text: str) -> datetime:
    """An aware datetime from ISO-8601 text (a Z or an offset; naive text is UTC); ValueError if not ISO."""
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def epoch(value: str | float | None) -> float | None:
    """Epoch seconds of ISO-8601 text (naive = UTC) or of a number; None and '' give None."""
    if value is None or isinstance(value, (int, float)):
        return value
    return parse_iso(value).timestamp() if value else None


def eta_seconds(elapsed: float, percent_done: float) -> float | None:
    """Seconds left at the rate seen so far: ``elapsed`` seconds bought ``percent_done`` % (None before any)."""
    return elapsed * (100.0 - percent_done) / percent_done if percent_done > 0 else None


def eta_at(now: float, started_at: float, percent_done: float, since_done: float | None,
           since_began: float | None = None) -> float | None:
    """Seconds left, seen at ``now``, for a job started at ``started_at`` whose counts say
    ``percent_done`` as of ``since_done`` seconds ago (its latest task's end, which a sample
    reports up to an interval late): the rate is what was done by then over the time it took.
    ``since_began``: seconds since its first task went to a worker, when known. The rate is
    timed from then: what came before (queueing on the scheduler, planning, reading the
    files' metadata) is not repeated by the tasks still to run."""
    seen = now - min(max(0.0, float(since_done or 0.0)), max(0.0, now - started_at))
    began = started_at if since_began is None else min(seen, max(started_at, now - float(since_began)))
    left = eta_seconds(max(1e-3, seen - began), percent_done)
    return None if left is None else max(0.0, seen + left - now)
