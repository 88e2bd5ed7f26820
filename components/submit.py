"""The job submission form, generated from the models: the job's own fields from
``JobRequest`` and the operation's fields from ``get_operation(name).Params``."""
from __future__ import annotations

import asyncio
import math
from typing import Any

import panel as pn
import param

from app.errors import ProcessingError
from app.models import JobRequest, public_params, required_fields
from app.operations import catalogue, get as get_operation
from app.service import ProcessingService

from .forms import FieldError, ParamField, error_field
from .rows import RowsField
from .sql_editor import editor_fields
from .theme import CSS, TextAlert, esc

FORM_SKIPS = {"partition"}  # partitioning has its own form on the Data page
JOB_LABELS = {"priority": "Priority", "max_cores": "Cores", "max_memory_gb": "Memory (GB)"}


DATASETS_SHOWN = 500


def dataset_choices(rows: list[dict[str, Any]]) -> dict[str, str]:
    """Dataset picker options, "name (id)" → id, newest first (``rows``: ``datasets.list``'s)."""
    return {(f"{d['name']} ({d['dataset_id']})" if d["name"] != d["dataset_id"] else d["dataset_id"]): d["dataset_id"]
            for d in rows}


def thread_memory_gb(service: ProcessingService) -> float:
    """The memory of one worker thread (the smallest worker's limit over its threads), in GB.

    A job that reserves one core and this much runs beside others instead of
    taking the whole cluster; without workers, the service's default.
    """
    shares = [w["memory_limit_bytes"] / max(1, int(w.get("nthreads") or 1)) for w in service.workers()
              if w.get("memory_limit_bytes")]
    if not shares:
        return float(service.settings.default_max_memory_gb)
    return max(0.05, math.floor(min(shares) / 1e9 * 100) / 100)


def default_dataset(rows: list[dict[str, Any]]) -> str | None:
    """The newest dataset that is not a job's output (else the newest), of ``datasets.list``'s rows."""
    own = [d for d in rows if not d.get("origin_job_id")]
    return (own or rows or [{"dataset_id": None}])[0]["dataset_id"]


class SubmitForm(pn.viewable.Viewer):
    """Operation, dataset, the operation's parameters, priority and resources; errors inline."""

    service = param.ClassSelector(class_=ProcessingService, doc="The process's service.")
    operation = param.String(default="aggregate", doc="The operation selected first.")
    dataset_id = param.String(default=None, allow_None=True, doc="The dataset selected first (default: the newest).")
    submitted = param.String(default=None, allow_None=True, doc="The id of the job this form submitted last.")

    def __init__(self, **params: Any):
        super().__init__(**params)
        entries = [e for e in catalogue() if e["name"] not in FORM_SKIPS]
        self._entries = {e["name"]: e for e in entries}
        first_op = self.operation if self.operation in self._entries else entries[0]["name"]
        op_widget = pn.widgets.Select(name="Operation", options={e["title"]: e["name"] for e in entries},
                                      value=first_op, sizing_mode="stretch_width")
        # the datasets, then the chosen one's columns, are read on the store's read pool once the page is up
        ds_widget = pn.widgets.Select(name="Dataset", options={}, value=None, sizing_mode="stretch_width")
        self._datasets_read = asyncio.Event()  # set once the picker holds the datasets (a clone waits for it)
        self._operation = ParamField("job_operation", widget=op_widget)  # "operation" is also an aggregate parameter
        self._dataset = ParamField("dataset_id", widget=ds_widget)
        for field in (self._operation, self._dataset):
            field.layout.width, field.layout.sizing_mode = None, "stretch_width"
        self._about = pn.pane.HTML("", stylesheets=[CSS], sizing_mode="stretch_width", margin=(0, 10))
        self._job_fields = self._resource_fields()
        self._fields: dict[str, ParamField] = {}
        self._fields_box = pn.FlexBox(sizing_mode="stretch_width")
        self._submit = pn.widgets.Button(label="Submit job", color="primary", css_classes=["submit-job"], width=160)
        self._message = TextAlert("", alert_type="light", visible=False, sizing_mode="stretch_width")
        self._columns: dict[str, str] = {}
        op_widget.param.watch(lambda _e: self._build_fields(), "value")
        ds_widget.param.watch(lambda _e: pn.state.execute(self._load_columns), "value")
        self._submit.on_click(self._on_submit)
        self._build_fields()
        pn.state.execute(self._load_datasets)

    def _resource_fields(self) -> dict[str, ParamField]:
        s = self.service.settings
        fields = {}
        params = public_params(JobRequest)
        for key, label in JOB_LABELS.items():
            fields[key] = ParamField(key, params[key], label=label)
            fields[key].layout.width = 136  # the three on one line
        # one core and one worker thread's memory: default jobs run side by side
        fields["max_cores"].widget.value = float(min(1, s.default_max_cores))
        fields["max_memory_gb"].widget.value = thread_memory_gb(self.service)
        return fields

    async def _load_datasets(self) -> None:
        """Fill the dataset picker (the ``dataset_id`` asked for, else the default) from the read pool."""
        try:
            _, rows = await self.service.reading(self.service.datasets.list, DATASETS_SHOWN, 0)
            choices = dataset_choices(rows)
            widget = self._dataset.widget
            wanted = widget.value or self.dataset_id  # a clone may have chosen one meanwhile
            first = wanted if wanted in choices.values() else default_dataset(rows)
            widget.options, widget.value = choices, first
        finally:
            self._datasets_read.set()

    async def refresh_datasets(self) -> None:
        """Re-read the dataset list (after a dataset was registered elsewhere)."""
        await self._load_datasets()

    async def _load_columns(self) -> None:
        """The chosen dataset's columns for the fields that name columns (read on the read pool)."""
        ds_id = self._dataset.widget.value
        try:
            columns = self.service.datasets.schema(await self.service.reading(self.service.datasets.get, ds_id)) \
                if ds_id else {}
        except ProcessingError:
            columns = {}
        if ds_id != self._dataset.widget.value:
            return  # another dataset was chosen meanwhile (two reads of the same one answer alike)
        self._columns = columns
        for field in self._fields.values():
            field.set_columns(self._columns)

    def _build_fields(self) -> None:
        op = get_operation(self._operation.widget.value)
        entry = self._entries[op.name]
        required = set(required_fields(op.Params))
        self._fields = {key: (RowsField(key, p, op.item_models[key], key in required, self._columns)
                              if key in op.item_models and isinstance(p, param.List)  # conditions, steps: rows
                              else ParamField(key, p, key in required, self._columns, op.item_models.get(key)))
                        for key, p in public_params(op.Params).items()}
        self._fields.update(editor_fields(op, self._columns))  # SQL: the query editor with the columns
        self._fields_box.objects = [f.layout for f in self._fields.values()]
        self._about.object = (f"<div class='pc-help'>{esc(entry['description'])} "
                              f"<span class='pc-muted'>Result: {esc(entry['result_kind'])}. * required.</span></div>")
        self._message.visible = False

    async def prefill(self, values: dict[str, Any]) -> None:
        """Fill the form with a job's operation, dataset, parameters, priority and reservation
        (Clone on the job page), once the datasets and that dataset's columns are read; a value
        the form cannot show is left at its default."""
        await self._datasets_read.wait()
        if values.get("operation") in self._entries:
            self._operation.widget.value = values["operation"]
        if values.get("dataset_id") in self._dataset.widget.options.values():
            self._dataset.widget.value = values["dataset_id"]
        await self._load_columns()  # the parameters may name its columns
        for key, value in (values.get("parameters") or {}).items():
            if key in self._fields:
                self._fields[key].fill(value)
        for key in ("priority", "max_cores", "max_memory_gb"):
            if key in self._job_fields and values.get(key) is not None:
                self._job_fields[key].fill(values[key])
        self._say(f"Cloned from {values.get('job_id', 'a job')}: change what you need, then submit.", "info")

    def _all_fields(self) -> dict[str, ParamField]:
        return {"job_operation": self._operation, "dataset_id": self._dataset, **self._job_fields, **self._fields}

    def _body(self) -> dict[str, Any]:
        parameters = {}
        for key, field in self._fields.items():
            present, value = field.read()
            if present:
                parameters[key] = value
        body: dict[str, Any] = {"operation": self._operation.widget.value, "dataset_id": self._dataset.widget.value,
                                "parameters": parameters}
        for key, field in self._job_fields.items():
            present, value = field.read()
            if present:
                body[key] = value
        return body

    async def _on_submit(self, _: Any) -> None:
        fields = self._all_fields()
        for field in fields.values():
            field.show("")
        try:
            job = await self.service.jobs.submit(self._body())  # answered once the job is committed
        except FieldError as exc:
            fields[exc.key].show(exc.message)
            self._say(f"The job was not submitted: {exc.message}", "danger")
            return
        except ProcessingError as exc:
            self._show_error(exc, fields)
            return
        self._say(f"Submitted {job['job_id']} ({job['operation']}, {job['priority']}).", "success")
        self.submitted = job["job_id"]

    def _show_error(self, exc: ProcessingError, fields: dict[str, ParamField]) -> None:
        keys = error_field(exc, set(fields))
        if not keys and "total_cores" in exc.details:  # the job can never fit the cluster
            keys = ["max_cores" if "core" in exc.message else "max_memory_gb"]
        if exc.code == "dataset_not_found":
            keys = ["dataset_id"]
        if "operations" in exc.details:
            keys = ["job_operation"]
        for key in keys:
            missing = key in (exc.details.get("missing") or [])
            fields[key].show("required" if missing else exc.message)
        if keys:
            self._say("The job was not submitted: see the message under the field.", "danger")
        else:
            self._say(exc.message, "danger")

    def _say(self, text: str, kind: str) -> None:
        self._message.object, self._message.alert_type, self._message.visible = text, kind, True

    def __panel__(self) -> pn.viewable.Viewable:
        job_row = pn.FlexBox(*[f.layout for f in self._job_fields.values()], sizing_mode="stretch_width")
        return pn.Column(
            pn.Row(self._operation.layout, self._dataset.layout, sizing_mode="stretch_width"),
            self._about, self._fields_box, pn.pane.HTML("<b>Priority and resources</b>", margin=(10, 10, 0, 10)),
            job_row, pn.Row(self._submit), self._message, sizing_mode="stretch_width",
        )
