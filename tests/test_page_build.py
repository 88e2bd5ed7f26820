"""Pages are built off the event loop: while a page builds, the loop goes on serving.

An in-process Panel server (no Dask) serves pages through ``components.page_app``; the
page functions wait for the loop to answer while they build, which a build on the loop
could never see.
"""
from __future__ import annotations

import asyncio
import threading
from typing import Any, Callable

import panel as pn
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from components.page_app import page_application
from tests.helpers import run_async


async def _get_page(page: Callable[[], Any], while_building: Callable[[], Any] | None = None) -> int:
    """Serve ``page`` at / on a free port, GET it once (running ``while_building`` on the loop
    meanwhile), and return the status."""
    server = pn.serve({"/": page_application(page, "test")}, port=0, address="127.0.0.1", show=False, start=False)
    server.start()
    helper = asyncio.ensure_future(while_building()) if while_building else None
    try:
        response = await AsyncHTTPClient().fetch(f"http://127.0.0.1:{server.port}/", request_timeout=30)
        return response.code
    except HTTPClientError as exc:
        return exc.code
    finally:
        if helper:
            helper.cancel()
        server.stop()


def test_the_loop_serves_while_a_page_builds() -> None:
    started, answered = threading.Event(), threading.Event()
    seen: dict[str, int] = {}

    def page() -> pn.viewable.Viewable:
        seen["build"] = threading.get_ident()
        started.set()
        # set by a coroutine on the loop: a page built on the loop would wait here in vain
        seen["answered"] = answered.wait(10)
        return pn.Column(pn.pane.Markdown("built"))

    async def answer_from_the_loop() -> None:
        seen["loop"] = threading.get_ident()
        while not started.is_set():
            await asyncio.sleep(0.01)
        answered.set()

    assert run_async(_get_page(page, answer_from_the_loop)) == 200
    assert seen["answered"], "the loop did not run while the page was being built"
    assert seen["build"] != seen["loop"]


def test_a_page_that_fails_to_build_answers_500_and_the_next_one_builds() -> None:
    def broken() -> pn.viewable.Viewable:
        raise ValueError("no page today")

    assert run_async(_get_page(broken)) == 500
    assert run_async(_get_page(lambda: pn.Row(pn.pane.Markdown("fine")))) == 200


def test_a_viewer_page_renders_through_its_panel() -> None:
    class Card(pn.viewable.Viewer):
        def __panel__(self) -> pn.viewable.Viewable:
            return pn.Card(pn.pane.Markdown("a viewer"), title="viewer")

    assert run_async(_get_page(Card)) == 200
