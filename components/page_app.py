"""Pages built off the event loop.

Bokeh builds a session's document synchronously on the server's event loop
(``Application.initialize_document``): every page load held every other request, the
API's included, for as long as the page took to build. Measured with
``bench/bench_pages.py``: /health waited 300-1300 ms while a page loaded.

Bokeh awaits each handler's ``on_session_created`` before it initialises the document,
and there the session's document is the handler's alone (``with_locked_document``:
no session is attached yet, so no other code can reach it). ``PageBuild`` builds the
page there, in one thread kept for page builds, and leaves nothing for
``modify_document`` to do. Builds run one at a time: two pages never build at once,
and the loop, free meanwhile, only touches other sessions' documents.
"""
from __future__ import annotations

import asyncio
import contextvars
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bokeh.application.handlers.handler import Handler
from bokeh.document import Document
from bokeh.settings import settings as bokeh_settings
from panel.io.application import Application
from panel.io.state import set_curdoc
from panel.pane import panel as panel_of
from panel.template.base import BaseTemplate

# One thread: builds are serialised as they were on the loop, and Panel's and HoloViews'
# module-level state is never written by two builds at once.
_BUILDS = ThreadPoolExecutor(max_workers=1, thread_name_prefix="page-build")


class PageBuild(Handler):
    """A Bokeh handler that runs a page function in the page-build thread."""

    def __init__(self, page: Callable[[], Any], title: str, builds: ThreadPoolExecutor = _BUILDS):
        super().__init__()
        self._page = page
        self._title = title
        self._builds = builds
        self._failures: weakref.WeakKeyDictionary[Document, BaseException] = weakref.WeakKeyDictionary()

    def _build(self, doc: Document) -> None:
        with set_curdoc(doc):
            view = self._page()
            if not isinstance(view, BaseTemplate):
                view = panel_of(view)  # a Viewer (the wall) renders through its panel
            view.server_doc(doc=doc, title=self._title, location=True)
            doc.validate()  # Bokeh's check of the document, here rather than on the loop (see below)

    async def _build_off_loop(self, doc: Document) -> None:
        # the copied context carries what the session set up so far into the thread
        context = contextvars.copy_context()
        try:
            await asyncio.get_running_loop().run_in_executor(self._builds, context.run, self._build, doc)
        except Exception as exc:  # raised again where Bokeh expects a page's errors: modify_document
            self._failures[doc] = exc

    async def on_session_created(self, session_context: Any) -> None:
        await session_context.with_locked_document(self._build_off_loop)

    def modify_document(self, doc: Document) -> None:
        """Built already, off the loop; a build's error surfaces here, as a page function's would."""
        failure = self._failures.pop(doc, None)
        if failure is not None:
            raise failure


def page_application(page: Callable[[], Any], title: str) -> Application:
    """A Panel application whose sessions' pages are built by ``page`` off the event loop."""
    # Bokeh validates each new document on the loop once it is initialised (40-100 ms for a
    # page); ``PageBuild`` has validated it in the build thread, with the same warnings logged
    bokeh_settings.perform_document_validation.set_value(False)
    return Application(PageBuild(page, title))
