"""Keep the rows that meet a list of conditions; writes a new dataset.

Each condition becomes a pandas Series method call (``eq``, ``lt``, ``isin``,
``between``, ``str.contains`` …) on each partition. Nothing is ever parsed as an
expression, so a value is only ever data. Null values meet no condition but
``is_null`` (as in SQL): ``x != 5`` and ``x not_in [5]`` skip rows where x is null.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import pandas as pd
import param

from ..errors import InvalidRequest
from ..kernels import KernelPlan, Source, ident
from ..models import required
from .base import Operation, Schema, dataset_summary, parse_items, require_column, scalar_for

if TYPE_CHECKING:  # annotations only (see app/readers.py: dask.dataframe is imported where it is used)
    import dask.dataframe as dd

OPS = ("==", "!=", "<", "<=", ">", ">=", "in", "not_in", "is_null", "not_null", "between", "contains")
_ORDERED = ("<", "<=", ">", ">=", "between")
_NO_VALUE = ("is_null", "not_null")
_LIST_VALUE = ("in", "not_in")
MAX_LIST = 10_000

_COMPARE: dict[str, Callable[[pd.Series, Any], Any]] = {
    "==": lambda s, v: s.eq(v),
    "!=": lambda s, v: s.ne(v),
    "<": lambda s, v: s.lt(v),
    "<=": lambda s, v: s.le(v),
    ">": lambda s, v: s.gt(v),
    ">=": lambda s, v: s.ge(v),
    "in": lambda s, v: s.isin(v),
    "not_in": lambda s, v: ~s.isin(v),
    "between": lambda s, v: s.between(v[0], v[1], inclusive="both"),
    "contains": lambda s, v: s.str.contains(v, regex=False, na=False),
}


class Condition(param.Parameterized):
    """One test on one column."""

    column = required(param.String(default=None, doc="The column to test."))
    op = required(
        param.Selector(
            objects=list(OPS),
            default=None,
            doc="The test. in/not_in take a list; between takes [low, high] (inclusive); "
            "is_null/not_null take no value; contains is a literal substring test on a string column.",
        )
    )
    value = param.ClassSelector(
        class_=(str, int, float, bool, list),
        default=None,
        doc="The value to compare with, of the column's type (ISO 8601 text for dates).",
    )


class FilterParams(param.Parameterized):
    """Rows to keep."""

    conditions = required(
        param.List(
            default=None,
            allow_None=True,
            item_type=dict,
            bounds=(1, 100),
            doc="Conditions, each {column, op, value}.",
        )
    )
    combine = param.Selector(
        objects=["all", "any"],
        default="all",
        doc="all: a row must meet every condition; any: at least one.",
    )


class Filter(Operation):
    """The filtered rows, written as a new dataset."""

    name = "filter"
    title = "Filter rows"
    description = "Keep the rows that meet all (or any) of a list of column conditions; writes a new dataset."
    Params = FilterParams
    result_kind = "dataset"
    writes_dataset = True
    item_models = {"conditions": Condition}

    def output_schema(self, p: Any, schema: Schema) -> Schema | None:
        return dict(schema)  # the rows that match, every column kept

    def check(self, p: Any, schema: Schema) -> None:
        """Each condition's column exists, its op suits the dtype and its value the op."""
        p.conditions = parse_items(Condition, p.conditions, "conditions")
        for i, cond in enumerate(p.conditions):
            where = f"conditions[{i}]"
            kind = require_column(schema, cond["column"], f"{where}.column")
            _check_op(cond, kind, schema[cond["column"]], where)
            coerce_value(cond, schema[cond["column"]], where)

    def build(self, ddf: dd.DataFrame, p: Any) -> dd.DataFrame:
        dtypes = {c: str(t) for c, t in ddf.dtypes.items()}
        tests = [(c["column"], c["op"], coerce_value(c, dtypes[c["column"]], "")) for c in p.conditions]
        return ddf.map_partitions(_keep, tests, p.combine, meta=ddf._meta)

    def plan(self, p: Any, schema: Schema) -> KernelPlan:
        """Each fragment's rows that pass, written as one file (see ``app.kernels.write_fragment``)."""
        tests = [(c["column"], c["op"], coerce_value(c, schema[c["column"]], "")) for c in p.conditions]
        floats = [c for c, dtype in schema.items() if dtype.startswith(("float", "Float"))]
        return KernelPlan(list(schema), _passing, _only, _only,
                          {"tests": tests, "combine": p.combine, "floats": floats})

    def finalize(self, computed: Any, p: Any) -> Any:
        return dataset_summary(self.name, p, computed)


def _check_op(cond: dict, kind: str, dtype: str, where: str) -> None:
    op, column = cond["op"], cond["column"]
    if op in _ORDERED and kind not in ("numeric", "datetime", "string"):
        raise InvalidRequest(
            f"{where}: '{op}' needs an ordered column; '{column}' has dtype {dtype}",
            {"field": f"{where}.op", "dtype": dtype},
        )
    if op == "contains" and kind != "string":
        raise InvalidRequest(
            f"{where}: 'contains' needs a string column; '{column}' has dtype {dtype}",
            {"field": f"{where}.op", "dtype": dtype},
        )


def coerce_value(cond: dict, dtype: str, where: str) -> Any:
    """The condition's value as the column's type; raises if it does not fit the op or dtype."""
    op, value = cond["op"], cond["value"]
    field = f"{where}.value"
    if op in _NO_VALUE:
        if value is not None:
            raise InvalidRequest(f"{where}: '{op}' takes no value", {"field": field})
        return None
    if op in _LIST_VALUE:
        if not isinstance(value, list) or not value or len(value) > MAX_LIST:
            raise InvalidRequest(
                f"{where}: '{op}' needs a non-empty list of values (at most {MAX_LIST})", {"field": field}
            )
        return [scalar_for(v, cond["column"], dtype, where) for v in value]
    if op == "between":
        if not isinstance(value, list) or len(value) != 2:
            raise InvalidRequest(f"{where}: 'between' needs a list of two values [low, high]", {"field": field})
        low, high = (scalar_for(v, cond["column"], dtype, where) for v in value)
        if low > high:
            raise InvalidRequest(f"{where}: 'between' needs low <= high", {"field": field})
        return [low, high]
    if value is None or isinstance(value, list):
        raise InvalidRequest(f"{where}: '{op}' needs a single value", {"field": field})
    return scalar_for(value, cond["column"], dtype, where)


def _keep(part: pd.DataFrame, tests: list[tuple[str, str, Any]], combine: str) -> pd.DataFrame:
    masks = [_mask(part[column], op, value) for column, op, value in tests]
    keep = np.logical_and.reduce(masks) if combine == "all" else np.logical_or.reduce(masks)
    return part[keep]


def _mask(s: pd.Series, op: str, value: Any) -> np.ndarray:
    if op == "is_null":
        return s.isna().to_numpy(dtype=bool)
    present = s.notna().to_numpy(dtype=bool)
    if op == "not_null":
        return present
    # Nullable dtypes answer NA where a value is missing; those rows are not kept.
    hit = pd.array(_COMPARE[op](s, value), dtype="boolean").fillna(False).to_numpy(dtype=bool)
    return present & hit


_SQL_OPS = {"==": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}


def _condition(column: str, op: str, value: Any, is_float: bool) -> tuple[str, list[Any]]:
    """One test as SQL with its values bound; a null (or a float NaN, as pandas reads it) passes none."""
    c = f"nullif({ident(column)}, 'NaN'::DOUBLE)" if is_float else ident(column)
    if op in ("is_null", "not_null"):
        return f"{c} IS {'NOT ' if op == 'not_null' else ''}NULL", []
    if op in _SQL_OPS:
        return f"{c} {_SQL_OPS[op]} ?", [value]
    if op in ("in", "not_in"):
        marks = ", ".join("?" for _ in value)
        return f"{c} {'NOT ' if op == 'not_in' else ''}IN ({marks})", list(value)
    if op == "between":
        return f"{c} BETWEEN ? AND ?", list(value)
    return f"contains({c}, ?)", [value]  # a literal substring, never a pattern


def _passing(src: Source, args: dict[str, Any]) -> Any:
    parts, params = [], []
    for column, op, value in args["tests"]:
        sql, values = _condition(column, op, value, column in args["floats"])
        parts.append(f"coalesce(({sql}), FALSE)")
        params += values
    joiner = " AND " if args["combine"] == "all" else " OR "
    # a relation's Arrow output skips the copy a cursor's result makes of every row
    return src.cur.sql(f"SELECT * FROM frag WHERE {joiner.join(parts)}", params=params).to_arrow_table()


def _only(value: Any) -> Any:
    return value[0] if isinstance(value, list) and len(value) == 1 else value


OPERATION = Filter()
