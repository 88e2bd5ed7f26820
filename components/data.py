"""Datasets: register by path, upload a file, the dataset table, a detail view with
schema and preview, and partitioning (a job whose progress is polled while it runs)."""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pandas as pd
import panel as pn
import param

from app.errors import InvalidRequest, PayloadTooLarge, ProcessingError
from app.models import PartitionRequest, RegisterDatasetRequest, public_params
from app.service import ProcessingService

from .forms import ParamField, error_field
from .results import record_view
from .theme import CSS, TextAlert, badge, esc, esc_titles, fmt_bytes, fmt_number, number_formatters, progress_bar

UPLOAD_ACCEPT = ".csv,.tsv,.parquet,.pq,.json,.jsonl,.ndjson"


def _fields(model: type[param.Parameterized], keys: tuple[str, ...]) -> dict[str, ParamField]:
    params = public_params(model)
    return {k: ParamField(k, params[k], required=k in ("source",)) for k in keys}


class _Form(pn.viewable.Viewer):
    """Shared pieces: a message line and errors shown under their field."""

    service = param.ClassSelector(class_=ProcessingService, doc="The process's service.")
    registered = param.String(default=None, allow_None=True, doc="The id of the dataset this form added last.")

    _refused = "Not added"  # how the form's message begins when the service refuses

    def _setup(self, fields: dict[str, ParamField]) -> None:
        self.fields = fields
        self._message = TextAlert("", alert_type="light", visible=False, sizing_mode="stretch_width")

    def _say(self, text: str, kind: str) -> None:
        self._message.object, self._message.alert_type, self._message.visible = text, kind, True

    def _clear(self) -> None:
        for field in self.fields.values():
            field.show("")
        self._message.visible = False

    def _error(self, exc: ProcessingError) -> None:
        keys = error_field(exc, set(self.fields))
        for key in keys:
            self.fields[key].show(exc.message)
        self._say(f"{self._refused}: {exc.message}", "danger")  # the problem itself, also under its field

    def _read(self) -> dict[str, Any]:
        values = {}
        for key, field in self.fields.items():
            present, value = field.read()
            values[key] = value if present and value != "" else None
        return values


class RegisterForm(_Form):
    """Register a file, folder, glob or URL that the server can read."""

    def __init__(self, **params: Any):
        super().__init__(**params)
        self._setup(_fields(RegisterDatasetRequest, ("source", "dataset_id", "name", "format", "description")))
        self.fields["source"].widget.placeholder = "/data/expression/*.parquet"
        self.fields["source"].layout.width, self.fields["source"].layout.sizing_mode = None, "stretch_width"
        self._button = pn.widgets.Button(label="Register", color="primary", css_classes=["register-dataset"])
        self._button.on_click(self._on_register)

    async def _on_register(self, _: Any) -> None:
        self._clear()
        v = self._read()
        self._button.loading = True
        try:
            ds = await self.service.datasets.register(v["source"] or "", v["dataset_id"], v["name"],
                                                      v["description"] or "", v["format"])
        except ProcessingError as exc:
            self._error(exc)
            return
        finally:
            self._button.loading = False
        self._say(f"Registered {ds['dataset_id']}: {len(ds['columns'])} columns.", "success")
        self.registered = ds["dataset_id"]

    def __panel__(self) -> pn.viewable.Viewable:
        f = self.fields
        return pn.Column(f["source"].layout, pn.FlexBox(f["dataset_id"].layout, f["name"].layout, f["format"].layout),
                         f["description"].layout, self._button, self._message, sizing_mode="stretch_width")


class UploadForm(_Form):
    """Upload a CSV, TSV, Parquet or JSON-lines file (drop it on the file field)."""

    def __init__(self, **params: Any):
        super().__init__(**params)
        self._file = pn.widgets.FileInput(accept=UPLOAD_ACCEPT, multiple=False, sizing_mode="stretch_width",
                                          css_classes=["upload-file"])
        fields = {"file": ParamField("file", widget=self._file)}
        fields.update(_fields(RegisterDatasetRequest, ("dataset_id", "name", "description")))
        fields["delimiter"] = ParamField("delimiter", widget=pn.widgets.TextInput(
            name="delimiter", placeholder="if not a comma, e.g. ;", description="CSV delimiter when not a comma.",
            sizing_mode="stretch_width"))
        self._setup(fields)
        fields["file"].layout.width, fields["file"].layout.sizing_mode = None, "stretch_width"
        self._button = pn.widgets.Button(label="Upload", color="primary", css_classes=["upload-dataset"])
        self._button.on_click(self._on_upload)
        self._file.param.watch(self._on_file, "value")

    def _on_file(self, _: Any) -> None:
        if self._file.value is not None:
            self._say(f"Ready to upload {self._file.filename} ({len(self._file.value):,} bytes).", "info")

    async def _on_upload(self, _: Any) -> None:
        self._clear()
        data, filename = self._file.value, self._file.filename
        if not data or not filename:
            self.fields["file"].show("choose or drop a file first")
            return
        limit = self.service.settings.max_upload_mb * 1e6
        self._button.loading = True
        try:
            if len(data) > limit:
                raise PayloadTooLarge(f"the file is {len(data) / 1e6:.1f} MB; the limit is "
                                      f"{self.service.settings.max_upload_mb:g} MB (MAX_UPLOAD_MB)", {"field": "file"})
            ds = await self._store(data, filename, self._read())
        except InvalidRequest as exc:
            if exc.details.get("field") == "filename":
                exc.details["field"] = "file"
            self._error(exc)
            return
        except ProcessingError as exc:
            self._error(exc)
            return
        finally:
            self._button.loading = False
        self._say(f"Uploaded {filename} as {ds['dataset_id']}: {len(ds['columns'])} columns "
                  f"({', '.join(ds['columns'][:8])}{'…' if len(ds['columns']) > 8 else ''}).", "success")
        self.registered = ds["dataset_id"]

    async def _store(self, data: bytes, filename: str, v: dict[str, Any]) -> dict[str, Any]:
        """Write the bytes to a fresh upload path in the executor, then let the registry adopt it."""
        tmp, _fmt = self.service.datasets.upload_target(filename)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.service.executor, tmp.write_bytes, data)
        options = {"delimiter": v["delimiter"]} if v.get("delimiter") else {}
        try:
            return await self.service.datasets.adopt_upload(
                tmp, filename=filename, dataset_id=v["dataset_id"], name=v["name"] or Path(filename).stem,
                description=v["description"] or "", options=options)
        finally:
            await loop.run_in_executor(self.service.executor, lambda: tmp.unlink(missing_ok=True))

    def __panel__(self) -> pn.viewable.Viewable:
        f = self.fields
        return pn.Column(pn.pane.HTML("<div class='pc-help'>Drop a file on the field below, or click it to choose one. "
                                      f"Up to {self.service.settings.max_upload_mb:g} MB.</div>", stylesheets=[CSS]),
                         f["file"].layout,
                         pn.FlexBox(f["dataset_id"].layout, f["name"].layout, f["delimiter"].layout),
                         f["description"].layout, self._button, self._message, sizing_mode="stretch_width")


class PartitionForm(_Form):
    """Rewrite the dataset as balanced Parquet partitions; shows the job's progress, then its result."""

    dataset_id = param.String(default=None, allow_None=True, doc="The dataset to partition.")
    finished = param.String(default=None, allow_None=True, doc="The id of the partition job that ended last.")

    _refused = "Not partitioned"

    def __init__(self, **params: Any):
        super().__init__(**params)
        self._setup(_fields(PartitionRequest, ("n_partitions", "partition_size_mb")))
        self._button = pn.widgets.Button(label="Start partitioning", color="primary", css_classes=["partition-dataset"])
        self._progress = pn.pane.HTML("", stylesheets=[CSS], sizing_mode="stretch_width")
        self._result = pn.Column(sizing_mode="stretch_width")
        self._button.on_click(self._on_partition)
        self._job_id: str | None = None
        self._poll: Any = None
        self._checking = False  # a status read is under way (the next poll skips)

    async def _on_partition(self, _: Any) -> None:
        self._clear()
        v = self._read()
        self._button.disabled = True
        self._result.objects = []
        self._progress.object = progress_bar(0, testid="partition-progress", label="queued")
        self._job_id = None
        self._poll = pn.state.add_periodic_callback(self._check, period=1000)
        try:  # the service's one partition path: it submits the job and waits for it a while
            finished, status = await self.service.partition(self.dataset_id, v["n_partitions"], v["partition_size_mb"])
        except ProcessingError as exc:
            self._stop_polling()
            self._button.disabled = False
            self._progress.object = ""
            self._error(exc)
            return
        self._job_id = status["job_id"]
        await self._check()

    async def _check(self) -> None:
        """Poll the partition job (only while one runs in this session); its status is read on the read pool."""
        if self._job_id is None:  # the service has not answered yet: follow the running partition of this dataset
            live = next((r for r in self.service.jobs.running_view()
                         if r["operation"] == "partition" and r["dataset_id"] == self.dataset_id), None)
            if live:
                self._progress.object = progress_bar(live["progress"], testid="partition-progress")
            return
        if self._checking:
            return
        self._checking, job_id = True, self._job_id
        try:
            st = await self.service.reading(self.service.jobs.status, job_id)
        except ProcessingError as exc:
            if job_id == self._job_id:
                self._stop(exc.message, "danger")
            return
        finally:
            self._checking = False
        if job_id != self._job_id:
            return
        label = "queued" if st["status"] == "pending" else None
        why = f" · {esc(st['pending_reason'])}" if st.get("pending_reason") else ""
        self._progress.object = (progress_bar(st["progress"] or 0, testid="partition-progress", label=label)
                                 + f"<div class='pc-muted'>{badge(st['status'])} <a href='./jobs?job={esc(st['job_id'])}'>"
                                 f"{esc(st['job_id'])}</a>{why}</div>")
        if st["status"] == "completed":
            self._result.objects = [record_view(st["result"], st)]
            self._stop(f"Partitioned into {st['result']['n_partitions']} files; later jobs read them.", "success")
        elif st["status"] in ("failed", "cancelled"):
            self._stop(f"Partitioning {st['status']}: {(st.get('error') or {}).get('message', '')}", "danger")

    def _stop_polling(self) -> None:
        if self._poll is not None:
            self._poll.stop()
            self._poll = None

    def _stop(self, text: str, kind: str) -> None:
        self._stop_polling()
        self._button.disabled = False
        self._say(text, kind)
        self.finished = self._job_id

    def __panel__(self) -> pn.viewable.Viewable:
        f = self.fields
        return pn.Column(pn.FlexBox(f["n_partitions"].layout, f["partition_size_mb"].layout),
                         self._button, self._progress, self._message, self._result, sizing_mode="stretch_width")


class DatasetDetail(pn.viewable.Viewer):
    """One dataset: sizes, schema, a preview of its first rows and the partition form."""

    service = param.ClassSelector(class_=ProcessingService, doc="The process's service.")
    dataset_id = param.String(default=None, allow_None=True, doc="The dataset shown.")
    preview_rows = param.Integer(default=20, bounds=(0, 1000), doc="Rows of preview.")

    def __init__(self, **params: Any):
        super().__init__(**params)
        self._header = pn.pane.HTML("", stylesheets=[CSS], sizing_mode="stretch_width")
        self._preview = pn.widgets.Tabulator(pd.DataFrame(), show_index=False, disabled=True, visible=False,
                                             layout="fit_data_table", sizing_mode="stretch_width", height=320,
                                             css_classes=["dataset-preview"])
        self.partition = PartitionForm(service=self.service)
        self._partition_card = pn.Card(self.partition, title="Partition as balanced Parquet files", visible=False,
                                       sizing_mode="stretch_width", collapsible=False,
                                       collapsed=False)
        self.partition.param.watch(lambda _e: pn.state.execute(self.load), "finished")

    @param.depends("dataset_id", watch=True, on_init=True)
    async def load(self) -> None:
        """Read the dataset and its preview (in the executor) and draw them."""
        self.partition.dataset_id = self.dataset_id
        if not self.dataset_id:
            self._header.object = "<div class='pc-muted'>Select a dataset in the table.</div>"
            self._preview.visible = self._partition_card.visible = False
            return
        self._header.object = f"<div class='pc-muted'>Loading {esc(self.dataset_id)}…</div>"
        try:
            # the row first, on the read pool: ``detail`` then finds it in the registry's memory
            await self.service.reading(self.service.datasets.get, self.dataset_id)
            ds = await self.service.datasets.detail(self.dataset_id, self.preview_rows)
        except ProcessingError as exc:
            self._header.object = f"<div class='pc-fail'>{esc(exc.message)}</div>"
            self._preview.visible = self._partition_card.visible = False
            return
        self._header.object = render_dataset(ds)
        frame = pd.DataFrame.from_records(ds.get("preview") or [], columns=ds["columns"])
        self._preview.titles = esc_titles(ds["columns"])
        self._preview.formatters = number_formatters(frame)
        self._preview.value = frame
        self._preview.visible = bool(ds.get("preview"))
        self._partition_card.visible = True

    def __panel__(self) -> pn.viewable.Viewable:
        # the form before the preview: a 20-row preview pushed it below the fold at 1080 px
        title = pn.pane.HTML("<div><b>Preview</b> <span class='pc-muted'>(first rows)</span></div>", stylesheets=[CSS],
                             visible=self._preview.param.visible)
        return pn.Column(self._header, self._partition_card, title, self._preview, sizing_mode="stretch_width")


def render_dataset(ds: dict[str, Any]) -> str:
    parts = ds.get("partitioned") or {}
    facts = [
        ("Source", f"<code>{esc(ds['source'])}</code>"), ("Format", esc(ds["format"])),
        ("Rows (estimated)", fmt_number(ds.get("estimated_rows"))), ("Size", fmt_bytes(ds.get("size_bytes"))),
        ("Files", esc(ds.get("file_count"))),
        ("Partitioned copy", f"{parts['n_partitions']} files, {fmt_number(parts.get('rows'))} rows" if parts else "none"),
        ("Registered", esc((ds.get("created_at") or "")[:19].replace("T", " "))),
    ]
    if ds.get("origin_job_id"):
        facts.append(("Written by", f"<a href='./jobs?job={esc(ds['origin_job_id'])}'>{esc(ds['origin_job_id'])}</a>"))
    kv = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in facts)
    schema = "".join(f"<tr><td data-testid='schema-column'>{esc(c['name'])}</td><td>{esc(c['dtype'])}</td></tr>"
                     for c in ds.get("schema") or [])
    jobs_link = f"<a class='pc-linkbutton' href='./jobs?dataset={esc(ds['dataset_id'])}'>Run a job on it</a>"
    return (f"<div class='pc-title'><span data-testid='dataset-title'>{esc(ds['name'])}</span>"
            f"<code>{esc(ds['dataset_id'])}</code> {jobs_link}</div>"
            f"<div class='pc-muted'>{esc(ds.get('description') or '')}</div>"
            f"<div class='pc-grid' style='margin-top:8px'><table class='pc-kv'>{kv}</table>"
            f"<div><b>Schema ({len(ds.get('schema') or [])} columns)</b><table class='pc-table' data-testid='dataset-schema'>"
            f"<tr><th>Column</th><th>Type</th></tr>{schema}</table></div></div>")
