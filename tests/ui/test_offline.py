"""No third-party requests: every page, in both themes, loads everything (scripts, styles, fonts) from the server
(the default theme's pages but /docs are checked by tests/ui/test_escaping.py's walk)."""
from __future__ import annotations

import pytest

from tests.server import ServerProcess
from tests.ui.guard import PageGuard

pytestmark = pytest.mark.ui

PAGES = {"/": "[data-testid=cluster-status]", "/cluster": "[data-testid=cluster-status]", "/jobs": ".submit-job",
         "/data": "[data-testid=dataset-title]", "/monitoring": ".window-picker", "/wall": "[data-testid=wall-status]",
         "/docs": "h1"}


@pytest.fixture(scope="module")
def srv(ui_server: ServerProcess) -> ServerProcess:
    return ui_server  # shared by the browser tests that keep its cluster as it is (ui/conftest.py)


# The default theme's pages but /docs are walked with the same guard by
# tests/ui/test_escaping.py (test_markup_is_text_on_every_page): here the dark theme's, and /docs.
@pytest.mark.parametrize("theme,paths", [("dark", list(PAGES)), ("default", ["/docs"])], ids=["dark", "default"])
def test_pages_request_only_the_server(srv: ServerProcess, page, theme: str, paths: list[str]) -> None:
    guard = PageGuard(page, srv.url)
    seen: list[str] = []
    page.on("request", lambda r: seen.append(r.url))
    problems = []
    for path in paths:
        marker = PAGES[path]
        guard.clear()
        query = "&" if "?" in path else "?"
        page.goto(f"{srv.url}{path}{query}theme={theme}" + ("&dataset=demo_expression" if path == "/data" else ""))
        page.locator(marker).first.wait_for(timeout=30_000)
        page.wait_for_load_state("load")
        page.wait_for_timeout(1500)  # late fetches: fonts, lazily loaded modules
        if guard.foreign:
            problems.append(f"{path}: {sorted(set(guard.foreign))}")
    assert seen, "the guard saw no request at all"
    assert not problems, "requests that left the server:\n" + "\n".join(problems)
