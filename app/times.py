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
