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

import codecs
import functools
import io
import json
import os
import re
from dataclasses import dataclass, replace
from typing import Any, BinaryIO, Sequence

import dask.dataframe as dd
import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.json as pa_json
import pyarrow.parquet as pq
from dask.utils import parse_bytes
from fsspec.compression import compr
from fsspec.utils import infer_compression, read_block

from .errors import InvalidRequest, NotFound, ProcessingError, Unprocessable
from .jsonsafe import json_safe
from .sources import GLOB, shorten
from .sources import RemotePolicy, check_url, is_url, resolve_local, resolve_source

__all__ = ["RemotePolicy", "check_url", "is_url", "resolve_local", "resolve_source", "detect_format",
           "list_files", "inspect", "preview", "read_ddf"]

SUPPORTED_FORMATS = ("csv", "parquet", "json")
READER_OPTIONS = ("delimiter", "header", "encoding", "columns")
SAMPLE_BYTES = 4 * 2**20  # bytes sampled (across files) by inspect for schema and row estimate
PREVIEW_BYTES = 1 * 2**20
MAX_SAMPLED_FILES = 32
_MIN_FILE_SAMPLE = 64 * 2**10  # a smaller head may not hold one whole line
JSON_ARRAY_MAX_BYTES = 256 * 2**20  # a JSON array is read whole, so one file may not exceed this
# pyarrow's JSON reader crashed the process (SIGSEGV) on objects nested 50,000 deep and
# Python's json raised RecursionError: tables never need more than a few levels
MAX_JSON_DEPTH = 64
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_BRACKET_STEP = np.zeros(256, dtype=np.int8)
_BRACKET_STEP[[ord("["), ord("{")]] = 1
_BRACKET_STEP[[ord("]"), ord("}")]] = -1

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


def _size(path: str) -> int:
    fs, inner = fsspec.core.url_to_fs(path)
    return int(fs.size(inner) or 0)


# --------------------------------------------------------------------------- options

@dataclass(frozen=True)
class ReaderOptions:
    """Validated reader options; ``delimiter`` defaults to tab for ``.tsv`` names."""

    delimiter: str = ","
    header: bool = True
    encoding: str = "utf-8"
    columns: tuple[str, ...] | None = None


def reader_options(fmt: str, options: dict[str, Any] | None, name: str = "") -> ReaderOptions:
    """Validated options for ``fmt`` (``name``, a file, picks the TSV default)."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(READER_OPTIONS))
    if unknown:
        raise InvalidRequest(f"unknown reader option(s): {shorten(', '.join(unknown))}; allowed: "
                             f"{', '.join(READER_OPTIONS)}", {"unknown": [shorten(u) for u in unknown[:20]]})
    if fmt != "csv":
        given = [k for k in ("delimiter", "header", "encoding") if options.get(k) is not None]
        if given:
            raise InvalidRequest(f"option(s) {', '.join(given)} apply to csv only, not {fmt}")
    tsv = name.lower().removesuffix(".gz").endswith((".tsv", ".tab"))
    opts = ReaderOptions(delimiter="\t" if tsv else ",")
    if options.get("delimiter") is not None:
        opts = replace(opts, delimiter=_check_delimiter(options["delimiter"]))
    if options.get("header") is not None:
        if not isinstance(options["header"], bool):
            raise InvalidRequest("option 'header' must be true or false")
        opts = replace(opts, header=options["header"])
    if options.get("encoding") is not None:
        opts = replace(opts, encoding=_check_encoding(options["encoding"]))
    if options.get("columns") is not None:
        opts = replace(opts, columns=_check_columns(options["columns"]))
    return opts


def _check_delimiter(value: Any) -> str:
    value = "\t" if value in ("tab", "\\t") else value
    if not isinstance(value, str) or len(value) != 1 or value in "\r\n\"":
        raise InvalidRequest("option 'delimiter' must be a single character (e.g. ',', ';', '|', "
                             "'\\t' or 'tab'), not a quote or line break")
    return value


def _check_encoding(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > 64:
        raise InvalidRequest("option 'encoding' must be the name of a text encoding (e.g. utf-8, latin-1)")
    try:
        info = codecs.lookup(value)
    except LookupError:
        raise InvalidRequest(f"unknown encoding {value!r} (e.g. utf-8, latin-1)") from None
    # rot13, base64, zlib… are codecs too, but not bytes-to-text: pandas raised LookupError (a 500)
    if not getattr(info, "_is_text_encoding", True):
        raise InvalidRequest(f"{value!r} is not a text encoding (e.g. utf-8, latin-1)")
    return info.name


MAX_COLUMNS = 10_000


def _check_columns(value: Any) -> tuple[str, ...]:
    if (not isinstance(value, (list, tuple)) or not value or len(value) > MAX_COLUMNS
            or not all(isinstance(c, str) and c and len(c) <= 1024 for c in value)
            or len(set(value)) != len(value)):
        raise InvalidRequest(f"option 'columns' must be a non-empty list of at most {MAX_COLUMNS} distinct "
                             "column names (each at most 1024 characters)")
    return tuple(value)


def _select(frame: pd.DataFrame, columns: tuple[str, ...] | None) -> pd.DataFrame:
    if columns is None:
        return frame
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InvalidRequest(f"unknown column(s): {shorten(', '.join(missing))}; available: "
                             f"{shorten(', '.join(map(str, frame.columns)), 1000)}", {"unknown": missing[:100]})
    return frame[list(columns)]


# --------------------------------------------------------------------------- sampling

def _read_head(path: str, budget: int) -> tuple[bytes, int, bool]:
    """Up to ``budget`` decompressed bytes, the raw bytes consumed, and whether that was all."""
    compression = infer_compression(path)
    if compression and compression not in compr:
        raise InvalidRequest(f"{compression} compression is not available for {path}")
    with fsspec.open(path, "rb") as raw:
        stream: BinaryIO = compr[compression](raw, mode="rb") if compression else raw
        try:
            data = stream.read(budget + 1)
        except OSError as exc:  # e.g. a truncated or fake .gz
            raise Unprocessable(f"cannot read {path}: {exc}", {"file": path}) from None
        return data[:budget], raw.tell(), len(data) <= budget


def _whole_lines(data: bytes, path: str) -> bytes:
    cut = data.rfind(b"\n")
    if cut < 0:
        raise Unprocessable(f"no line break in the first {len(data)} bytes of {path}",
                            {"file": path})
    return data[: cut + 1]


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


def _json_kind(path: str) -> str:
    """``array`` for a ``[ {...}, ... ]`` document, ``lines`` for one object per line."""
    head, _, _ = _read_head(path, 4096)
    first = head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    if first == b"[":
        return "array"
    if first == b"{":
        return "lines"
    raise Unprocessable(f"{path} is neither JSON lines nor a JSON array of objects"
                        + (" (it is empty)" if not first else ""), {"file": path})


def _array_as_lines(path: str) -> bytes:
    """A JSON array file re-encoded as JSON lines, so one parser serves both kinds."""
    size = _size(path)
    if size > JSON_ARRAY_MAX_BYTES:
        raise InvalidRequest(f"{path} is a JSON array of {size} bytes; arrays are read whole and "
                             f"limited to {JSON_ARRAY_MAX_BYTES // 2**20} MB: convert it to JSON "
                             "lines or Parquet", {"file": path, "limit": JSON_ARRAY_MAX_BYTES})
    with fsspec.open(path, "rb", compression="infer") as f:
        data = f.read()
    try:
        records = json.loads(data)
    except RecursionError:
        raise Unprocessable(f"{path} nests arrays or objects too deeply to read (at most "
                            f"{MAX_JSON_DEPTH} levels)", {"file": path, "limit": MAX_JSON_DEPTH}) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise Unprocessable(f"cannot read {path} as JSON: {exc}", {"file": path}) from None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise Unprocessable(f"{path} must hold a JSON array of objects", {"file": path})
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def json_depth(data: bytes) -> int:
    """The deepest nesting of arrays and objects in JSON text (brackets inside strings ignored)."""
    codes = np.frombuffer(_JSON_STRING.sub(b'""', data), dtype=np.uint8)
    if not codes.size:
        return 0
    return int(np.cumsum(_BRACKET_STEP[codes], dtype=np.int64).max(initial=0))


def _openers_per_line(data: bytes) -> int:
    """Most ``[`` and ``{`` on one line: a cheap upper bound of a JSON-lines text's depth."""
    lines = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
    if data.startswith(b"{") and data.count(b"\n{") + 1 == lines:
        # every line opens an object, so no line holds more than the openers beyond one per line
        bound = data.count(b"{") + data.count(b"[") - lines + 1
        if bound <= MAX_JSON_DEPTH:
            return bound
    codes = np.frombuffer(data, dtype=np.uint8)
    opens = np.flatnonzero((codes == ord("[")) | (codes == ord("{")))  # where each opener is
    if opens.size <= MAX_JSON_DEPTH:
        return 0
    # the line of each opener, counted: no per-byte sum (that cost 3x the parse and 8 bytes a byte)
    line_of = np.searchsorted(np.flatnonzero(codes == ord("\n")), opens)
    return int(np.bincount(line_of).max())


def _check_depth(data: bytes, path: str) -> None:
    """Unprocessable when JSON lines nest deeper than ``MAX_JSON_DEPTH``, before pyarrow sees them."""
    # the exact scan costs more than parsing; the bound (a tenth of it) clears ordinary tables
    if _openers_per_line(data) <= MAX_JSON_DEPTH:
        return
    depth = json_depth(data)
    if depth > MAX_JSON_DEPTH:
        raise Unprocessable(f"{path} nests arrays or objects {depth} levels deep; at most "
                            f"{MAX_JSON_DEPTH} levels are read", {"file": path, "limit": MAX_JSON_DEPTH})


def _json_table(data: bytes, path: str, schema: pa.Schema | None) -> pa.Table:
    _check_depth(data, path)
    parse = pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore") \
        if schema is not None else None
    try:
        return pa_json.read_json(io.BytesIO(data), parse_options=parse)
    except pa.ArrowException as exc:
        raise Unprocessable(f"cannot read {path} as JSON: {exc}", {"file": path}) from None


def _json_schema(table: pa.Table, columns: tuple[str, ...] | None) -> pa.Schema:
    """Fix the inferred types: date-like text and all-null fields stay text, as in pandas."""
    fields = []
    for field in table.schema:
        if pa.types.is_timestamp(field.type) or pa.types.is_null(field.type):
            field = field.with_type(pa.string())
        fields.append(field)
    schema = pa.schema(fields)
    if columns is not None:
        _select(schema.empty_table().to_pandas(), columns)
        schema = pa.schema([schema.field(c) for c in columns])
    return schema


def _json_plan(path: str, opts: ReaderOptions, budget: int) -> tuple[str, pa.Schema]:
    """The JSON kind of ``path`` and the explicit schema every block is read with."""
    kind = _json_kind(path)
    if kind == "array":
        data = _array_as_lines(path)
    else:
        data, _, complete = _read_head(path, budget)
        data = data if complete else _whole_lines(data, path)
    return kind, _json_schema(_json_table(data, path, None), opts.columns)


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
    plan = _json_plan(files[0], opts, budget) if fmt == "json" else None
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
        frame = _select(frame, opts.columns)
    return _Sample(frame, rows)


def _head_frame(path: str, fmt: str, opts: ReaderOptions, budget: int,
                plan: tuple[str, pa.Schema] | None) -> tuple[pd.DataFrame, int, bool, int]:
    """The parsed head of one file, the stored bytes it covers, whether it is the whole
    file, and the decompressed bytes parsed."""
    if plan is not None and plan[0] == "array":
        data = _array_as_lines(path)
        return _json_table(data, path, plan[1]).to_pandas(), _size(path), True, len(data)
    data, raw_used, complete = _read_head(path, budget)
    if not complete:
        whole = _whole_lines(data, path)
        raw_used = round(raw_used * len(whole) / max(len(data), 1))
        data = whole
    if plan is not None:
        return _json_table(data, path, plan[1]).to_pandas(), raw_used, complete, len(data)
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
    return _select(schema.empty_table().to_pandas(), opts.columns)


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
    sizes = [_size(f) for f in files]
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
        frame = _sample(files, [_size(f) for f in files], fmt, opts, PREVIEW_BYTES, n).frame
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
        opts = replace(opts, columns=_check_columns(list(columns)))
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
    kwargs = _csv_kwargs(opts)
    head = _sample(files[:1], [_size(files[0])], "csv", replace(opts, columns=None),
                   PREVIEW_BYTES).frame
    if not opts.header:
        kwargs["names"] = list(head.columns)
    compressed = any(infer_compression(f) for f in files)
    # pandas' pyarrow engine was measurably faster; it only takes UTF-8 input.
    engine = {"engine": "pyarrow"} if opts.encoding == "utf-8" else {}
    ddf = dd.read_csv(files, blocksize=None if compressed else block, sample=SAMPLE_BYTES,
                      **engine, **kwargs)
    if opts.columns:
        _select(head, opts.columns)
        ddf = ddf[list(opts.columns)]
    return ddf


def _read_parquet(files: list[str], opts: ReaderOptions, block: int) -> dd.DataFrame:
    _empty_frame(_parquet_footer(files[0])[0], opts)  # checks the file and the column names
    columns = list(opts.columns) if opts.columns else None
    return dd.read_parquet(files, columns=columns, blocksize=block)


def _read_json(files: list[str], opts: ReaderOptions, block: int) -> dd.DataFrame:
    kind, schema = _json_plan(files[0], opts, PREVIEW_BYTES)
    parts: list[tuple[str, str, int, int | None]] = []
    for path in files:
        size = _size(path)
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
        data = _array_as_lines(path)
    elif length is None:
        with fsspec.open(path, "rb", compression="infer") as f:
            data = f.read()
    else:
        with fsspec.open(path, "rb") as f:
            data = read_block(f, offset, length, delimiter=b"\n")
    if not data.strip():
        return schema.empty_table().to_pandas()
    return _json_table(data, path, schema).to_pandas()
