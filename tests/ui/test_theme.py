"""Both themes are readable: WCAG contrast of the stat values and the sidebar links, from computed styles."""
from __future__ import annotations

from typing import Any

import pytest

from tests.server import ServerProcess
from tests.ui.conftest import shot

pytestmark = pytest.mark.ui

MINIMUM = 4.5  # WCAG AA for normal text

# For each element: its colour, and the colour behind it (backgrounds of it and its ancestors,
# across shadow roots, composited from the page's background up), then the WCAG ratio.
CONTRAST_JS = """
(selector) => {
  const parse = (c) => { const m = c.match(/[\\d.]+/g) || []; return m.length >= 3 ?
      [+m[0], +m[1], +m[2], m.length > 3 ? +m[3] : 1] : [0, 0, 0, 0]; };
  const up = (el) => el.parentElement || (el.getRootNode() && el.getRootNode().host) || null;
  const lum = ([r, g, b]) => { const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
      return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };
  const over = (top, base) => [0, 1, 2].map(i => top[i] * top[3] + base[i] * (1 - top[3])).concat([1]);
  const found = [];
  const walk = (root) => { root.querySelectorAll(selector).forEach(el => found.push(el));
      root.querySelectorAll('*').forEach(el => { if (el.shadowRoot) walk(el.shadowRoot); }); };
  walk(document);
  return found.filter(el => el.offsetParent !== null).map(el => {
    const layers = [];
    for (let node = el; node; node = up(node)) {
      const bg = parse(getComputedStyle(node).backgroundColor);
      if (bg[3] > 0) layers.push(bg);
      if (bg[3] >= 1) break;
    }
    let back = [255, 255, 255, 1];
    for (const layer of layers.reverse()) back = over(layer, back);
    const fg = over(parse(getComputedStyle(el).color), back);
    const [a, b] = [lum(fg), lum(back)].sort((x, y) => y - x);
    return {text: el.textContent.trim().slice(0, 30), color: getComputedStyle(el).color,
            background: `rgb(${back.slice(0, 3).map(Math.round).join(', ')})`, ratio: (a + 0.05) / (b + 0.05)};
  });
}
"""


@pytest.fixture(scope="module")
def srv(ui_server: ServerProcess) -> ServerProcess:
    return ui_server  # shared by the browser tests that keep its cluster as it is (ui/conftest.py)


def contrasts(page, selector: str) -> list[dict[str, Any]]:
    return page.evaluate(CONTRAST_JS, selector)


@pytest.mark.parametrize("theme", ["default", "dark"])
def test_stat_values_and_sidebar_links_are_readable(srv: ServerProcess, page, theme: str) -> None:
    page.goto(f"{srv.url}/?theme={theme}")
    page.get_by_test_id("card-workers").wait_for(timeout=30_000)
    page.wait_for_timeout(1000)
    shot(page, f"overview-{theme}-contrast")
    values = contrasts(page, ".pc-card .pc-value")
    links = contrasts(page, ".pc-nav a")
    assert len(values) >= 5 and len(links) >= 5, (values, links)
    poor = [c for c in values + links if c["ratio"] < MINIMUM]
    assert not poor, f"{theme}: contrast below {MINIMUM}:1: {poor}"
