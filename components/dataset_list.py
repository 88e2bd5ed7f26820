"""The Data page's list of datasets: search by id or name, sort, the datasets jobs wrote
(``job_*_result``) hidden unless asked for, and delete after a confirmation naming the dataset."""
from __future__ import annotations

from typing import Any

import pandas as pd
import panel as pn
import param

from app.errors import ProcessingError
from app.service import ProcessingService

from .theme import CSS, TextAlert, esc, fmt_bytes, fmt_number

TABLE_TITLES = {"dataset_id": "Dataset", "name": "Name", "format": "Format", "rows": "Rows (est.)",
                "size": "Size", "files": "Files", "partitions": "Partitions", "created": "Registered (UTC)"}
HIDDEN = ["size_bytes", "origin_job_id"]  # kept in the frame to sort and filter by, not shown
SORTS = {"Newest first": ("created", False), "Oldest first": ("created", True), "Name (A–Z)": ("name", True),
         "Size (largest first)": ("size_bytes", False)}


def dataset_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    out = [{
        "dataset_id": d["dataset_id"], "name": d["name"], "format": d["format"],
        "rows": fmt_number(d.get("estimated_rows")), "size": fmt_bytes(d.get("size_bytes")),
        "files": d.get("file_count") or 0, "partitions": (d.get("partitioned") or {}).get("n_partitions") or "",
        "created": (d.get("created_at") or "")[:19].replace("T", " "),
        "size_bytes": d.get("size_bytes") or 0, "origin_job_id": d.get("origin_job_id") or "",
    } for d in rows]
    return pd.DataFrame(out, columns=[*TABLE_TITLES, *HIDDEN])


def shown(frame: pd.DataFrame, search: str, sort: str, with_results: bool) -> pd.DataFrame:
    """The rows the list shows: job results only when asked, matching ``search``, in ``sort`` order."""
    if not with_results:
        frame = frame[frame["origin_job_id"] == ""]
    text = search.strip().lower()
    if text:
        frame = frame[frame["dataset_id"].str.lower().str.contains(text, regex=False)
                      | frame["name"].str.lower().str.contains(text, regex=False)]
    column, ascending = SORTS[sort]
    key = (lambda s: s.str.lower()) if column == "name" else None
    return frame.sort_values([column, "dataset_id"], ascending=[ascending, True], key=key, kind="stable")


class DatasetTable(pn.viewable.Viewer):
    """Registered datasets; a click selects one, which can then be deleted (after a confirmation)."""

    service = param.ClassSelector(class_=ProcessingService, doc="The process's service.")
    selected = param.String(default=None, allow_None=True, doc="The dataset whose row was clicked last.")
    limit = param.Integer(default=1000, bounds=(1, 10000), doc="Most datasets read (the newest).")
    search = param.String(default="", doc="Show only datasets whose id or name contains this (any case).")
    sort = param.Selector(default="Newest first", objects=list(SORTS), doc="Order of the list.")
    show_results = param.Boolean(default=False, doc="Also list the datasets that jobs wrote (job_*_result).")
    deleted = param.String(default=None, allow_None=True, doc="The id of the dataset deleted last.")

    def __init__(self, **params: Any):
        super().__init__(**params)
        self._all = dataset_frame([])
        self._total = 0
        self._table = pn.widgets.Tabulator(self._all, show_index=False, disabled=True, selectable=1,
                                           titles=TABLE_TITLES, layout="fit_data_stretch", sizing_mode="stretch_width",
                                           pagination="local", page_size=10, css_classes=["dataset-table"],
                                           hidden_columns=HIDDEN,
                                           # long ids and names are cut (whole on hover), never the later columns
                                           widths={"dataset_id": 180, "name": 200, "created": 165},
                                           formatters={"dataset_id": {"type": "html"}, "name": {"type": "html"}},
                                           configuration={"columnDefaults": {"tooltip": True}})
        self._search = pn.widgets.TextInput(placeholder="Search by id or name", width=260,
                                            css_classes=["dataset-search"])
        self._search.param.watch(lambda e: setattr(self, "search", e.new or ""), "value_input")
        self._sort = pn.widgets.Select.from_param(self.param.sort, name="", width=190, css_classes=["dataset-sort"])
        self._results = pn.widgets.Checkbox.from_param(self.param.show_results, name="Show job results",
                                                       css_classes=["dataset-show-results"], align="center")
        self._delete = pn.widgets.Button(label="Delete…", color="danger", variant="outline", disabled=True,
                                         css_classes=["delete-dataset"], align="center")
        self._confirm_text = pn.pane.HTML("", stylesheets=[CSS], sizing_mode="stretch_width")
        self._yes = pn.widgets.Button(label="Yes, delete it", color="danger", css_classes=["confirm-delete"])
        self._no = pn.widgets.Button(label="Keep it", css_classes=["cancel-delete"])
        self._confirm = pn.Column(self._confirm_text, pn.Row(self._yes, self._no), visible=False,
                                  sizing_mode="stretch_width", css_classes=["delete-confirm"])
        self._message = TextAlert("", alert_type="light", visible=False, sizing_mode="stretch_width")
        self._info = pn.pane.HTML("", stylesheets=[CSS])
        self._table.on_click(self._on_click)
        self._delete.on_click(self._ask)
        self._no.on_click(lambda _e: setattr(self._confirm, "visible", False))
        self._yes.on_click(self._on_delete)
        # the rows are read on the store's read pool once the page is up (nothing is read while it is built)
        self._draw()
        pn.state.onload(self.refresh)

    def _on_click(self, event: Any) -> None:
        self.selected = self._table.value.iloc[event.row]["dataset_id"]

    @param.depends("selected", watch=True)
    def _selected_changed(self) -> None:
        self._delete.disabled = not self.selected
        self._confirm.visible = False

    async def refresh(self) -> None:
        """Read the datasets (on the store's read pool) and show them."""
        self._total, rows = await self.service.reading(self.service.datasets.list, self.limit, 0)
        self._all = dataset_frame(rows)
        self._draw()

    @param.depends("search", "sort", "show_results", watch=True)
    def _draw(self) -> None:
        view = shown(self._all, self.search, self.sort, self.show_results)
        # shown escaped, through the html formatter: Tabulator's hover tooltip (the whole text of
        # a cut cell) puts the value into the page as HTML, where a name's markup ran; ids are
        # [A-Za-z0-9_.-], which escaping leaves as they are (a click still reads the real id)
        self._table.value = view.reset_index(drop=True).assign(dataset_id=lambda f: f["dataset_id"].map(esc),
                                                               name=lambda f: f["name"].fillna("").map(esc))
        results = int((self._all["origin_job_id"] != "").sum())
        hidden = f", {results} job result{'s' * (results != 1)} hidden" if results and not self.show_results else ""
        matching = f"{len(view)} of " if self.search.strip() else ""
        more = f" (the newest {self.limit} read)" if self._total > self.limit else ""
        self._info.object = (f"<div class='pc-pager' data-testid='dataset-count'>{matching}{self._total} datasets"
                             f"{hidden}{more}</div>")

    def _ask(self, _: Any) -> None:
        row = self._all[self._all["dataset_id"] == self.selected]
        name = row["name"].iloc[0] if len(row) else self.selected
        self._confirm_text.object = (f"<div class='pc-reason' data-testid='delete-confirm'>Delete the dataset "
                                     f"<b>{esc(name)}</b> (<code>{esc(self.selected)}</code>)? It is removed from the "
                                     "list; files the service wrote for it are deleted, your own files are not.</div>")
        self._confirm.visible = True
        self._message.visible = False

    async def _on_delete(self, _: Any) -> None:
        dataset_id = self.selected
        self._yes.loading = True
        try:
            await self.service.delete_dataset(dataset_id)
        except ProcessingError as exc:  # e.g. 409: a pending or running job uses it
            self._say(exc.message, "danger")
            return
        finally:
            self._yes.loading = False
            self._confirm.visible = False
        self._say(f"Deleted {dataset_id}.", "success")
        self.selected = None
        self.deleted = dataset_id
        await self.refresh()

    def _say(self, text: str, kind: str) -> None:
        self._message.object, self._message.alert_type, self._message.visible = text, kind, True

    def __panel__(self) -> pn.viewable.Viewable:
        tools = pn.Row(self._search, self._sort, self._results, pn.layout.HSpacer(), self._delete,
                       sizing_mode="stretch_width")
        return pn.Column(tools, self._confirm, self._message, self._table, self._info, sizing_mode="stretch_width")
