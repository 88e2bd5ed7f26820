"""Find, check, inspect and read tabular data (CSV/TSV, Parquet, JSON) for Dask.

Pure data-layer functions: no web server, no SQLite. Every failure is a domain
error from :mod:`app.errors` carrying the underlying reader's message.

Type mapping is shared by every entry point so that ``inspect``, ``preview`` and
``read_ddf`` agree: CSV goes through pandas, Parquet through its Arrow schema, and
JSON (lines or arrays) through ``pyarrow.json`` with one explicit schema taken from
the first file. Text that looks like a date stays text in CSV and JSON, as pandas
leaves it; parse it explicitly downstream.
"""
from __future__ import annotations

import functools
import io
import json
import os
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Sequence

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from dask.utils import parse_bytes
from fsspec.utils import infer_compression, read_block

from .errors import InvalidRequest, NotFound, ProcessingError, Unprocessable
from .jsonsafe import json_safe
from .sources import GLOB
from .sources import RemotePolicy, check_url, is_url, resolve_local, resolve_source
from .json_text import array_as_lines, file_size, json_plan, json_table, read_head, whole_lines
from .reader_options import ReaderOptions, check_columns, reader_options, select_columns

if TYPE_CHECKING:
    import dask.dataframe as dd

# dask.dataframe is imported by the three functions that build a Dask DataFrame, not here:
# 0.6 s of CPU that every process importing the operations (the server, each worker) paid
# at start-up whether it read through Dask or not (the kernels read with DuckDB and pyarrow)

__all__ = ["RemotePolicy", "check_url", "is_url", "resolve_local", "resolve_source", "detect_format",
           "list_files", "inspect", "preview", "read_ddf"]

SUPPORTED_FORMATS = ("csv", "parquet", "json")
SAMPLE_BYTES = 4 * 2**20  # bytes sampled (across files) by inspect for schema and row estimate
PREVIEW_BYTES = 1 * 2**20
MAX_SAMPLED_FILES = 32
_MIN_FILE_SAMPLE = 64 * 2**10  # a smaller head may not hold one whole line

_FORMAT_NAMES = {"csv": "csv", "tsv": "csv", "parquet": "parquet", "pq": "parquet",
                 "json": "json", "jsonl": "json", "ndjson": "json"}
_SUFFIX_FORMATS = {".csv": "csv", ".tsv": "csv", ".tab": "csv", ".parquet": "parquet",
                   ".pq": "parquet", ".parq": "parquet", ".json": "json", ".jsonl": "json",
                   ".ndjson": "json"}
_COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".zip")
_SUPPORTED_TEXT = (".csv, .tsv, .csv.gz, .parquet, .pq, a directory of Parquet files, "
                   ".json (array or lines), .jsonl, .ndjson")
_READ_ERRORS = (ValueError, OSError, pa.ArrowException, json.JSONDecodeError, pd.errors.ParserError)


# --------------------------------------------------------------------------- formats and files

def detect_format(source: str, override: str | None = None) -> str:
    """``csv``, ``parquet`` or ``json`` from ``override`` or the file name (or folder contents)."""
    if override is not None:
        fmt = _FORMAT_NAMES.get(str(override).strip().lower())
        if fmt is None:
            raise InvalidRequest(f"unknown format {override!r}; supported formats: "
                                 f"{', '.join(SUPPORTED_FORMATS)} ({_SUPPORTED_TEXT})",
                                 {"supported": list(SUPPORTED_FORMATS)})
        return fmt
    fmt = _format_of_name(source)
    if fmt is None and not GLOB.search(source):
        fs, path = fsspec.core.url_to_fs(source)
        if fs.isdir(path):
            found = {_format_of_name(f) for f in fs.find(path) if _is_visible(f)} - {None}
            fmt = found.pop() if len(found) == 1 else None
    if fmt is None:
        raise InvalidRequest(f"cannot tell the format of {source!r}; supported: {_SUPPORTED_TEXT}; "
                             f"or pass a format ({', '.join(SUPPORTED_FORMATS)})",
                             {"supported": list(SUPPORTED_FORMATS)})
    return fmt


def _format_of_name(name: str) -> str | None:
    name = name.rstrip("/").lower()
    for suffix in _COMPRESSION_SUFFIXES:
        name = name.removesuffix(suffix)
    return _SUFFIX_FORMATS.get(os.path.splitext(name)[1])


def _is_visible(path: str) -> bool:
    """Skip ``_SUCCESS``, ``_metadata``, ``.crc`` and other bookkeeping files."""
    return not os.path.basename(path.rstrip("/")).startswith(("_", "."))


def list_files(source: str, fmt: str) -> list[str]:
    """The data files behind ``source`` (file, glob or directory), sorted; NotFound if none."""
    fs, path = fsspec.core.url_to_fs(source)
    if GLOB.search(path):
        matches = fs.glob(path, detail=True)
    else:
        try:  # not exists(): remote filesystems answer False for a host they cannot reach
            matches = {path: fs.info(path)}
        except FileNotFoundError as exc:
            cause = exc.__cause__
            missing = cause is None or isinstance(cause, FileNotFoundError) or getattr(cause, "status", None) == 404
            if not missing:  # e.g. connection refused, TLS, 403 from the remote server
                raise Unprocessable(f"could not read {source!r}: {type(cause).__name__}: {cause}",
                                    {"path": source}) from None
            raise NotFound(f"{source!r} does not exist", {"path": source}) from None
    files: list[str] = []
    for name, info in matches.items():
        if info.get("type") == "directory":
            files += [f for f in fs.find(name) if _is_visible(f) and _format_of_name(f) == fmt]
        elif _is_visible(name):
            files.append(name)
    if not files:
        raise NotFound(f"no {fmt} files found at {source!r}", {"path": source})
    if is_url(source):
        files = [fs.unstrip_protocol(f) for f in files]
    return sorted(files)


# --------------------------------------------------------------------------- sampling

def _csv_kwargs(opts: ReaderOptions) -> dict[str, Any]:
    return {"sep": opts.delimiter, "header": 0 if opts.header else None, "encoding": opts.encoding}


def _parse_csv(data: bytes, path: str, opts: ReaderOptions) -> pd.DataFrame:
    try:
        frame = pd.read_csv(io.BytesIO(data), **_csv_kwargs(opts))
    except (*_READ_ERRORS, pd.errors.EmptyDataError) as exc:
        raise Unprocessable(f"cannot read {path} as CSV: {exc}", {"file": path}) from None
    if not opts.header:
        frame.columns = [f"column_{i + 1}" for i in range(frame.shape[1])]
    return frame



@dataclass
class _Sample:
    frame: pd.DataFrame
    rows: int


def _sample(files: list[str], sizes: list[int], fmt: str, opts: ReaderOptions, budget: int,
            want_rows: int | None = None) -> _Sample:
    """Parse the heads of the first files within ``budget`` bytes and estimate the row count.

    Files read whole count exactly; the rest are estimated at the sampled rows per
    stored byte (compressed bytes for compressed files).
    """
    plan = json_plan(files[0], opts, budget) if fmt == "json" else None
    frames, exact, sampled_rows, unread = [], 0, 0, 0
    for i, (path, size) in enumerate(zip(files, sizes)):
        enough = want_rows is not None and sum(map(len, frames)) >= want_rows
        if (i and budget < _MIN_FILE_SAMPLE) or i >= MAX_SAMPLED_FILES or enough:
            unread += size
            continue
        frame, consumed, complete, used = _head_frame(path, fmt, opts, budget, plan)
        frames.append(frame)
        budget -= max(used, 1)
        if complete:
            exact += len(frame)
        else:
            sampled_rows += len(frame)
            unread += max(size - consumed, 0)
    rate = (exact + sampled_rows) / max(sum(sizes) - unread, 1)
    rows = exact + sampled_rows + round(unread * rate)
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    if fmt == "csv":
        frame = select_columns(frame, opts.columns)
    return _Sample(frame, rows)


def _head_frame(path: str, fmt: str, opts: ReaderOptions, budget: int,
                plan: tuple[str, pa.Schema] | None) -> tuple[pd.DataFrame, int, bool, int]:
    """The parsed head of one file, the stored bytes it covers, whether it is the whole
    file, and the decompressed bytes parsed."""
    if plan is not None and plan[0] == "array":
        data = array_as_lines(path)
        return json_table(data, path, plan[1]).to_pandas(), file_size(path), True, len(data)
    data, raw_used, complete = read_head(path, budget)
    if not complete:
        whole = whole_lines(data, path)
        raw_used = round(raw_used * len(whole) / max(len(data), 1))
        data = whole
    if plan is not None:
        return json_table(data, path, plan[1]).to_pandas(), raw_used, complete, len(data)
    return _parse_csv(data, path, opts), raw_used, complete, len(data)


def _parquet_footer(path: str) -> tuple[pa.Schema, int]:
    """Arrow schema and row count of one Parquet file, from its footer only."""
    try:
        with fsspec.open(path, "rb") as f:
            pf = pq.ParquetFile(f)
            return pf.schema_arrow, pf.metadata.num_rows
    except _READ_ERRORS as exc:
        raise Unprocessable(f"cannot read {path} as Parquet: {exc}", {"file": path}) from None


def _empty_frame(schema: pa.Schema, opts: ReaderOptions) -> pd.DataFrame:
    """A zero-row frame typed as pandas would read the file (pandas index columns restored)."""
    return select_columns(schema.empty_table().to_pandas(), opts.columns)


# --------------------------------------------------------------------------- public readers

def inspect(source: str, fmt: str, options: dict[str, Any] | None = None,
            allow_empty: bool = False) -> dict[str, Any]:
    """Format, files, total size, schema and row count of ``source`` without reading it all.

    Parquet rows are exact (from the footers); CSV and JSON lines are estimated from
    the first ``SAMPLE_BYTES`` (exact when every file fits in the sample). A source with
    no rows is refused unless ``allow_empty`` (a job's result may rightly be empty).
    """
    files = list_files(source, fmt)
    opts = reader_options(fmt, options, files[0])
    sizes = [file_size(f) for f in files]
    if fmt == "parquet":
        footers = [_parquet_footer(f) for f in files]
        frame = _empty_frame(footers[0][0], opts)
        rows = sum(num_rows for _, num_rows in footers)
    else:
        sample = _sample(files, sizes, fmt, opts, SAMPLE_BYTES)
        frame, rows = sample.frame, sample.rows
        if frame.shape[1] == 0:
            raise Unprocessable(f"{source!r} has no columns", {"path": source})
    if rows == 0 and not allow_empty:
        raise Unprocessable(f"{source!r} has no rows", {"path": source})
    return {
        "format": fmt,
        "files": files,
        "file_count": len(files),
        "size_bytes": sum(sizes),
        "schema": [{"name": str(c), "dtype": str(t)} for c, t in frame.dtypes.items()],
        "estimated_rows": int(rows),
    }


def preview(source: str, fmt: str, options: dict[str, Any] | None = None,
            n: int = 20) -> list[dict[str, Any]]:
    """The first ``n`` rows as JSON-safe records (NaN → None, timestamps → ISO strings)."""
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 10_000:
        raise InvalidRequest("n must be an integer between 1 and 10000")
    files = list_files(source, fmt)
    opts = reader_options(fmt, options, files[0])
    if fmt == "parquet":
        frame = _parquet_head(files, opts, n)
    else:
        frame = _sample(files, [file_size(f) for f in files], fmt, opts, PREVIEW_BYTES, n).frame
    return records(frame.head(n))


def _parquet_head(files: list[str], opts: ReaderOptions, n: int) -> pd.DataFrame:
    columns = list(opts.columns) if opts.columns else None
    frames = [_empty_frame(_parquet_footer(files[0])[0], opts)]  # also checks the column names
    for path in files:
        try:
            with fsspec.open(path, "rb") as f:
                pf = pq.ParquetFile(f)
                batch = next(pf.iter_batches(batch_size=n, columns=columns), None)
                metadata = pf.schema_arrow.metadata
        except _READ_ERRORS as exc:
            raise Unprocessable(f"cannot read {path} as Parquet: {exc}", {"file": path}) from None
        if batch is not None:
            table = pa.Table.from_batches([batch]).replace_schema_metadata(metadata)
            frames.append(table.to_pandas())
        if sum(map(len, frames)) >= n:
            break
    return pd.concat(frames) if len(frames) > 1 else frames[0]


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """``frame`` as a list of dicts holding only JSON-safe Python values."""
    names = [str(c) for c in frame.columns]
    return [dict(zip(names, map(json_value, row)))
            for row in frame.itertuples(index=False, name=None)]


json_value = functools.partial(json_safe, inf_as_text=True)  # a preview shows an infinity as text


def read_ddf(source: str, fmt: str, options: dict[str, Any] | None = None,
             columns: Sequence[str] | None = None, blocksize: str | int = "64MB") -> dd.DataFrame:
    """A lazy Dask DataFrame over ``source``, read in chunks of about ``blocksize``.

    Plain CSV and JSON-lines files are split into byte blocks; compressed files and
    JSON arrays are one partition each; Parquet is split by row groups.
    """
    files = list_files(source, fmt)
    opts = reader_options(fmt, options, files[0])
    if columns is not None:
        opts = replace(opts, columns=check_columns(list(columns)))
    block = parse_bytes(blocksize) if isinstance(blocksize, str) else int(blocksize)
    if block <= 0:
        raise InvalidRequest("blocksize must be positive")
    try:
        if fmt == "csv":
            return _read_csv(files, opts, block)
        if fmt == "parquet":
            return _read_parquet(files, opts, block)
        return _read_json(files, opts, block)
    except ProcessingError:
        raise
    except FileNotFoundError as exc:
        raise NotFound(f"a file behind {source!r} disappeared: {exc}") from None
    except (*_READ_ERRORS, pd.errors.EmptyDataError) as exc:
        raise Unprocessable(f"cannot read {source!r} as {fmt}: {exc}", {"path": source}) from None


def _read_csv(files: list[str], opts: ReaderOptions, block: int) -> dd.DataFrame:
    import dask.dataframe as dd

    kwargs = _csv_kwargs(opts)
    head = _sample(files[:1], [file_size(files[0])], "csv", replace(opts, columns=None),
                   PREVIEW_BYTES).frame
    if not opts.header:
        kwargs["names"] = list(head.columns)
    compressed = any(infer_compression(f) for f in files)
    # pandas' pyarrow engine was measurably faster; it only takes UTF-8 input.
    engine = {"engine": "pyarrow"} if opts.encoding == "utf-8" else {}
    ddf = dd.read_csv(files, blocksize=None if compressed else block, sample=SAMPLE_BYTES,
                      **engine, **kwargs)
    if opts.columns:
        select_columns(head, opts.columns)
        ddf = ddf[list(opts.columns)]
    return ddf


def _read_parquet(files: list[str], opts: ReaderOptions, block: int) -> dd.DataFrame:
    import dask.dataframe as dd

    _empty_frame(_parquet_footer(files[0])[0], opts)  # checks the file and the column names
    columns = list(opts.columns) if opts.columns else None
    return dd.read_parquet(files, columns=columns, blocksize=block)


def _read_json(files: list[str], opts: ReaderOptions, block: int) -> dd.DataFrame:
    import dask.dataframe as dd

    kind, schema = json_plan(files[0], opts, PREVIEW_BYTES)
    parts: list[tuple[str, str, int, int | None]] = []
    for path in files:
        size = file_size(path)
        if kind == "array" or infer_compression(path) or size <= block:
            parts.append((path, kind, 0, None))
        else:
            parts += [(path, kind, offset, block) for offset in range(0, size, block)]
    meta = schema.empty_table().to_pandas()
    return dd.from_map(_json_part, parts, args=[schema], meta=meta, label="read-json",
                       enforce_metadata=False)


def _json_part(part: tuple[str, str, int, int | None], schema: pa.Schema) -> pd.DataFrame:
    """One JSON partition: a whole file, or the lines starting inside one byte block."""
    path, kind, offset, length = part
    if kind == "array":
        data = array_as_lines(path)
    elif length is None:
        with fsspec.open(path, "rb", compression="infer") as f:
            data = f.read()
    else:
        with fsspec.open(path, "rb") as f:
            data = read_block(f, offset, length, delimiter=b"\n")
    if not data.strip():
        return schema.empty_table().to_pandas()
    return json_table(data, path, schema).to_pandas()
