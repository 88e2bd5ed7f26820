"""A job's result, shown the way its operation declares it (``result_kind``):
scalar → a big number; record → key/value table; table → Tabulator; matrix →
HeatMap; histogram → bars; volcano → log2 fold change vs -log10 q; dataset → a
link to the written dataset and its row count."""
from __future__ import annotations

import json
from typing import Any

import holoviews as hv
import pandas as pd
import panel as pn
from bokeh.models import NumeralTickFormatter

from .theme import CSS, esc, esc_titles, fmt_number, number_formatters

hv.extension("bokeh", logo=False)

SIGNIFICANT_Q = 0.05
SIGNIFICANT_LFC = 1.0


def result_view(kind: str | None, result: Any, job: dict[str, Any]) -> pn.viewable.Viewable:
    """The viewable for one completed job's result."""
    builders = {"scalar": scalar_view, "record": record_view, "table": table_view, "matrix": matrix_view,
                "histogram": histogram_view, "volcano": volcano_view, "dataset": dataset_view}
    builder = builders.get(kind or "", raw_view)
    try:
        view = builder(result, job)
    except (KeyError, TypeError, ValueError) as exc:  # a result of an unexpected shape: show it as it is
        return pn.Column(_html(f"<div class='pc-muted'>Cannot draw this {esc(kind)} result ({esc(exc)}); raw value:</div>"),
                         raw_view(result, job), sizing_mode="stretch_width")
    ds = job.get("result_dataset_id") or (result.get("result_dataset_id") if isinstance(result, dict) else None)
    if not ds or kind == "dataset":  # a dataset result is the link itself
        return view
    link = _html(f"<div class='pc-muted'>The full result is the dataset <a href='./data?dataset={esc(ds)}' "
                 f"data-testid='result-dataset'>{esc(ds)}</a> (listed on the Data page under “Show job results”).</div>")
    return pn.Column(link, view, sizing_mode="stretch_width")


def _html(text: str, **kw: Any) -> pn.pane.HTML:
    return pn.pane.HTML(text, stylesheets=[CSS], sizing_mode="stretch_width", **kw)


def scalar_view(result: Any, job: dict[str, Any]) -> pn.viewable.Viewable:
    value = result.get("value") if isinstance(result, dict) else result
    what = f"{result.get('operation', '')} of {result.get('column', '')}" if isinstance(result, dict) else ""
    return _html(f"<div class='pc-big' data-testid='result-value' data-value='{esc(json.dumps(value))}'>"
                 f"{esc(fmt_number(value))}</div><div class='pc-big-caption'>{esc(what)}</div>")


def record_view(result: Any, job: dict[str, Any]) -> pn.viewable.Viewable:
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(_short(v))}</td></tr>" for k, v in (result or {}).items())
    return _html(f"<table class='pc-kv' data-testid='result-record'>{rows}</table>")


def _short(value: Any) -> str:
    if isinstance(value, float):
        return fmt_number(value)
    if isinstance(value, list) and len(value) > 12:
        return f"{json.dumps(value[:12])[:-1]}, … ({len(value)} items)]"
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def table_view(result: Any, job: dict[str, Any]) -> pn.viewable.Viewable:
    frame = pd.DataFrame.from_records(result.get("rows") or [], columns=result.get("columns"))
    notes = []
    if result.get("truncated"):
        notes.append(f"Showing the first {len(frame):,} of {result.get('total_rows', 0):,} rows.")
    extra = {k: v for k, v in result.items() if k not in ("rows", "columns", "truncated", "total_rows", "result_dataset_id")}
    if extra:
        notes.append(" · ".join(f"{esc(k)}: {esc(_short(v))}" for k, v in extra.items()))
    table = pn.widgets.Tabulator(frame, show_index=False, disabled=True, pagination="local", page_size=15,
                                 layout="fit_data_table", sizing_mode="stretch_width", css_classes=["result-table"],
                                 titles=esc_titles(frame.columns),
                                 formatters=number_formatters(frame))
    return pn.Column(_html(f"<div class='pc-muted'>{'<br>'.join(notes)}</div>") if notes else None, table,
                     sizing_mode="stretch_width")


def matrix_view(result: Any, job: dict[str, Any]) -> pn.viewable.Viewable:
    labels, matrix = result["labels"], result["matrix"]
    cells = [(labels[j], labels[i], matrix[i][j]) for i in range(len(labels)) for j in range(len(labels))]
    heat = hv.HeatMap(cells, kdims=["x", "y"], vdims=["r"]).opts(
        cmap="RdBu_r", clim=(-1, 1), alpha=0.8, colorbar=True, tools=["hover"], xrotation=30, responsive=True, height=380,
        title=f"{result.get('method', '')} correlation", xlabel="", ylabel="", invert_yaxis=True)
    if len(labels) <= 12:
        text = hv.Labels([(x, y, f"{v:.2f}" if v is not None else "") for x, y, v in cells], kdims=["x", "y"], vdims=["text"])
        heat = heat * text.opts(text_font_size="10pt", text_color="black")
    return pn.pane.HoloViews(heat, sizing_mode="stretch_width", css_classes=["result-matrix"])


def histogram_view(result: Any, job: dict[str, Any]) -> pn.viewable.Viewable:
    edges, counts = result["edges"], result["counts"]
    if not counts:
        return _html("<div class='pc-muted'>The column holds no values.</div>")
    bars = hv.Histogram((edges, counts), kdims=[result.get("column", "value")], vdims=["count"]).opts(
        tools=["hover"], responsive=True, height=340, color="#1c7ed6", line_color="white",
        yformatter=NumeralTickFormatter(format="0,0"),
        title=f"{result.get('column', '')}: {sum(counts):,} values in {len(counts)} bins")
    return pn.pane.HoloViews(bars, sizing_mode="stretch_width", css_classes=["result-histogram"])


def volcano_view(result: Any, job: dict[str, Any]) -> pn.viewable.Viewable:
    frame = pd.DataFrame.from_records(result.get("rows") or [], columns=result.get("columns"))
    x, y = result.get("x", "log2_fold_change"), result.get("y", "neg_log10_q")
    frame = frame.dropna(subset=[x, y])
    hit = (frame["q_value"] < SIGNIFICANT_Q) & (frame[x].abs() >= SIGNIFICANT_LFC)
    label = f"q < {SIGNIFICANT_Q} and |log2FC| ≥ {SIGNIFICANT_LFC:g}"
    frame["significance"] = hit.map({True: label, False: "other"})
    plot = hv.Scatter(frame, x, [y, "feature", "q_value", "significance"]).opts(
        color="significance", cmap={"other": "#adb5bd", label: "#e03131"}, size=6, alpha=0.75, tools=["hover"],
        responsive=True, height=380, legend_position="top_left",
        xlabel=f"log2 fold change ({result.get('b')} / {result.get('a')})", ylabel="-log10 q",
        title=_volcano_title(int(hit.sum()), len(frame), result))
    return pn.Column(pn.pane.HoloViews(plot, sizing_mode="stretch_width", css_classes=["result-volcano"]),
                     table_view({**result, "rows": result.get("rows", [])[:200]}, job), sizing_mode="stretch_width")


def _volcano_title(hits: int, shown: int, result: dict[str, Any]) -> str:
    if result.get("truncated"):  # inline rows are the best-ranked ones (sorted by q)
        return f"{hits} significant among the {shown:,} best-ranked of {result.get('total_rows', shown):,} features"
    return f"{hits} of {shown:,} features significant"


def dataset_view(result: Any, job: dict[str, Any]) -> pn.viewable.Viewable:
    ds = (result or {}).get("result_dataset_id") or job.get("result_dataset_id")
    rows = (result or {}).get("rows")
    link = f"<a class='pc-linkbutton' href='./data?dataset={esc(ds)}' data-testid='result-dataset'>{esc(ds)}</a>" if ds else "—"
    cols = ", ".join((result or {}).get("columns") or [])
    return _html(f"<div class='pc-big-caption'>Written as a new dataset</div><div style='margin:8px 0'>{link}</div>"
                 f"<table class='pc-kv'><tr><th>Rows</th><td data-testid='result-rows'>{fmt_number(rows)}</td></tr>"
                 f"<tr><th>Partitions</th><td>{esc((result or {}).get('n_partitions', '—'))}</td></tr>"
                 f"<tr><th>Columns</th><td>{esc(cols)}</td></tr></table>")


def raw_view(result: Any, job: dict[str, Any]) -> pn.viewable.Viewable:
    return pn.pane.JSON(result, depth=2, sizing_mode="stretch_width")
