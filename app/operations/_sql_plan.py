"""The SQL job's statement check and its submit-time planner, importing DuckDB and nothing else.

Planning can cost far more than its text suggests: DuckDB folds constants while it
binds, so ``SELECT * FROM range(length(repeat('x', 500000000)))`` allocated 1 GB and
took 4 s in the planner, and ``query('SELECT 1 AS ' || repeat(...))`` 5 GB and 40 s,
whatever ``memory_limit`` said. So the server plans queries in a child process run
from this file (``python -I _sql_plan.py``): its address space is capped, the server
waits for it a bounded time and kills it when that runs out. The child answers one
JSON line per JSON line read and exits when its stdin closes (the server is gone).

Run on the worker too: :func:`single_select` before the query runs there.
"""
from __future__ import annotations

import json
import sys
from typing import Any

import duckdb

PLAN_MEMORY = "256MB"  # DuckDB's own limit in the planner; the address-space cap is the hard one
ADDRESS_SPACE = 2 << 30  # bytes the planner process may map


def single_select(query: str) -> tuple[str, str] | None:
    """None for exactly one SELECT statement, else (kind, message): ``parse`` with DuckDB's
    parser error, or ``not_allowed``. DuckDB's own parser decides, never a pattern."""
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as exc:
        return "parse", str(exc)
    if len(statements) != 1:
        return "not_allowed", f"the query must be exactly one SELECT statement; found {len(statements)}"
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        return "not_allowed", f"only a SELECT statement may run; this is {kind.name}"
    return None


def lock_down(con: duckdb.DuckDBPyConnection, allowed_paths: list[str]) -> None:
    """Files closed except ``allowed_paths``, then every setting frozen (set in this order:
    allowed_paths cannot be set once access is off, nothing can once the lock is on)."""
    if allowed_paths:
        con.execute("SET allowed_paths=?", [allowed_paths])
    con.execute("SET enable_external_access=false")
    con.execute("SET lock_configuration=true")


def connect(memory_limit: str, threads: int, scratch: str | None = None) -> duckdb.DuckDBPyConnection:
    """A fresh in-memory DuckDB connection that can neither install nor load extensions."""
    config = {"threads": threads, "memory_limit": memory_limit,
              "autoinstall_known_extensions": False, "autoload_known_extensions": False}
    if scratch:
        config["temp_directory"] = scratch
    return duckdb.connect(config=config)


def plan(con: duckdb.DuckDBPyConnection, query: str, columns: list[list[str]]) -> dict[str, Any]:
    """Bind ``query`` against an empty table ``data`` of ``columns`` ([name, DuckDB type]).

    ``{"columns": [[name, type], ...]}`` of the result, or ``{"error": kind, "message": ...,
    "prefix": ...}`` where ``prefix`` is what DuckDB's "LINE 1:" context shows before the query.
    """
    refused = single_select(query)
    if refused:
        return {"error": refused[0], "message": refused[1], "prefix": ""}
    cur = con.cursor()
    try:
        if columns:
            cur.execute("CREATE TEMP TABLE data (" + ", ".join(f"{_ident(n)} {t}" for n, t in columns) + ")")
        described = cur.execute("DESCRIBE " + query).fetchall()
        return {"columns": [[row[0], row[1]] for row in described]}
    except duckdb.PermissionException as exc:
        return {"error": "not_allowed", "message": str(exc), "prefix": "DESCRIBE "}
    except duckdb.OutOfMemoryException as exc:
        return {"error": "too_costly", "message": str(exc).split("\n", 1)[0], "prefix": ""}
    except duckdb.Error as exc:
        return {"error": "bind", "message": str(exc), "prefix": "DESCRIBE "}
    finally:
        cur.close()


def _ident(name: str) -> str:
    return '"' + str(name).replace('"', '""') + '"'


def main() -> None:
    """The planner process: one request per stdin line, one answer per stdout line."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))
    con = connect(PLAN_MEMORY, 1)
    lock_down(con, [])
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        try:
            request = json.loads(line)
            answer = plan(con, request["query"], request["columns"])
        except MemoryError:
            answer = {"error": "too_costly", "message": "planning the query ran out of memory", "prefix": ""}
        except Exception as exc:  # noqa: BLE001 - the server must get an answer, not a dead pipe
            answer = {"error": "bind", "message": f"{type(exc).__name__}: {exc}", "prefix": ""}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
