"""How the ``processing`` command prints: aligned tables, ``key: value`` lines, or raw JSON."""
from __future__ import annotations

import argparse
import json
from typing import Any, Callable, Iterable


def fmt(value: Any) -> str:
    """One cell: None as '-', floats short, containers as compact JSON."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def table(rows: list[dict[str, Any]], columns: Iterable[str], width: int = 60) -> str:
    """Rows as aligned columns under a header; cells cut at ``width`` characters."""
    columns = list(columns)
    cells = [[_cut(fmt(row.get(c)), width) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    lines = [[str(c).upper() for c in columns], *cells]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip() for line in lines)


def pairs(values: dict[str, Any], keys: Iterable[str] | None = None) -> str:
    """``key: value`` lines, values aligned."""
    keys = [k for k in (keys or values) if k in values]
    pad = max((len(k) for k in keys), default=0) + 1
    return "\n".join(f"{(k + ':').ljust(pad)} {_cut(fmt(values[k]), 200)}" for k in keys)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def megabytes(n: Any) -> str:
    """Bytes as MB, "-" when unknown."""
    return "-" if n is None else f"{n / 1e6:.1f} MB"


def show(args: argparse.Namespace, data: Any, human: Callable[[Any], str]) -> None:
    """Raw JSON with ``--json``, else the human rendering."""
    print(json.dumps(data, indent=2) if args.json else human(data))
