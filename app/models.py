"""Request models: one ``param.Parameterized`` class per request, used for API
validation, the OpenAPI document and the dashboard forms alike."""
from __future__ import annotations

import re
from typing import Any, TypeVar

import param

from .errors import InvalidRequest

M = TypeVar("M", bound=param.Parameterized)

PRIORITIES = ("LOW", "NORMAL", "HIGH", "CRITICAL")

_JSON_TYPES = {
    param.Integer: (int,),
    param.Number: (int, float),
    param.Boolean: (bool,),
    param.String: (str,),
    param.List: (list,),
    param.Dict: (dict,),
}


_INHERITED_NAME_DOC = param.Parameterized.param["name"].doc


def public_params(model: type[param.Parameterized]) -> dict[str, param.Parameter]:
    """The model's parameters without param's inherited ``name`` (a model may declare its own)."""
    return {k: p for k, p in model.param.objects("existing").items()
            if k != "name" or p.doc != _INHERITED_NAME_DOC}


def _check_type(model: type, key: str, p: param.Parameter, value: Any) -> None:
    """Refuse JSON types param would coerce silently (e.g. True for a Number)."""
    if value is None:
        if not p.allow_None:
            raise InvalidRequest(f"'{key}' must not be null", {"field": key})
        return
    for ptype, allowed in _JSON_TYPES.items():
        if type(p) is ptype or (ptype is param.Number and type(p) is param.Number):
            if isinstance(value, bool) and bool not in allowed:
                raise InvalidRequest(f"'{key}' must be {_type_name(p)}, got a boolean", {"field": key})
            if not isinstance(value, allowed):
                raise InvalidRequest(
                    f"'{key}' must be {_type_name(p)}, got {type(value).__name__}", {"field": key}
                )
            return


def _type_name(p: param.Parameter) -> str:
    return {
        param.Integer: "an integer",
        param.Number: "a number",
        param.Boolean: "a boolean",
        param.String: "a string",
        param.List: "a list",
        param.Dict: "an object",
    }.get(type(p), type(p).__name__)


def build(model: type[M], data: Any, *, allow_extra: bool = False) -> M:
    """Validate ``data`` (decoded JSON) against ``model`` and return an instance.

    Raises :class:`InvalidRequest` naming the field and the allowed values.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InvalidRequest("the request body must be a JSON object")
    fields = public_params(model)
    unknown = sorted(set(data) - set(fields))
    if unknown and not allow_extra:
        raise InvalidRequest(
            f"unknown field(s): {', '.join(unknown)}; allowed: {', '.join(fields)}",
            {"unknown": unknown, "allowed": list(fields)},
        )
    missing = [k for k in required_fields(model) if k not in data]
    if missing:
        raise InvalidRequest(f"missing required field(s): {', '.join(missing)}", {"missing": missing})
    kwargs = {k: v for k, v in data.items() if k in fields}
    for key, value in kwargs.items():
        _check_type(model, key, fields[key], value)
    if "name" in fields:  # param would otherwise fill a declared ``name`` with "Model00042"
        kwargs.setdefault("name", None)
    try:
        return model(**kwargs)
    except (ValueError, TypeError) as exc:
        field = next((k for k in kwargs if f"'{model.__name__}.{k}'" in str(exc)), None)
        message = _readable(str(exc).replace(f"{model.__name__}.", ""))
        raise InvalidRequest(message, {"field": field} if field else {}) from None


_ITEM_TYPES = {"dict": "objects", "str": "strings", "int": "integers", "float": "numbers", "bool": "booleans"}
_ITEM_ERROR = re.compile(r"List parameter '(\w+)' items must be instances of <class '(\w+)'>, not <class '(\w+)'>")


def _readable(message: str) -> str:
    """param's item-type message in JSON words: "'x' items must be objects, got a str"."""
    match = _ITEM_ERROR.search(message)
    if match is None:
        return message
    name, want, got = match.groups()
    return f"'{name}' items must be {_ITEM_TYPES.get(want, want)}, got {_ITEM_TYPES.get(got, got)}"


def json_schema(model: type[param.Parameterized]) -> dict[str, Any]:
    """The JSON schema of a request model, as param emits it, without param's inherited ``name``."""
    props = model.param.schema()
    if "name" not in public_params(model):
        props.pop("name", None)
    for key, spec in props.items():
        spec.pop("title", None)
        if "enum" in spec:  # param writes anyOf[string, string] beside the enum
            spec.pop("anyOf", None)
            spec["type"] = "string" if all(isinstance(v, str) for v in spec["enum"]) else spec.get("type")
            if spec["type"] is None:
                spec.pop("type")
    required = required_fields(model)
    schema: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    if required:
        schema["required"] = required
    if model.__doc__:
        schema["description"] = " ".join(model.__doc__.split())
    return schema


_REQUIRED: set[int] = set()  # ids of required Parameter objects (they take no new attributes)


def required(p: param.Parameter) -> param.Parameter:
    """Mark a parameter as required: ``build`` refuses a body without it."""
    _REQUIRED.add(id(p))
    return p


def required_fields(model: type[param.Parameterized]) -> list[str]:
    return [k for k, p in public_params(model).items() if id(p) in _REQUIRED]


class AdaptiveRange(param.Parameterized):
    """Adaptive scaling bounds: Dask adds and removes workers between them."""

    minimum = required(param.Integer(default=0, bounds=(0, None), doc="Fewest workers."))
    maximum = required(param.Integer(default=1, bounds=(0, None), doc="Most workers."))


class ScaleRequest(param.Parameterized):
    """Scale the cluster to a fixed size, or let it scale adaptively."""

    n_workers = param.Integer(default=None, allow_None=True, bounds=(0, None), doc="Fixed number of workers.")
    adaptive = param.Dict(default=None, allow_None=True, doc="Adaptive bounds: {\"minimum\": a, \"maximum\": b}.")


class PageQuery(param.Parameterized):
    """Pagination of a list endpoint."""

    limit = param.Integer(default=50, bounds=(1, 1000), doc="Items per page (1–1000).")
    offset = param.Integer(default=0, bounds=(0, None), doc="Items to skip.")


SLUG = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
FORMATS = ("csv", "parquet", "json")


class RegisterDatasetRequest(param.Parameterized):
    """Register a dataset by local path, glob of many files, or fsspec URL."""

    source = required(param.String(default="", doc="Path (inside the data roots), glob such as data/*.csv, or URL (s3://, https://)."))
    dataset_id = param.String(default=None, allow_None=True, regex=SLUG, doc="Identifier (letters, digits, _ . -); generated when absent.")
    name = param.String(default=None, allow_None=True, doc="Human name; defaults to the id.")
    description = param.String(default="", doc="What the data is.")
    format = param.Selector(default=None, objects=[None, *FORMATS], allow_None=True, doc="csv, parquet or json; detected from the extension when absent.")
    options = param.Dict(default={}, doc="Reader options: delimiter, header (bool), encoding, columns (list).")


class UploadQuery(param.Parameterized):
    """Query of an upload: the body is the file itself."""

    filename = required(param.String(default="", doc="Original file name; only its extension is used (.csv, .tsv, .parquet, .json, .jsonl)."))
    dataset_id = param.String(default=None, allow_None=True, regex=SLUG, doc="Identifier; generated when absent.")
    name = param.String(default=None, allow_None=True, doc="Human name.")
    description = param.String(default="", doc="What the data is.")
    delimiter = param.String(default=None, allow_None=True, doc="CSV delimiter when not a comma.")


class PartitionRequest(param.Parameterized):
    """Rewrite a dataset as balanced Parquet partitions. n_partitions wins over partition_size_mb."""

    dataset_id = required(param.String(default="", doc="The dataset to partition."))
    partition_size_mb = param.Number(default=None, allow_None=True, bounds=(0, 1_000_000), inclusive_bounds=(False, True), doc="Target size of each partition in MB (default 128).")
    n_partitions = param.Integer(default=None, allow_None=True, bounds=(1, 10_000), doc="Number of partitions; wins when both are given.")


class PreviewQuery(param.Parameterized):
    """How many preview rows to show."""

    preview_rows = param.Integer(default=20, bounds=(0, 1000), doc="Rows of preview (0 for none).")


MIN_CORES = 0.1  # a tenth of a core: the smallest share a reservation may claim
MIN_MEMORY_GB = 0.05  # 50 MB: about the least a Dask task of this service runs in


class JobRequest(param.Parameterized):
    """Submit a job: an operation on a dataset, with its priority and resources."""

    operation = required(param.String(default="", doc="Operation name; see GET /api/processing/operations."))
    dataset_id = required(param.String(default="", doc="The dataset to work on."))
    parameters = param.Dict(default={}, doc="The operation's parameters.")
    priority = param.Selector(default="NORMAL", objects=list(PRIORITIES), doc="LOW, NORMAL, HIGH or CRITICAL.")
    # floors: a reservation of 1e-300 was accepted and let any number of jobs past admission
    max_memory_gb = param.Number(default=None, allow_None=True, bounds=(MIN_MEMORY_GB, None),
                                 doc=f"Memory the job reserves (GB, at least {MIN_MEMORY_GB:g}); "
                                     "default DEFAULT_MAX_MEMORY_GB.")
    max_cores = param.Number(default=None, allow_None=True, bounds=(MIN_CORES, None),
                             doc=f"Cores the job reserves (at least {MIN_CORES:g}); default DEFAULT_MAX_CORES.")
    depends_on = param.List(default=[], item_type=str, bounds=(0, 50),
                            doc="Job ids this job waits for (it runs once they completed, and is cancelled if one "
                                "fails or is cancelled). A dataset_id of '@<job_id>' reads that job's result dataset "
                                "and waits for it too.")
    cache = param.Boolean(default=True, doc="Answer from an earlier completed job with the same operation, "
                                            "parameters and unchanged dataset files (status: cached_from); "
                                            "false computes afresh.")
    notify_url = param.String(default=None, allow_None=True,
                              doc="http(s) URL that receives a signed POST of the job's status when it ends "
                                  "(completed, failed or cancelled); it passes the remote-URL policy "
                                  "(REMOTE_PROTOCOLS, REMOTE_ALLOW_PRIVATE).")


class JobListQuery(param.Parameterized):
    """Filter, order and page the job list (newest first unless sort=oldest)."""

    status = param.List(default=[], item_type=str, doc="Comma-separated statuses: pending, running, completed, failed, cancelled.")
    priority = param.List(default=[], item_type=str, doc="Comma-separated priorities.")
    dataset_id = param.String(default=None, allow_None=True, doc="Only jobs on this dataset.")
    operation = param.String(default=None, allow_None=True, doc="Only jobs of this operation.")
    q = param.String(default=None, allow_None=True, doc="Search job id, dataset, operation, parameters and error "
                                                        "text: words (at most 200 characters), each a prefix, all required.")
    created_after = param.String(default=None, allow_None=True, doc="Only jobs created at or after this ISO-8601 time.")
    created_before = param.String(default=None, allow_None=True, doc="Only jobs created before this ISO-8601 time.")
    sort = param.Selector(default="newest", objects=["newest", "oldest"], doc="Submission order: newest or oldest first.")
    limit = param.Integer(default=50, bounds=(1, 1000), doc="Items per page (1–1000).")
    offset = param.Integer(default=0, bounds=(0, None), doc="Items to skip.")


class ResultQuery(param.Parameterized):
    """Page through a job's result rows."""

    offset = param.Integer(default=0, bounds=(0, None), doc="Rows to skip.")
    limit = param.Integer(default=100, bounds=(1, 10_000), doc="Rows to return (1–10000).")
