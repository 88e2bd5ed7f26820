"""A job's result as a stream of CSV or Parquet bytes, one record batch at a time.

The result is either a folder of Parquet files (a result dataset of any size), read a
batch at a time, or a small table kept with the job (its rows, or its scalar fields as
one row). ``ResultStream.next_chunk`` does the blocking work for one batch: the API
calls it in an executor and writes each chunk before asking for the next, so memory
stays at one batch however large the result.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

FORMATS = {"csv": "text/csv; charset=utf-8", "parquet": "application/vnd.apache.parquet"}
BATCH_ROWS = 65_536


def table_of(result: Any) -> pa.Table:
    """An inline result as a table: its rows, or its scalar fields as one row."""
    if isinstance(result, dict) and isinstance(result.get("rows"), list):
        rows = result["rows"]
        columns = result.get("columns") or (list(rows[0]) if rows else [])
        return pa.Table.from_pylist(rows, schema=None) if rows else pa.table({c: pa.array([], pa.null()) for c in columns})
    if isinstance(result, dict):
        flat = {k: [v] for k, v in result.items() if v is None or isinstance(v, (str, int, float, bool))}
        return pa.table(flat)
    return pa.table({"value": [result]})


def _batches(files: list[str] | None, table: pa.Table | None) -> Iterator[pa.RecordBatch]:
    if table is not None:
        yield from table.to_batches(BATCH_ROWS) or [pa.RecordBatch.from_pylist([], schema=table.schema)]
        return
    for path in files or []:
        yield from pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS)


class _Sink(io.RawIOBase):
    """A writable file whose bytes are taken out after each batch."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.buffer += view
        self.position += view.nbytes
        return view.nbytes

    def tell(self) -> int:
        return self.position

    def take(self) -> bytes:
        out, self.buffer = bytes(self.buffer), bytearray()
        return out


class ResultStream:
    """``next_chunk()`` returns the next bytes of the file, or None at the end."""

    def __init__(self, fmt: str, files: list[str] | None = None, table: pa.Table | None = None):
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt}")
        self.fmt = fmt
        self.schema = table.schema if table is not None else (pq.read_schema(files[0]) if files else pa.schema([]))
        self._batches = _batches(files, table)
        self._sink = _Sink()
        self._writer: Any = None
        self._done = False

    def _open(self) -> None:
        if self.fmt == "csv":
            self._writer = pacsv.CSVWriter(self._sink, self.schema)
        else:
            self._writer = pq.ParquetWriter(self._sink, self.schema)

    def next_chunk(self) -> bytes | None:
        if self._done:
            return None
        if self._writer is None:
            self._open()
        try:
            batch = next(self._batches)
        except StopIteration:
            self._writer.close()  # the Parquet footer; nothing more for CSV
            self._done = True
            return self._sink.take()
        if batch.schema != self.schema:  # a later file typed a column differently (all nulls, say)
            self._writer.write_table(pa.Table.from_batches([batch]).cast(self.schema))
        else:
            self._writer.write_batch(batch)
        return self._sink.take()


def result_files(folder: Path) -> list[str]:
    return sorted(str(p) for p in Path(folder).glob("*.parquet"))
