"""The store's read connections: read-only, lent one at a time, and the threads that run reads;
and how a stored row's JSON columns are read back.

SQLite in WAL mode lets readers run beside the one writer, so a read takes no lock: each
borrows a read-only connection of its own (see :class:`app.store_reads.StoreReads`).
"""
from __future__ import annotations

import json
import queue
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .store_schema import JSON_COLUMNS

READ_THREADS = 2  # two cores here; reads are short, so a deeper pool only queues in SQLite


def decode(table: str, row: dict[str, Any]) -> dict[str, Any]:
    """A row with its JSON columns parsed (text that is not JSON is left as it is)."""
    for column in JSON_COLUMNS.get(table, ()):
        value = row.get(column)
        if isinstance(value, str):
            try:
                row[column] = json.loads(value)
            except ValueError:
                pass
    return row


class ReadPool:
    """Read-only connections, lent one at a time, and the threads that run slow reads."""

    def __init__(self, path: Path, threads: int = READ_THREADS):
        self.uri = Path(path).resolve().as_uri() + "?mode=ro"
        self.executor = ThreadPoolExecutor(threads, thread_name_prefix="store-read")
        self._idle: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._closed = threading.Event()

    @contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        try:
            conn = self._idle.get_nowait()
        except queue.Empty:
            conn = sqlite3.connect(self.uri, uri=True, check_same_thread=False, timeout=30)
            conn.execute("PRAGMA query_only = 1")
        try:
            yield conn
        finally:
            if self._closed.is_set():
                conn.close()
            else:
                self._idle.put(conn)

    def close(self) -> None:
        self._closed.set()
        self.executor.shutdown(wait=False, cancel_futures=True)
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return
