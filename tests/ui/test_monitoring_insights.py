"""The monitoring page shows the recommendations, failed and cancelled jobs over time, memory
and CPU per worker, and the queue-wait and run-time histograms (issue 15, item 17)."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.helpers import wait_job
from tests.ui.helpers import shot

pytestmark = pytest.mark.ui

JOB = {"operation": "aggregate", "dataset_id": "demo_expression", "max_cores": 1, "max_memory_gb": 0.25,
       "parameters": {"column": "expression_level", "operation": "mean"}}


def bokeh_data(page, column: str, key: str | None = None) -> list:
    """Values of ``column`` in the page's Bokeh data sources (those that also have ``key``)."""
    return page.evaluate("""([column, key]) => {
      const out = [];
      for (const doc of Bokeh.documents) for (const model of doc._all_models.values())
        if (model.data && model.data[column] !== undefined && (!key || model.data[key] !== undefined))
          out.push(...Array.from(model.data[column]));
      return out;
    }""", [column, key])


def factor_ranges(page, column: str) -> list[list[str]]:
    """The x-range factors of each figure in the page that draws a source with ``column``."""
    return page.evaluate("""(column) => {
      const out = [];
      for (const doc of Bokeh.documents) for (const m of doc._all_models.values())
        if (m.x_range && m.renderers && m.renderers.some(r => r.data_source && r.data_source.data[column] !== undefined))
          out.push(Array.from(m.x_range.factors ?? []));
      return out;
    }""", column)


def ink(page, css: str) -> float:
    """Share of the pixels of a card's figure that are not its background: 0 for a blank figure."""
    import io

    from PIL import Image

    card = page.locator(f".{css}")
    card.scroll_into_view_if_needed()
    box = card.bounding_box()
    header = 44  # the card's title bar
    png = page.screenshot(clip={"x": box["x"], "y": box["y"] + header, "width": box["width"],
                                "height": box["height"] - header})
    image = Image.open(io.BytesIO(png)).convert("L")
    background = max(range(256), key=image.histogram().__getitem__)
    return sum(1 for p in image.getdata() if abs(p - background) > 40) / (image.width * image.height)


def poll(page, check, tries: int = 75) -> None:
    for _ in range(tries):
        if check():
            return
        page.wait_for_timeout(200)


def test_recommendations_outcomes_workers_and_histograms(ui_server, page):
    done = wait_job(ui_server, ui_server.post("/api/processing/jobs/submit", json=JOB).json()["job_id"])
    assert done["status"] == "completed"
    cancelled = ui_server.post("/api/processing/jobs/submit", json={**JOB, "priority": "LOW"}).json()["job_id"]
    ui_server.post(f"/api/processing/jobs/{cancelled}/cancel")
    page.goto(ui_server.url + "/monitoring")
    recs = page.get_by_test_id("recommendations")
    expect(recs).to_be_visible(timeout=30_000)
    api = ui_server.get("/api/processing/recommendations").json()["recommendations"]
    if api:  # its figures (minutes idle, say) may have moved on since: any number in their place
        figures_free = re.sub(r"\d+(?:\\\.\d+)?", r"[\\d.]+", re.escape(api[0]["reason"][:60]))
        expect(recs).to_contain_text(re.compile(figures_free))
    else:
        expect(recs).to_contain_text("Nothing to recommend")
    for css in ("chart-throughput", "chart-per-worker", "chart-hist-wait", "chart-hist-run"):
        expect(page.locator(f".{css}")).to_be_visible(timeout=20_000)
    workers = ui_server.get("/api/processing/metrics/workers").json()
    workers = workers.get("workers", workers) if isinstance(workers, dict) else workers
    names = sorted(str(w["name"]) for w in workers)
    poll(page, lambda: sorted(bokeh_data(page, "worker")) == names)
    assert sorted(bokeh_data(page, "worker")) == names
    cpu = bokeh_data(page, "cpu", "worker")
    assert len(cpu) == len(names) and all(0 <= c <= 100 * 64 for c in cpu)
    status = ui_server.get(f"/api/processing/jobs/{cancelled}/status").json()["status"]
    poll(page, lambda: sum(bokeh_data(page, "count", "bucket")) >= 2)
    assert sum(bokeh_data(page, "count", "bucket")) >= 2  # the completed job's wait and run
    assert any(label.startswith("≤") for label in bokeh_data(page, "bucket"))
    # Both histograms are drawn, not only fed: each figure has its bucket axis and the card shows
    # ink (axes, labels, bars). The queue-wait one drew blank while its data arrived.
    labels = bokeh_data(page, "bucket")[:11]
    poll(page, lambda: factor_ranges(page, "bucket") == [labels, labels])
    assert factor_ranges(page, "bucket") == [labels, labels]
    for css in ("chart-hist-wait", "chart-hist-run"):
        assert ink(page, css) > 0.01, f"{css} is blank"
    assert sum(bokeh_data(page, "completed", "cancelled")) >= 1
    if status == "cancelled":  # it may have finished before the cancel reached it
        assert sum(bokeh_data(page, "cancelled", "completed")) >= 1
    shot(page, "monitoring-insights-1280x800")
