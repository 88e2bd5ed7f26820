"""The store's read connections: read-only, lent one at a time, and the threads that run reads;
how a stored row's JSON columns are read back; and the check that no read runs on an event loop.

SQLite in WAL mode lets readers run beside the one writer, so a read takes no lock: each
borrows a read-only connection of its own (see :class:`app.store_reads.StoreReads`).
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import queue
import sqlite3
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .settings import PARSERS, Settings
from .store_schema import JSON_COLUMNS

log = logging.getLogger(__name__)

READ_THREADS = 2  # two cores here; reads are short, so a deeper pool only queues in SQLite
ROOT = Path(__file__).resolve().parents[1]  # the project's own frames are the ones a stack shows
STACK_FRAMES = 12

_guard: bool | None = None  # STORE_LOOP_GUARD, read on first use unless set
_reported: set[tuple[tuple[str, int], ...]] = set()
_reported_lock = threading.Lock()


def set_loop_guard(on: bool | None) -> None:
    """Turn the check of :func:`check_off_loop` on or off (None: as ``STORE_LOOP_GUARD`` says)."""
    global _guard
    _guard = on


def loop_guard_on() -> bool:
    global _guard
    if _guard is None:
        spec = Settings.__dataclass_fields__["store_loop_guard"]  # declared there, read from the same variable
        text = os.environ.get(spec.metadata["env"])
        _guard = spec.default if text is None else PARSERS[bool](text)
    return _guard


def check_off_loop() -> None:
    """With ``STORE_LOOP_GUARD`` on, log an ERROR (once per call stack) when the calling thread runs
    an event loop: an SQLite read there stalls every request and page of the process. Call it
    where a read starts; reads belong on the read pool (``Store.reading``)."""
    if not loop_guard_on():
        return
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return  # no loop on this thread: a read-pool thread, an executor, a script
    frames = _caller_frames()
    key = tuple((f.f_code.co_filename, f.f_lineno) for f in frames)
    with _reported_lock:
        if key in _reported:
            return
        _reported.add(key)
    log.error("store read on the event loop (thread %s):\n%s", threading.current_thread().name,
              "\n".join(_frame_text(f) for f in frames))


def _caller_frames() -> list[Any]:
    """The innermost ``STACK_FRAMES`` frames of the project's code that led here (not this module's)."""
    frame, ours, other = sys._getframe(2), [], []
    while frame is not None and len(ours) < STACK_FRAMES:
        name = frame.f_code.co_filename
        if name != __file__:
            (ours if name.startswith(str(ROOT)) and "site-packages" not in name else other).append(frame)
        frame = frame.f_back
    return ours or other[:STACK_FRAMES]


def _frame_text(frame: Any) -> str:
    name = frame.f_code.co_filename
    shown = os.path.relpath(name, ROOT) if name.startswith(str(ROOT)) else name
    return f"  {shown}:{frame.f_lineno} in {frame.f_code.co_name}"


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
        check_off_loop()
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
