"""Rows instead of hand-written JSON for list-of-object parameters (filter's conditions,
transform's steps): one row per item, a widget per field of the item's param model.

Column fields pick from the dataset's schema; a ``value`` field follows the row's column
and operator: a number input for a numeric column, text for a string, a comma-separated
list for ``in``/``not_in``, two values for ``between``, nothing for ``is_null``. The rows
read back as exactly the list of objects the API takes, and a row that cannot be read
says which row and what is wrong ("Row 2: choose a column").
"""
from __future__ import annotations

from typing import Any

import panel as pn
import param

from app.models import public_params, required_fields

from .forms import FieldError, column_options, is_column_param
from .theme import CSS, esc

NO_VALUE = ("is_null", "not_null")
LIST_VALUE = ("in", "not_in")
WORDS = {"column": "choose a column", "group_by": "choose a column", "op": "choose an operator",
         "fn": "choose a function"}


def numeric(dtype: str | None) -> str | None:
    """"int", "float" or None (not a number column) from a schema dtype."""
    text = (dtype or "").lower()
    if text.startswith(("int", "uint")):
        return "int"
    if text.startswith(("float", "double", "decimal")):
        return "float"
    return None


def parse_scalar(text: str, kind: str | None, row: int) -> Any:
    """A value typed in a text box, as the column's type wants it."""
    text = text.strip()
    if kind is None:
        return text
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"Row {row}: '{text}' is not a number") from None
    return int(number) if kind == "int" and number.is_integer() else number


class Row:
    """One item: its widgets and how it reads."""

    def __init__(self, model: type[param.Parameterized], columns: dict[str, str], on_remove: Any):
        self.params = public_params(model)
        self.required = set(required_fields(model))
        self.columns = columns
        self.widgets: dict[str, Any] = {}
        for key, p in self.params.items():
            if key == "value":
                continue
            label = f"{key} *" if key in self.required else key
            if is_column_param(key):
                self.widgets[key] = pn.widgets.Select(name=label, options=column_options(columns), value=None, width=125)
            elif isinstance(p, param.Selector):
                self.widgets[key] = pn.widgets.Select(name=label, options=[None, *p.objects], value=None, width=80)
            else:
                self.widgets[key] = pn.widgets.TextInput(name=label, placeholder="optional", width=125)
        self.value_box = pn.Column(margin=0, css_classes=["pc-row-value"])
        self.value_widgets: list[Any] = []
        self._shape: tuple[str, str | None] | None = None
        self.remove = pn.widgets.Button(label="✕", width=34, align="end", css_classes=["remove-row"],
                                        description="Remove this row")
        self.remove.on_click(lambda _e: on_remove(self))
        for key in ("column", "op"):
            if key in self.widgets:
                self.widgets[key].param.watch(lambda _e: self._value_inputs(), "value")
        boxes = [pn.Column(w, margin=0, css_classes=[f"pc-row-{k}"]) for k, w in self.widgets.items()]
        self.label = pn.pane.HTML("", width=22, margin=(0, 0, 14, 0), align="end", stylesheets=[CSS])
        # a row wraps where the form is narrow (transform's four fields)
        self.layout = pn.FlexBox(self.label, *boxes, *([self.value_box] if "value" in self.params else []), self.remove,
                                 css_classes=["pc-row"], margin=(0, 0, 4, 0), align_items="flex-end",
                                 sizing_mode="stretch_width")
        self._value_inputs()

    def _value_inputs(self, values: list[Any] | None = None) -> None:
        """The value widgets for this row's column type and operator."""
        if "value" not in self.params:
            return
        op = self.widgets["op"].value if "op" in self.widgets else None
        kind = numeric(self.columns.get(self.widgets["column"].value)) if "column" in self.widgets else None
        shape = "none" if op in NO_VALUE else "list" if op in LIST_VALUE else "pair" if op == "between" else "one"
        if values is None and (shape, kind) == self._shape:
            return  # same inputs: keep what was typed (e.g. > changed to >=)
        self._shape = (shape, kind)
        if op in NO_VALUE:
            widgets: list[Any] = []
        elif op in LIST_VALUE:
            widgets = [pn.widgets.TextInput(name="values, comma-separated", placeholder="a, b, c", width=120)]
        else:
            count = 2 if op == "between" else 1
            names = ["low", "high"] if count == 2 else ["value"]
            width = 50 if count == 2 else 120  # the same room: the row keeps one line
            if kind == "int":
                widgets = [pn.widgets.IntInput(name=n, value=None, width=width) for n in names]
            elif kind == "float":
                widgets = [pn.widgets.FloatInput(name=n, value=None, width=width) for n in names]
            else:
                widgets = [pn.widgets.TextInput(name=n, placeholder="text", width=width) for n in names]
        for widget, value in zip(widgets, values or []):
            widget.value = value if not isinstance(widget, pn.widgets.TextInput) else (
                ", ".join(map(str, value)) if isinstance(value, list) else str(value))
        self.value_widgets = widgets
        self.value_box.objects = [pn.Row(*widgets, margin=0)] if widgets else []

    def read(self, number: int) -> dict[str, Any]:
        """The item as the API takes it; raises ValueError naming the row and the problem."""
        item: dict[str, Any] = {}
        for key, widget in self.widgets.items():
            value = widget.value
            if isinstance(value, str):
                value = value.strip() or None
            if value is None:
                if key in self.required:
                    raise ValueError(f"Row {number}: {WORDS.get(key, f'fill in {key}')}")
                continue
            item[key] = value
        if "value" in self.params and item.get("op") not in NO_VALUE:
            item["value"] = self._read_value(item.get("op"), item.get("column"), number)
        return item

    def _read_value(self, op: str | None, column: str | None, number: int) -> Any:
        kind = numeric(self.columns.get(column or ""))
        if op in LIST_VALUE:
            text = self.value_widgets[0].value or ""
            items = [t for t in (s.strip() for s in text.split(",")) if t]
            if not items:
                raise ValueError(f"Row {number}: enter at least one value, separated by commas")
            return [parse_scalar(t, kind, number) for t in items]
        values = []
        for widget in self.value_widgets:
            value = widget.value
            if isinstance(value, str):
                if not value.strip():
                    value = None
                else:
                    value = parse_scalar(value, kind, number)
            if value is None:
                raise ValueError(f"Row {number}: enter " + ("both values" if op == "between" else "a value"))
            values.append(value)
        return values if op == "between" else values[0]

    def fill(self, item: dict[str, Any]) -> None:
        for key, widget in self.widgets.items():
            if key in item:
                widget.value = item[key]
        value = item.get("value")
        self._value_inputs(value if isinstance(value, list) and item.get("op") == "between" else [value])

    def set_columns(self, columns: dict[str, str]) -> None:
        self.columns = columns
        for key, widget in self.widgets.items():
            if is_column_param(key):
                keep = widget.value if widget.value in columns else None
                widget.options, widget.value = column_options(columns), keep


class RowsField:
    """A list-of-objects parameter edited as rows; the same interface as ``ParamField``."""

    def __init__(self, key: str, p: param.Parameter, model: type[param.Parameterized], required: bool,
                 columns: dict[str, str]):
        self.key, self.p, self.model, self.required = key, p, model, required
        self.columns = columns
        self.rows: list[Row] = []
        self._box = pn.Column(margin=0, sizing_mode="stretch_width")
        noun = "condition" if key == "conditions" else "step"
        self._add = pn.widgets.Button(label=f"+ Add {noun}", variant="outline", css_classes=[f"add-row-{key}"])
        self._add.on_click(lambda _e: self.add())
        title = f"<b>{esc(key)}{' *' if required else ''}</b> <span class='pc-muted'>{esc((p.doc or '').strip())}</span>"
        self.error = pn.pane.HTML(self._error_html(""), stylesheets=[CSS], sizing_mode="stretch_width")
        self.widget = self._box
        self.layout = pn.Column(pn.pane.HTML(title, stylesheets=[CSS], sizing_mode="stretch_width"), self._box,
                                self._add, self.error, sizing_mode="stretch_width", css_classes=[f"pc-field-{key}", "pc-rows"])
        self.add()

    def add(self, item: dict[str, Any] | None = None) -> Row:
        row = Row(self.model, self.columns, self._remove)
        if item:
            row.fill(item)
        self.rows.append(row)
        self._show_rows()
        return row

    def _remove(self, row: Row) -> None:
        self.rows.remove(row)
        self._show_rows()

    def _show_rows(self) -> None:
        for number, row in enumerate(self.rows, 1):  # the number the messages use ("Row 2: …")
            row.label.object = f"<span class='pc-muted'>{number}</span>"
        self._box.objects = [r.layout for r in self.rows]

    def read(self) -> tuple[bool, Any]:
        if not self.rows:
            return (False, None)
        try:
            return (True, [row.read(i) for i, row in enumerate(self.rows, 1)])
        except ValueError as exc:
            raise FieldError(self.key, str(exc)) from None

    def fill(self, value: Any) -> None:
        self.rows = []
        for item in value if isinstance(value, list) else []:
            self.add(item if isinstance(item, dict) else None)
        self._show_rows()

    def set_columns(self, columns: dict[str, str]) -> None:
        self.columns = columns
        for row in self.rows:
            row.set_columns(columns)

    def show(self, message: str) -> None:
        self.error.object = self._error_html(message)

    def _error_html(self, message: str) -> str:
        return f"<div class='pc-field-error' data-testid='error-{esc(self.key)}' role='alert'>{esc(message)}</div>"
