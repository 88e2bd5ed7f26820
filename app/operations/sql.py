"""A SELECT over the dataset, as the table ``data``, in DuckDB's dialect.

Checked at submit: exactly one SELECT (DuckDB's parser says so), planned against an
empty table of the dataset's schema in a sandboxed DuckDB (in a child process, see
:mod:`._sql_plan`); a syntax or binding error is a 400 naming the line, column and
character position. Run as ONE task on a worker over all the dataset's files (a query
cannot in general be split), in a DuckDB connection sandboxed the same way, that may
read those files and nothing else (see :mod:`._sql`). A result of up to
RESULT_INLINE_ROWS rows is a table; a larger one is written as a result dataset.
"""
from __future__ import annotations

import re
from typing import Any

import pandas as pd
import param

from ..errors import InvalidRequest
from ..models import required
from ._sql import PLANNER, SqlTask, interrupt
from .base import Operation, Schema, table

MAX_QUERY_CHARS = 20_000
MAX_TIMEOUT_S = 3600
_LINE = re.compile(r"^LINE (\d+): (.*)\n( *)\^", re.M)
_INTS = {"int8": "TINYINT", "int16": "SMALLINT", "int32": "INTEGER", "int64": "BIGINT", "uint8": "UTINYINT",
         "uint16": "USMALLINT", "uint32": "UINTEGER", "uint64": "UBIGINT", "float16": "FLOAT", "float32": "FLOAT",
         "float64": "DOUBLE", "bool": "BOOLEAN", "boolean": "BOOLEAN", "date32[day]": "DATE"}


class SqlParams(param.Parameterized):
    """One SELECT statement over the table ``data``."""

    query = required(param.String(
        default=None,
        doc=f"One SELECT statement in DuckDB's SQL; the dataset is the table data "
            f"(e.g. SELECT k, avg(v) FROM data GROUP BY k). At most {MAX_QUERY_CHARS:,} characters; "
            "quote names with spaces or capitals in double quotes."))
    timeout_s = param.Number(
        default=300.0, bounds=(1, MAX_TIMEOUT_S),
        doc=f"Seconds the query may run on its worker (1–{MAX_TIMEOUT_S}); then it is interrupted "
            "and the job fails.")


class Sql(Operation):
    """A table of up to RESULT_INLINE_ROWS rows, or a result dataset."""

    name = "sql"
    title = "SQL query"
    description = ("One SELECT over the dataset as the table data (DuckDB's dialect), run as one task on a "
                   "worker in a sandbox that reads the dataset's files and nothing else. Small results are "
                   "a table; large ones are written as a new dataset.")
    Params = SqlParams
    result_kind = "table"
    blocking_check = True  # planned in a child process: up to its time limit, never on the loop

    def check(self, p: Any, schema: Schema) -> None:
        """Bounded length, one SELECT, planned against an empty ``data`` of ``schema``."""
        query = p.query
        if len(query) > MAX_QUERY_CHARS:
            raise InvalidRequest(f"'query' has {len(query):,} characters; at most {MAX_QUERY_CHARS:,}",
                                 {"field": "query", "length": len(query), "max": MAX_QUERY_CHARS})
        if not query.strip():
            raise InvalidRequest("'query' is empty; give one SELECT statement", {"field": "query"})
        answer = PLANNER.plan(query, [[name, duck_type(dtype)] for name, dtype in schema.items()])
        if "error" in answer:
            raise query_error(answer, query)

    def task(self, p: Any, schema: Schema, read: tuple[str, str, dict[str, Any]], out: str,
             inline_rows: int, memory_gb: float, cores: float, key: str = "") -> SqlTask:
        """The one task that runs the query on a worker (see :mod:`._sql`); ``key`` names the
        job attempt, for :meth:`interrupt`."""
        source, fmt, options = read
        return SqlTask(p.query, source, fmt, dict(options or {}), dict(schema), out, inline_rows,
                       int(memory_gb * 1e9), max(1, int(cores)), float(p.timeout_s), key)

    def interrupt(self, client: Any, key: str) -> None:
        """Interrupt the query of job attempt ``key`` on whichever worker runs it (blocking: a
        job thread calls it once the attempt was stopped). Cancelling the task's future alone
        leaves DuckDB running in the worker's thread until the query ends."""
        client.run(interrupt, key, on_error="ignore")

    def outcome(self, value: dict[str, Any], out: str) -> dict[str, Any]:
        """The runner's outcome: an inline table, or the result dataset ``out`` the task wrote."""
        if "table" in value:
            frame = value["table"].to_pandas()
            return {"result": table(frame), "kind": "table"}
        return {"result": {k: value[k] for k in ("rows", "n_partitions", "columns")}, "kind": "dataset",
                "dataset_path": out}

    def finalize(self, computed: Any, p: Any) -> Any:
        return table(computed) if isinstance(computed, pd.DataFrame) else computed


def duck_type(dtype: str) -> str:
    """The DuckDB type of a registered (pandas) dtype; text for anything else."""
    d = dtype.lower().removesuffix("[pyarrow]")
    if d in _INTS:
        return _INTS[d]
    if d.startswith("datetime64"):
        return "TIMESTAMPTZ" if "," in d else "TIMESTAMP"
    if d.startswith("timedelta64") or d.startswith("duration"):
        return "INTERVAL"
    return "VARCHAR"


def query_error(answer: dict[str, Any], query: str) -> InvalidRequest:
    """A 400 from the planner's answer, naming the line, column and character position."""
    text = str(answer["message"])
    head = text.split("\n\n", 1)[0].strip()
    where = locate(text, query, answer.get("prefix", ""))
    details: dict[str, Any] = {"field": "query", **where}
    if where:
        first, _, rest = head.partition("\n")
        head = f"{first} (line {where['line']}, column {where['column']}, character {where['position']})" \
            + (f"\n{rest}" if rest else "")
    if answer["error"] == "not_allowed":
        return InvalidRequest(f"refused by the SQL sandbox: {head}", details, code="sql_not_allowed")
    if answer["error"] == "too_costly":
        return InvalidRequest(f"the query cannot be planned within the planner's limits: {head}", details,
                              code="sql_too_costly")
    return InvalidRequest(head, details, code="invalid_sql")


def locate(message: str, query: str, prefix: str = "") -> dict[str, int]:
    """Where DuckDB's "LINE n: ..." context with its caret points in ``query``.

    ``position`` counts characters from 0; ``line`` and ``column`` from 1. DuckDB shows
    ``prefix`` before the query on line 1, and cuts long lines to "...".
    """
    m = _LINE.search(message)
    if not m:
        return {}
    line, shown = int(m[1]), m[2]
    col = len(m[3]) - len(f"LINE {m[1]}: ")
    lines = (prefix + query).split("\n")
    if line > len(lines):
        return {}
    if shown.startswith("..."):
        shown, col = shown[3:], col - 3
    shown = shown.removesuffix("...")
    start = lines[line - 1].find(shown) if shown else 0
    in_line = max(0, start) + max(0, col) - (len(prefix) if line == 1 else 0)
    in_line = min(max(0, in_line), len(query.split("\n")[line - 1]))
    position = sum(len(text) + 1 for text in query.split("\n")[: line - 1]) + in_line
    return {"position": position, "line": line, "column": in_line + 1}


OPERATION = Sql()
