"""The burst machinery on a real event loop with real sockets: coalesced writes,
fair turns, the fair selector and the connection pacer."""
from __future__ import annotations

import asyncio
import socket
import time

import pytest
from tornado.iostream import IOStream
from tornado.netutil import bind_sockets
from tornado.tcpserver import TCPServer

from app.batching import BatchWriter, ConnectionPacer, FairSelector, Turns


def run(coro, selector: FairSelector | None = None):
    loop = asyncio.SelectorEventLoop(selector or FairSelector())
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


class PassCounter:
    """Counts loop passes: one callback re-armed with call_soon runs once per pass."""

    def __init__(self) -> None:
        self.n = 0
        self._stopped = False

    def start(self) -> "PassCounter":
        asyncio.get_running_loop().call_soon(self._tick)
        return self

    def _tick(self) -> None:
        if not self._stopped:
            self.n += 1
            asyncio.get_running_loop().call_soon(self._tick)

    def stop(self) -> None:
        self._stopped = True


# -- BatchWriter ----------------------------------------------------------------------

def test_writes_arriving_together_are_committed_together_in_order():
    batches: list[list[int]] = []
    taken: list[int] = []

    def write_many(items: list[int]) -> list[int]:
        batches.append(list(items))
        return [i * 10 for i in items]

    async def main():
        writer = BatchWriter(write_many, taken.append, max_batch=8)
        results = await asyncio.gather(*(writer.write(i) for i in range(20)))
        await writer.close()
        return results, writer.in_flight

    results, in_flight = run(main())
    assert results == [i * 10 for i in range(20)]
    assert [len(b) for b in batches] == [8, 8, 4]  # not 20 single commits
    assert [i for b in batches for i in b] == list(range(20))
    assert taken == [i * 10 for i in range(20)]
    assert in_flight == 0


def test_a_failed_batch_fails_every_caller_in_it_and_nothing_is_taken_up():
    taken: list[int] = []

    def write_many(items: list[int]) -> list[int]:
        raise RuntimeError("disk full")

    async def main():
        writer = BatchWriter(write_many, taken.append)
        outcomes = await asyncio.gather(*(writer.write(i) for i in range(5)), return_exceptions=True)
        await writer.close()
        return outcomes, writer.in_flight

    outcomes, in_flight = run(main())
    assert all(isinstance(o, RuntimeError) and "disk full" in str(o) for o in outcomes)
    assert taken == [] and in_flight == 0


def test_an_item_whose_caller_went_away_is_still_written_and_taken_up():
    taken: list[str] = []

    async def main():
        writer = BatchWriter(lambda items: [i.upper() for i in items], taken.append)
        gone = asyncio.ensure_future(writer.write("a"))
        stays = asyncio.ensure_future(writer.write("b"))
        await asyncio.sleep(0)
        gone.cancel()
        result = await stays
        await writer.close()
        return result, gone.cancelled()

    result, cancelled = run(main())
    assert result == "B" and cancelled
    assert taken == ["A", "B"]  # stored, so the engine still queues it


# -- Turns ----------------------------------------------------------------------------

def test_turns_keep_arrival_order_and_let_other_work_run_between_passes():
    order: list[str] = []

    async def main():
        turns = Turns(budget_s=0.0)  # one call per pass
        passes = PassCounter().start()

        def work(name: str) -> str:
            order.append(f"{name}@{passes.n}")
            return name

        async def probe():
            await asyncio.sleep(0)
            order.append("probe")

        results = await asyncio.gather(*(turns.run(work, f"w{i}") for i in range(5)), probe())
        passes.stop()
        return results

    results = run(main())
    assert results[:5] == [f"w{i}" for i in range(5)]
    names = [o.split("@")[0] for o in order]
    assert [n for n in names if n != "probe"] == [f"w{i}" for i in range(5)]
    assert 0 < names.index("probe") < len(names) - 1  # the probe ran while turns were waiting
    ran_in = [int(o.split("@")[1]) for o in order if o != "probe"]
    assert len(set(ran_in)) == 5  # each in a pass of its own


def test_a_turn_raises_to_its_caller_only():
    async def main():
        turns = Turns(budget_s=0.0)

        def work(i: int) -> int:
            if i == 2:
                raise ValueError("bad job")
            return i

        return await asyncio.gather(*(turns.run(work, i) for i in range(4)), return_exceptions=True)

    outcomes = run(main())
    assert outcomes[0] == 0 and outcomes[1] == 1 and outcomes[3] == 3
    assert isinstance(outcomes[2], ValueError)


# -- FairSelector ---------------------------------------------------------------------

class Sockets:
    """``n`` socket pairs; the ``a`` ends registered for reading on ``selector``."""

    def __init__(self, selector: FairSelector, n: int):
        self.pairs = [socket.socketpair() for _ in range(n)]
        self.readers = [a for a, _ in self.pairs]
        for sock in self.readers:
            selector.register(sock, 1)  # EVENT_READ

    def make_readable(self, *indexes: int) -> None:
        for i in indexes:
            self.pairs[i][1].send(b"x")

    def close(self) -> None:
        for a, b in self.pairs:
            a.close()
            b.close()


def picked(selector: FairSelector, socks: Sockets) -> list[int]:
    return [socks.readers.index(key.fileobj) for key, _ in selector.select(0)]


def test_fair_selector_reports_oldest_connections_first_and_the_rest_next_time():
    selector = FairSelector(cap=4)
    socks = Sockets(selector, 9)
    try:
        for i in reversed(range(8)):  # accepted in the reverse order of their index; 8 is not a connection
            selector.rank(socks.readers[i].fileno())
        socks.make_readable(*range(9))
        first = picked(selector, socks)
        assert len(first) == 4 and first[:3] == [8, 7, 6]  # the oldest three (the unranked socket ranks first)
        seen = set(first)
        for i in first:
            socks.readers[i].recv(1)
        while len(seen) < 9:  # every ready socket comes up, a few per pass
            now = picked(selector, socks)
            assert 0 < len(now) <= 4 and not seen & set(now)
            seen |= set(now)
            for i in now:
                socks.readers[i].recv(1)
        assert selector.select(0) == []
    finally:
        selector.close()
        socks.close()


def test_busy_old_connections_cannot_starve_new_ones():
    selector = FairSelector(cap=3)  # two slots by age, one by least recently served
    socks = Sockets(selector, 6)
    try:
        for i in range(6):
            selector.rank(socks.readers[i].fileno())  # 0-2 are the old, busy ones
        socks.make_readable(*range(6))  # 0-2 never drain: they stay ready every pass
        served_new: list[int] = []
        for _ in range(6):
            now = picked(selector, socks)
            assert {0, 1} <= set(now)  # the oldest still get their slots every pass
            for i in now:
                if i >= 3 and i not in served_new:
                    served_new.append(i)
                    socks.readers[i].recv(1)
        assert sorted(served_new) == [3, 4, 5]
    finally:
        selector.close()
        socks.close()


# -- ConnectionPacer ------------------------------------------------------------------

class Echo(TCPServer):
    def __init__(self, passes: PassCounter, started: list[int], selector: FairSelector, per_pass: int):
        super().__init__()
        self.passes, self.started = passes, started
        self.pacer = ConnectionPacer(self.serve, selector, per_pass=per_pass)
        self.order: list[int] = []  # client ports, in start order

    def handle_stream(self, stream: IOStream, address) -> None:
        self.pacer(stream, address)

    async def serve(self, stream: IOStream, address) -> None:
        self.started.append(self.passes.n)
        self.order.append(address[1])
        await stream.write(b"ok")
        stream.close()


REQUEST, HALF_OPEN = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"GET / HTTP/1.1\r\nHost: x\r\n"


def connect_all(port: int, sends: list[bytes]) -> list[socket.socket]:
    """A client per item of ``sends``, connected and its bytes sent before the server accepts any."""
    clients = []
    for data in sends:
        c = socket.create_connection(("127.0.0.1", port))
        c.sendall(data)
        clients.append(c)
    time.sleep(0.2)  # the bytes are in the server's socket buffers
    return clients


def serve_all(sends: list[bytes], per_pass: int) -> tuple[list[int], list[int], list[int]]:
    """Serve one client per item of ``sends`` through a pacer: (start passes, start order of the clients' ports, clients)."""
    selector = FairSelector()
    listeners = bind_sockets(0, "127.0.0.1", family=socket.AF_INET)
    clients = connect_all(listeners[0].getsockname()[1], sends)

    async def main():
        passes = PassCounter().start()
        started: list[int] = []
        server = Echo(passes, started, selector, per_pass)
        server.add_sockets(listeners)
        answers = await asyncio.wait_for(asyncio.gather(*(
            asyncio.get_running_loop().sock_recv(c, 16) for c in clients)), 30)
        server.stop()
        passes.stop()
        assert answers == [b"ok"] * len(sends) and server.pacer.waiting == 0
        assert len(selector._ranks) >= len(sends)  # every accepted connection was ranked
        return started, server.order

    ports = [c.getsockname()[1] for c in clients]
    for c in clients:
        c.setblocking(False)
    try:
        started, order = run(main(), selector)
    finally:
        for c in clients:
            c.close()
    return started, order, ports


@pytest.mark.parametrize("per_pass", [1, 3])
def test_pacer_starts_a_few_connections_per_pass_and_serves_them_all(per_pass):
    started, _, _ = serve_all([REQUEST] * 12, per_pass)
    assert max(started.count(n) for n in set(started)) <= per_pass


def test_pacer_starts_connections_with_a_waiting_request_before_half_open_ones():
    """Ten half-open clients connect first, then two with a complete request: those two start first."""
    started, order, ports = serve_all([HALF_OPEN] * 10 + [REQUEST] * 2, per_pass=2)
    assert set(order[:2]) == set(ports[10:]), (order, ports)
