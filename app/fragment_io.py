"""Reading one fragment of a dataset on a worker: a CSV byte range or file to Arrow (pyarrow,
typed as registered, pandas' null markers), a JSON-lines file or range as a DuckDB relation,
a range of Parquet row groups to Arrow. ``app.kernels`` makes them the view ``frag``. And
the Parquet writing options of the files jobs write (:func:`dictionary_columns`)."""
from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

if TYPE_CHECKING:
    from .kernels import Fragment

NULL_VALUES = ["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
               "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"]  # pandas' defaults


def dictionary_columns(schema: pa.Schema) -> list[str]:
    """The columns worth a Parquet dictionary: text and bytes. pyarrow tries one for every
    column by default, and a float column of distinct values only gives it up after
    building it: a filter's 143k rows of 5 columns took 56 ms to write, 25 ms with
    dictionaries for the 3 text columns only, and the file was 18 % smaller."""
    return [f.name for f in schema
            if pa.types.is_string(f.type) or pa.types.is_large_string(f.type) or pa.types.is_binary(f.type)
            or pa.types.is_large_binary(f.type) or pa.types.is_dictionary(f.type)]


def arrow_of(frag: "Fragment", columns: list[str]) -> pa.Table:
    if frag.fmt == "parquet":
        return pq.ParquetFile(frag.path).read_row_groups(list(frag.row_groups or ()), columns=columns or None)
    if frag.fmt == "csv":
        return csv_table(frag, columns)
    return json_lines(frag, columns)


_DUCK_TYPES = {"int64": "BIGINT", "Int64": "BIGINT", "float64": "DOUBLE", "Float64": "DOUBLE", "bool": "BOOLEAN",
               "boolean": "BOOLEAN"}


def json_relation(cur: duckdb.DuckDBPyConnection, frag: "Fragment", columns: list[str]) -> Any:
    """A JSON-lines file or byte range as a DuckDB relation of ``columns``, typed as registered.

    DuckDB's reader (several times pyarrow's speed) reads the file itself, or a byte range
    from memory; fields not asked for are skipped. Text that does not fit a column's
    type is an error naming the record, which ``run_fragment`` reports with the file.
    """
    from dask.bytes.core import read_block

    names = columns or list(frag.types)
    types = {c: _DUCK_TYPES.get(frag.types.get(c, ""), "VARCHAR") for c in names}
    # (DuckDB refuses JSON nested over 128 levels with an error of its own: no depth scan here)
    if frag.length is None:
        return cur.read_json(frag.path, format="newline_delimited", columns=types)
    with open(frag.path, "rb") as f:
        data = read_block(f, frag.offset, frag.length, delimiter=b"\n")
    if not data.strip():
        from .kernels import ident

        return cur.sql("SELECT " + ", ".join(f"NULL::{t} AS {ident(c)}" for c, t in types.items()) + " LIMIT 0")
    return cur.read_json(io.BytesIO(data), format="newline_delimited", columns=types)


def json_lines(frag: "Fragment", columns: list[str]) -> pa.Table:
    """A JSON-lines file or byte range straight to Arrow, with the schema the dataset reads with."""
    from dask.bytes.core import read_block

    from .json_text import json_plan, json_table
    from .reader_options import reader_options

    _, schema = json_plan(frag.path, reader_options("json", frag.options, frag.path), 1 << 20)
    with open(frag.path, "rb") as f:
        data = f.read() if frag.length is None else read_block(f, frag.offset, frag.length, delimiter=b"\n")
    table = json_table(data, frag.path, schema) if data.strip() else schema.empty_table()
    table = table.select(columns) if columns else table
    for i, name in enumerate(table.column_names):  # a field null on every line reads as text: type it
        want = _ARROW_TYPES.get(frag.types.get(name, ""))
        if want is not None and table.column(i).type != want and table.column(i).null_count == table.num_rows:
            table = table.set_column(i, name, pa.nulls(table.num_rows, want))
    return table


_ARROW_TYPES = {"int64": pa.int64(), "float64": pa.float64(), "bool": pa.bool_(), "boolean": pa.bool_(),
                "Int64": pa.int64(), "Float64": pa.float64()}


def csv_table(frag: "Fragment", columns: list[str]) -> pa.Table:
    """A CSV file or byte range, typed as registered (pandas' defaults for nulls)."""
    opts = frag.options
    header = opts.get("header", True) is not False
    names = list(frag.types) if not header else None
    delimiter = opts.get("delimiter") or ("\t" if frag.path.lower().endswith((".tsv", ".tab", ".tsv.gz")) else ",")
    delimiter = "\t" if delimiter in ("tab", "\\t") else delimiter
    # text as Arrow's 32-bit-offset strings: each 16 MB block is its own chunk, far from their
    # 2 GB bound, and pyarrow's CSV reader made them in 142 ms per million rows of the demo
    # data against 209 ms for large strings (DuckDB then grouped them in 38 ms, not 45)
    types = {c: _ARROW_TYPES.get(t, pa.timestamp("ns") if t.startswith("datetime64") else pa.string())
             for c, t in frag.types.items()}
    read = pa_csv.ReadOptions(column_names=names, encoding=opts.get("encoding") or "utf-8",
                              use_threads=False, block_size=1 << 24)
    parse = pa_csv.ParseOptions(delimiter=delimiter)
    convert = pa_csv.ConvertOptions(column_types=types, null_values=NULL_VALUES, strings_can_be_null=True,
                                    include_columns=columns or None)
    if frag.length is None:
        source: Any = pa.input_stream(frag.path, compression="detect")
    else:
        from dask.bytes.core import read_block

        with open(frag.path, "rb") as f:
            source = io.BytesIO(frag.header + read_block(f, frag.offset, frag.length, delimiter=b"\n"))
    return pa_csv.read_csv(source, read_options=read, parse_options=parse, convert_options=convert)
