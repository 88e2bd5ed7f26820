"""The operation plugin interface and the checks every operation shares.

An operation turns a validated parameter model and a Dask frame into a lazy
graph (``build``) and turns the computed value into JSON (``finalize``). The
job runner owns computing; nothing here calls ``.compute()``.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd
import param

from ..errors import InvalidRequest
from ..jsonsafe import json_safe as jsonable
from ..kernels import KernelPlan
from ..models import build as build_model
from ..models import json_schema, public_params, required_fields

if TYPE_CHECKING:  # annotations only (see app/readers.py: dask.dataframe is imported where it is used)
    import dask.dataframe as dd

Schema = dict[str, str]  # column name -> pandas dtype string

RESULT_KINDS = ("scalar", "record", "table", "matrix", "histogram", "volcano", "dataset")


class Operation:
    """One job operation: parameters, schema checks, a lazy graph and a JSON result.

    ``build`` returns one Dask collection or a tuple of them (``client.compute``
    accepts both, it does not accept a dict); ``finalize`` receives the computed
    value(s) in the same shape.
    """

    name: ClassVar[str]
    title: ClassVar[str]
    description: ClassVar[str]
    Params: ClassVar[type[param.Parameterized]]
    result_kind: ClassVar[str]
    writes_dataset: ClassVar[bool] = False
    blocking_check: ClassVar[bool] = False  # its submit check waits on something (a planner): run it off the loop
    # List parameters whose items are objects: field -> the model of one item.
    item_models: ClassVar[dict[str, type[param.Parameterized]]] = {}

    def parse(self, parameters: dict, schema: Schema) -> param.Parameterized:
        """Validate ``parameters`` against ``Params`` and the dataset ``schema``."""
        p = parse_model(self.Params, parameters)
        self.check(p, schema)
        return p

    def check(self, p: Any, schema: Schema) -> None:
        """Check ``p`` against the schema; may normalise nested items in place."""

    def output_schema(self, p: Any, schema: Schema) -> Schema | None:
        """The columns of the dataset this job writes (``p`` as ``parse`` returned it), when
        that is known before it runs; None otherwise (a later pipeline step is then checked
        against its parameter model only)."""
        return None

    def kind(self, p: Any) -> str:
        """The result kind of this request; ``result_kind`` unless the parameters change it."""
        return self.result_kind

    def columns(self, p: Any) -> list[str] | None:
        """The columns ``build`` reads (a projection), or None for all."""
        return None

    def build(self, ddf: dd.DataFrame, p: Any) -> Any:
        """The lazy Dask graph of this operation."""
        raise NotImplementedError

    def plan(self, p: Any, schema: Schema) -> "KernelPlan | None":
        """The columnar kernel plan (see :mod:`app.kernels`), or None to run ``build`` instead."""
        return None

    def finalize(self, computed: Any, p: Any) -> Any:
        """Turn the computed value into a JSON-safe result."""
        return jsonable(computed)

    def entry(self) -> dict[str, Any]:
        """This operation's catalogue entry, with the JSON schema of its parameters."""
        schema = model_schema(self.Params)
        for field, model in self.item_models.items():
            spec = schema["properties"][field]
            array = next((s for s in spec.get("anyOf", [spec]) if s.get("type") == "array"), spec)
            array["items"] = model_schema(model)
        return {
            "name": self.name,
            "title": self.title,
            "description": self.description,
            "result_kind": self.result_kind,
            "writes_dataset": self.writes_dataset,
            "parameters": schema,
        }


_JSON_NAMES = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}


def model_schema(model: type[param.Parameterized]) -> dict[str, Any]:
    """``app.models.json_schema`` with exact types for ClassSelector parameters.

    param names a ClassSelector's classes it does not know (bool, list) "object".
    """
    schema = json_schema(model)
    for key, spec in public_params(model).items():
        if isinstance(spec, param.ClassSelector):
            classes = spec.class_ if isinstance(spec.class_, tuple) else (spec.class_,)
            types: list[dict[str, Any]] = [{"type": _JSON_NAMES[c]} for c in classes if c in _JSON_NAMES]
            if spec.allow_None:
                types.append({"type": "null"})
            schema["properties"][key] = {"anyOf": types, "description": spec.doc or ""}
    return schema


def dataset_summary(name: str, p: Any, computed: Any) -> dict[str, Any]:
    """The result of an operation that writes a dataset: what was asked, and rows if known."""
    params = {k: getattr(p, k) for k in public_params(type(p))}
    rows = computed if isinstance(computed, (int, np.integer)) else None
    return jsonable({"operation": name, "parameters": params, "rows": rows})


# -- parameter models -------------------------------------------------------

def parse_model(model: type[param.Parameterized], data: Any, field: str | None = None) -> Any:
    """``app.models.build``, refusing null for required fields; ``field`` prefixes errors of nested items."""
    if field is not None and not isinstance(data, dict):
        raise InvalidRequest(f"'{field}' must be an object", {"field": field})
    try:
        p = _build(model, data)
        for key in required_fields(model):
            if getattr(p, key) is None:
                raise InvalidRequest(f"'{key}' is required", {"field": key})
    except InvalidRequest as exc:
        if field is None:
            raise
        inner = exc.details.get("field")
        details = dict(exc.details, field=f"{field}.{inner}" if inner else field)
        raise InvalidRequest(f"{field}: {exc.message}", details) from None
    return p


def _build(model: type[param.Parameterized], data: Any) -> Any:
    try:
        return build_model(model, data)
    except TypeError as exc:  # param raises TypeError, not ValueError, for a List's item_type
        fields = public_params(model)
        bad = next((k for k in fields if f"'{model.__name__}.{k}'" in str(exc)), None)
        what = {dict: "objects", str: "strings"}.get(getattr(fields.get(bad), "item_type", None), "of another type")
        raise InvalidRequest(f"'{bad}' items must be {what}", {"field": bad}) from None


def parse_items(model: type[param.Parameterized], items: list, field: str) -> list[dict[str, Any]]:
    """Validate each object of a list parameter; returns plain dicts with defaults filled."""
    keys = list(public_params(model))
    out = []
    for i, item in enumerate(items):
        p = parse_model(model, item, f"{field}[{i}]")
        out.append({k: getattr(p, k) for k in keys})
    return out


# -- schema checks ----------------------------------------------------------

def kind_of(dtype: str) -> str:
    """Classify a pandas dtype string: numeric, bool, datetime, string, category or other."""
    try:
        dt = pd.api.types.pandas_dtype(dtype)
    except TypeError:
        return "other"
    if pd.api.types.is_bool_dtype(dt):
        return "bool"
    if pd.api.types.is_numeric_dtype(dt):
        return "numeric"
    if pd.api.types.is_datetime64_any_dtype(dt):
        return "datetime"
    if isinstance(dt, pd.CategoricalDtype):
        return "category"
    if pd.api.types.is_string_dtype(dt) or pd.api.types.is_object_dtype(dt):
        return "string"
    return "other"


def require_column(schema: Schema, column: str, field: str) -> str:
    """The column's kind; raises if the dataset has no such column."""
    if column not in schema:
        names = list(schema)
        raise InvalidRequest(
            f"unknown column '{column}'; the dataset's columns are: {', '.join(names)}",
            {"field": field, "columns": names},
        )
    return kind_of(schema[column])


def require_kind(schema: Schema, column: str, field: str, kinds: tuple[str, ...], what: str) -> str:
    """Like ``require_column`` but the column must be of one of ``kinds``."""
    kind = require_column(schema, column, field)
    if kind not in kinds:
        raise InvalidRequest(
            f"column '{column}' has dtype {schema[column]}; '{field}' needs {what} column",
            {"field": field, "column": column, "dtype": schema[column]},
        )
    return kind


def require_numeric(schema: Schema, column: str, field: str) -> None:
    """The column must exist and be numeric (integer or float, not boolean)."""
    require_kind(schema, column, field, ("numeric",), "a numeric")


def as_list(value: str | list[str] | None) -> list[str]:
    """A column name or list of names as a list."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def require_names(values: list, field: str) -> None:
    """Every entry of a list of column names is a string and none repeats."""
    if not all(isinstance(v, str) for v in values):
        raise InvalidRequest(f"'{field}' must hold column names (strings)", {"field": field})
    if len(set(values)) != len(values):
        raise InvalidRequest(f"'{field}' names a column more than once", {"field": field})


def unique(names: list[str]) -> list[str]:
    """Names in first-seen order without repeats."""
    return list(dict.fromkeys(names))


def scalar_for(value: Any, column: str, dtype: str, where: str) -> Any:
    """A JSON value as a value of the column's dtype (ISO text -> Timestamp); raises if it does not fit."""
    kind = kind_of(dtype)
    ok = {
        "numeric": isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
        "bool": isinstance(value, bool),
        "string": isinstance(value, str),
        "category": isinstance(value, str),
        "datetime": isinstance(value, str),
    }.get(kind, isinstance(value, (str, int, float)))
    want = {"numeric": "a number", "bool": "true or false", "datetime": "an ISO 8601 date or time"}
    if not ok:
        raise InvalidRequest(
            f"{where}: value {value!r} does not fit column '{column}' (dtype {dtype}); "
            f"give {want.get(kind, 'a string')}",
            {"field": f"{where}.value", "dtype": dtype},
        )
    return _timestamp(value, dtype, where) if kind == "datetime" else value


def _timestamp(value: str, dtype: str, where: str) -> pd.Timestamp:
    try:
        ts = pd.Timestamp(value)
    except ValueError:
        ts = pd.NaT
    if ts is pd.NaT:
        raise InvalidRequest(f"{where}: {value!r} is not an ISO 8601 date or time", {"field": f"{where}.value"})
    tz = getattr(pd.api.types.pandas_dtype(dtype), "tz", None)
    if tz is not None and ts.tzinfo is None:
        return ts.tz_localize(tz)
    if tz is None and ts.tzinfo is not None:
        return ts.tz_convert("UTC").tz_localize(None)
    return ts


# -- JSON -------------------------------------------------------------------

def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """A frame's rows as JSON-safe dicts."""
    return [jsonable(row) for row in frame.to_dict("records")]


def table(frame: pd.DataFrame, **extra: Any) -> dict[str, Any]:
    """The shape of every "table" result: column names, rows, and any extra keys."""
    return {"columns": [str(c) for c in frame.columns], "rows": records(frame), **jsonable(extra)}
