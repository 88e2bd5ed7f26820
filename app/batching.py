"""Bursts without a stalled loop: fair turns for costly request work, and coalesced writes.

- :class:`FairSelector` hands the event loop at most a few ready sockets per pass,
  all but one to the oldest connections and one to the socket served least
  recently; the others are reported again on the next passes.
  A thousand requests arriving at once are read a slice at a time in arrival order,
  and a monitor's kept-alive probe is read in the next pass, not after all of them.
- :class:`ConnectionPacer` starts at most a few new HTTP connections per loop pass:
  a thousand clients connecting at once are then read a few at a time, not all in
  one pass that keeps everything else (a health probe on a kept-alive connection)
  waiting. Connections already being served are not held back. The HTTP server
  (:class:`app.connections.GuardedHTTPServer`) hands it every admitted connection.
- :class:`Turns` lets callers run their costly part only while the loop pass has
  budget left; the rest wait, in arrival order, for the next passes. A thousand
  submissions read in one pass then no longer keep ``/health`` (or anything else)
  waiting for all thousand validations.
- :class:`BatchWriter` writes rows asked for on the loop together, in one
  transaction, on a thread of its own: a burst costs the loop no SQLite call and no
  GIL hand-over per row, and one commit per batch. A caller's answer waits for its
  batch to be committed, so nothing is reported as accepted before it is stored.
"""
from __future__ import annotations

import asyncio
import heapq
import logging
import selectors
import socket
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Generic, TypeVar

log = logging.getLogger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")

# Tuned with bench/bench_burst.py (1,000 concurrent submissions on 2 cores): smaller
# values shorten each loop pass (a probe needs about four passes), larger ones raise
# the burst's throughput.
MAX_BATCH = 8  # submissions per commit; their 201s are written in one pass
PASS_BUDGET_S = 0.003  # loop time per pass for queued validations
NEW_CONNECTIONS_PER_PASS = 8
LIFO_ABOVE = 64  # connections queued in the pacer beyond which the newest start first
PEEK_BYTES = 8192  # bytes of a new connection looked at for a complete request header
READY_PER_PASS = 4


class FairSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    """The platform's selector (epoll on Linux) handing the loop at most ``cap`` ready
    sockets per pass.

    All slots but one go to the oldest connections (ranked by accept order with
    :meth:`rank`, called by :class:`ConnectionPacer`; anything else, such as the
    listening socket or the loop's wake-up pipe, ranks first); the last one to the
    socket served least recently, so busy old connections cannot starve new ones.
    Sockets left out stay ready (asyncio registers them level-triggered) and are
    reported again next pass. A flood of new connections is then read a slice per
    pass, while a monitor's or a dashboard's established connection is read in the
    next pass.
    """

    def __init__(self, cap: int = READY_PER_PASS):
        super().__init__()
        self.cap = max(2, cap)
        self._ranks: dict[int, int] = {}  # fd -> accept order
        self._served: dict[int, int] = {}  # fd -> pass it was last handed out in
        self._accepted = 0
        self._passes = 0

    def rank(self, fd: int) -> None:
        """A connection was accepted on ``fd``: it ranks after every earlier one.

        A closed connection's number is reused by the next accepted one, which then
        overwrites its rank, so the tables never outgrow the process's descriptors.
        """
        self._accepted += 1
        self._ranks[fd] = self._accepted
        self._served[fd] = 0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(timeout)
        self._passes += 1
        if len(ready) > self.cap:
            ranks, served = self._ranks, self._served
            oldest = heapq.nsmallest(self.cap - 1, ready, key=lambda item: ranks.get(item[0].fd, 0))
            taken = {key.fd for key, _ in oldest}
            rest = [item for item in ready if item[0].fd not in taken]
            ready = oldest + heapq.nsmallest(self.cap - len(oldest), rest,
                                             key=lambda item: served.get(item[0].fd, 0))
        for key, _ in ready:
            self._served[key.fd] = self._passes
        return ready


class ConnectionPacer:
    """``pacer(stream, address)``: new connections start (``start(stream, address)``) a few per loop pass.

    A thousand clients connecting at once are then read a few at a time, not all in
    one pass that keeps everything else (a health probe on a kept-alive connection)
    waiting. Each new connection is peeked at once (not read): one whose complete
    request header is already there starts first, so under a flood of half-open
    connections a monitor's probe starts in the next pass, while the flood waits
    its turn unread (and the connection limiter closes its oldest first). Among the
    others, first come, first started while the queue is short; beyond
    ``lifo_above`` queued the newest start first (adaptive LIFO).
    """

    def __init__(self, start: Callable[[Any, Any], Any], selector: FairSelector | None = None,
                 per_pass: int = NEW_CONNECTIONS_PER_PASS, lifo_above: int = LIFO_ABOVE):
        self._start = start
        self._selector = selector
        self.per_pass = per_pass
        self.lifo_above = lifo_above
        self._ready: deque[tuple[Any, Any]] = deque()  # a complete request header waits
        self._waiting: deque[tuple[Any, Any]] = deque()
        self._scheduled = False

    @property
    def waiting(self) -> int:
        return len(self._ready) + len(self._waiting)

    def __call__(self, stream: Any, address: Any) -> bool:
        """Queue a new connection; True if its complete request header is already there."""
        if self._selector is not None:
            self._selector.rank(stream.socket.fileno())
        ready = request_waiting(stream.socket)
        (self._ready if ready else self._waiting).append((stream, address))
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._start_some)
        return ready

    def _next(self) -> tuple[Any, Any]:
        if self._ready:
            return self._ready.popleft()
        return self._waiting.pop() if len(self._waiting) > self.lifo_above else self._waiting.popleft()

    def _start_some(self) -> None:
        self._scheduled = False
        started = 0
        while (self._ready or self._waiting) and started < self.per_pass:
            stream, address = self._next()
            if stream.closed():  # closed while queued (by the connection limiter)
                continue
            try:
                result = self._start(stream, address)
                if result is not None:
                    asyncio.ensure_future(result)
            except Exception:
                log.exception("starting a connection failed")
                stream.close()
            started += 1
        if self._ready or self._waiting:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._start_some)


def request_waiting(sock: socket.socket) -> bool:
    """The socket holds a complete HTTP request header, not yet read (a TLS socket never seems to)."""
    try:
        return b"\r\n\r\n" in sock.recv(PEEK_BYTES, socket.MSG_PEEK)
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:  # reset or closed: starting it only notices that
        return False


class Turns:
    """``await turns.run(fn, *args)``: ``fn`` runs on the loop, in arrival order, at most
    about ``budget_s`` of such calls per loop pass.

    While the pass has budget, a call runs at once. Beyond it, calls queue and a pump
    runs them a budget's worth per pass, yielding to the loop between passes, so
    whatever else became ready (a health probe, a page) is served in between.
    """

    def __init__(self, budget_s: float = PASS_BUDGET_S):
        self.budget_s = budget_s
        self._queue: deque[tuple[Callable[..., Any], tuple[Any, ...], asyncio.Future[Any]]] = deque()
        self._pass_started: float | None = None
        self._pump: asyncio.Task[None] | None = None

    async def run(self, fn: Callable[..., Result], *args: Any) -> Result:
        loop = asyncio.get_running_loop()
        if self._pump is None and self._budget_left(loop):
            return fn(*args)
        future: asyncio.Future[Result] = loop.create_future()
        self._queue.append((fn, args, future))
        if self._pump is None:
            self._pump = loop.create_task(self._run_queue())
        return await future

    def _budget_left(self, loop: asyncio.AbstractEventLoop) -> bool:
        now = time.perf_counter()
        if self._pass_started is None:
            self._pass_started = now
            loop.call_soon(self._end_pass)  # runs after this pass's callbacks
            return True
        return now - self._pass_started < self.budget_s

    def _end_pass(self) -> None:
        self._pass_started = None

    async def _run_queue(self) -> None:
        try:
            while self._queue:
                await asyncio.sleep(0)  # one loop pass for everything else
                started = time.perf_counter()
                while self._queue:  # at least one call per pass, then while the budget lasts
                    fn, args, future = self._queue.popleft()
                    if not future.done():  # else its request went away
                        try:
                            future.set_result(fn(*args))
                        except Exception as exc:  # noqa: BLE001 - the caller raises it
                            future.set_exception(exc)
                    if time.perf_counter() - started >= self.budget_s:
                        break
        finally:
            self._pump = None


class BatchWriter(Generic[Item, Result]):
    """``await writer.write(item)`` → the result of ``write_many`` for that item.

    ``write_many(items) -> results`` runs on the writer's own thread, all or nothing.
    ``written(result)`` runs on the loop for every committed item before its caller is
    answered, even if that caller has gone away (a cancelled request), so what was
    stored is always taken up.
    """

    def __init__(self, write_many: Callable[[list[Item]], list[Result]],
                 written: Callable[[Result], None] | None = None, name: str = "writer",
                 max_batch: int = MAX_BATCH):
        self._write_many = write_many
        self._written = written
        self._max_batch = max_batch
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=name)
        self._items: list[tuple[Item, asyncio.Future[Result]]] = []
        self._draining: asyncio.Task[None] | None = None
        self.in_flight = 0  # asked for and not yet committed or failed

    async def write(self, item: Item) -> Result:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        self._items.append((item, future))
        self.in_flight += 1
        if self._draining is None:
            self._draining = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await asyncio.sleep(0)  # let the requests already read this loop pass join the batch
            while self._items:
                batch, self._items = self._items[:self._max_batch], self._items[self._max_batch:]
                try:
                    results = await loop.run_in_executor(self._executor, self._write_many, [i for i, _ in batch])
                except Exception as exc:  # noqa: BLE001 - every waiter hears of it
                    log.error("batched write of %d item(s) failed: %s", len(batch), exc)
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                else:
                    for (_, future), result in zip(batch, results):
                        self._take_up(result)
                        if not future.done():
                            future.set_result(result)
                finally:
                    self.in_flight -= len(batch)
        finally:
            self._draining = None

    def _take_up(self, result: Result) -> None:
        if self._written is None:
            return
        try:
            self._written(result)
        except Exception:  # the item is stored; its caller must still be answered
            log.exception("taking up a written item failed")

    async def close(self) -> None:
        """Finish what was asked for, then stop the thread."""
        while self._draining is not None:
            await asyncio.shield(self._draining)
        self._executor.shutdown(wait=True)
