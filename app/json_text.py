"""JSON text for the readers: lines or an array, the nesting guard, and Arrow tables
typed by one explicit schema (the same for the sample, the preview and every block)."""
from __future__ import annotations

import io
import json
import re
from typing import BinaryIO

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.json as pa_json
from fsspec.compression import compr
from fsspec.utils import infer_compression

from .errors import InvalidRequest, Unprocessable
from .reader_options import ReaderOptions, select_columns

JSON_ARRAY_MAX_BYTES = 256 * 2**20  # a JSON array is read whole, so one file may not exceed this
# pyarrow's JSON reader crashed the process (SIGSEGV) on objects nested 50,000 deep and
# Python's json raised RecursionError: tables never need more than a few levels
MAX_JSON_DEPTH = 64
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_BRACKET_STEP = np.zeros(256, dtype=np.int8)
_BRACKET_STEP[[ord("["), ord("{")]] = 1
_BRACKET_STEP[[ord("]"), ord("}")]] = -1


def file_size(path: str) -> int:
    fs, inner = fsspec.core.url_to_fs(path)
    return int(fs.size(inner) or 0)


def read_head(path: str, budget: int) -> tuple[bytes, int, bool]:
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


def whole_lines(data: bytes, path: str) -> bytes:
    cut = data.rfind(b"\n")
    if cut < 0:
        raise Unprocessable(f"no line break in the first {len(data)} bytes of {path}",
                            {"file": path})
    return data[: cut + 1]


def json_kind(path: str) -> str:
    """``array`` for a ``[ {...}, ... ]`` document, ``lines`` for one object per line."""
    head, _, _ = read_head(path, 4096)
    first = head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    if first == b"[":
        return "array"
    if first == b"{":
        return "lines"
    raise Unprocessable(f"{path} is neither JSON lines nor a JSON array of objects"
                        + (" (it is empty)" if not first else ""), {"file": path})


def array_as_lines(path: str) -> bytes:
    """A JSON array file re-encoded as JSON lines, so one parser serves both kinds."""
    size = file_size(path)
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


def openers_per_line(data: bytes) -> int:
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


def check_depth(data: bytes, path: str) -> None:
    """Unprocessable when JSON lines nest deeper than ``MAX_JSON_DEPTH``, before pyarrow sees them."""
    # the exact scan costs more than parsing; the bound (a tenth of it) clears ordinary tables
    if openers_per_line(data) <= MAX_JSON_DEPTH:
        return
    depth = json_depth(data)
    if depth > MAX_JSON_DEPTH:
        raise Unprocessable(f"{path} nests arrays or objects {depth} levels deep; at most "
                            f"{MAX_JSON_DEPTH} levels are read", {"file": path, "limit": MAX_JSON_DEPTH})


def json_table(data: bytes, path: str, schema: pa.Schema | None) -> pa.Table:
    check_depth(data, path)
    parse = pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore") \
        if schema is not None else None
    try:
        return pa_json.read_json(io.BytesIO(data), parse_options=parse)
    except pa.ArrowException as exc:
        raise Unprocessable(f"cannot read {path} as JSON: {exc}", {"file": path}) from None


def json_schema(table: pa.Table, columns: tuple[str, ...] | None) -> pa.Schema:
    """Fix the inferred types: date-like text and all-null fields stay text, as in pandas."""
    fields = []
    for field in table.schema:
        if pa.types.is_timestamp(field.type) or pa.types.is_null(field.type):
            field = field.with_type(pa.string())
        fields.append(field)
    schema = pa.schema(fields)
    if columns is not None:
        select_columns(schema.empty_table().to_pandas(), columns)
        schema = pa.schema([schema.field(c) for c in columns])
    return schema


def json_plan(path: str, opts: ReaderOptions, budget: int) -> tuple[str, pa.Schema]:
    """The JSON kind of ``path`` and the explicit schema every block is read with."""
    kind = json_kind(path)
    if kind == "array":
        data = array_as_lines(path)
    else:
        data, _, complete = read_head(path, budget)
        data = data if complete else whole_lines(data, path)
    return kind, json_schema(json_table(data, path, None), opts.columns)
