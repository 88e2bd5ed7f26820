"""Values made safe for JSON: the one converter for API bodies, results and previews."""
from __future__ import annotations

import math
from datetime import date, datetime, time
from typing import Any

import numpy as np
import pandas as pd

_PLAIN = (str, int)  # bool is an int: both go out as they are


def json_safe(value: Any, *, inf_as_text: bool = False) -> Any:
    """Plain Python for JSON: NaN, NaT and NA become None, numpy values Python ones, dates ISO text,
    containers lists and dicts (keys as text), anything else its text.

    Infinities become None, or ``"inf"``/``"-inf"`` with ``inf_as_text`` (a preview shows what the data holds).
    """
    return _safe(value, inf_as_text)


def _safe(value: Any, inf_as_text: bool) -> Any:
    # positional and in order of frequency: an API page of 1000 jobs goes through here
    if value is None or isinstance(value, _PLAIN):
        return value
    if isinstance(value, dict):
        return {k if isinstance(k, str) else str(k): _safe(v, inf_as_text) for k, v in value.items()}
    if isinstance(value, float):
        return value if math.isfinite(value) else (str(value) if inf_as_text and not math.isnan(value) else None)
    if isinstance(value, (list, tuple, np.ndarray, pd.Index, pd.Series)):
        return [_safe(v, inf_as_text) for v in value]
    if value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, (np.datetime64, np.timedelta64)):
        if np.isnat(value):
            return None
        value = pd.Timestamp(value) if isinstance(value, np.datetime64) else pd.Timedelta(value)
    if isinstance(value, np.generic):
        return _safe(value.item(), inf_as_text)
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)  # timedelta, Decimal and the rest
