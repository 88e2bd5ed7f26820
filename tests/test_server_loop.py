"""The server's loop treats a write to a closed browser tab as a client going away (no
traceback in the log) and keeps asyncio's report for every other unretrieved error."""
from __future__ import annotations

import asyncio
import gc
import logging

from tornado.websocket import WebSocketClosedError

from app.server import _client_gone_quietly


def test_a_closed_socket_is_quiet_and_other_errors_are_not(caplog) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(_client_gone_quietly)

        async def closed() -> None:
            raise WebSocketClosedError()

        async def real() -> None:
            raise ValueError("a real fault")

        tasks = [loop.create_task(closed()), loop.create_task(real())]
        await asyncio.sleep(0.05)
        tasks.clear()
        gc.collect()
        await asyncio.sleep(0.05)

    gc.collect()  # unretrieved futures other tests left behind are reported now, not in main()
    with caplog.at_level(logging.DEBUG):
        asyncio.run(main())
    # only this test's two tasks count: a collection may still report another test's garbage
    errors = [str(r.exc_info or "") + r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert sum("a real fault" in e for e in errors) == 1, errors
    assert not any("WebSocketClosedError" in e for e in errors), errors
    assert any("went away" in r.getMessage() for r in caplog.records)
