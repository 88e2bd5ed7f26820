"""Form fields generated from a param model, with the validation message shown
under the field it is about.

Column parameters (names containing "column", "columns" or "group_by") become
pickers filled from the dataset's schema; other parameters map by type. Values
that JSON describes better than a widget (lists of objects, bins as a number or a
list of edges) are typed as JSON.
"""
from __future__ import annotations

import json
import re
from typing import Any

import panel as pn
import param

from app.errors import ProcessingError
from app.models import public_params

from .theme import CSS, esc, esc_options

NONE_LABEL = "(none)"
FIELD_WIDTH = 210


class FieldError(Exception):
    """A value the form could not read (e.g. malformed JSON) for one field."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key
        self.message = message


def is_column_param(key: str) -> bool:
    return "column" in key or key == "group_by"


class ParamField:
    """One parameter: its widget, how its value is read, and its inline error."""

    def __init__(self, key: str, p: param.Parameter | None = None, required: bool = False,
                 columns: dict[str, str] | None = None, item_model: type[param.Parameterized] | None = None,
                 widget: pn.widgets.Widget | None = None, label: str | None = None):
        self.key = key
        self.p = p
        self.required = required
        self.item_model = item_model
        self.kind = "custom" if widget is not None or p is None else self._kind(key, p)
        label = label or (f"{key} *" if required else key)
        doc = ((p.doc if p is not None else "") or "").strip()
        self.widget = widget if widget is not None else self._widget(label, doc, columns or {})
        self.error = pn.pane.HTML(self._error_html(""), stylesheets=[CSS], margin=(0, 10), sizing_mode="stretch_width")
        self.layout = pn.Column(self.widget, self.error, width=FIELD_WIDTH, margin=(0, 4), css_classes=[f"pc-field-{key}"])

    @staticmethod
    def _kind(key: str, p: param.Parameter) -> str:
        classes = p.class_ if isinstance(p, param.ClassSelector) else ()
        classes = classes if isinstance(classes, tuple) else (classes,)
        if is_column_param(key) and (isinstance(p, param.List) or list in classes):
            return "columns"
        if is_column_param(key) and isinstance(p, param.String):
            return "column"
        if isinstance(p, param.Selector):
            return "choice"
        if isinstance(p, param.Boolean):
            return "bool"
        if isinstance(p, param.Integer):
            return "int"
        if isinstance(p, param.Number):
            return "number"
        if isinstance(p, param.ClassSelector) and set(classes) <= {str, int, float}:
            return "scalar"
        if isinstance(p, param.String):
            return "text"
        return "json"

    def _widget(self, label: str, doc: str, columns: dict[str, str]) -> pn.widgets.Widget:
        common = {"name": label, "description": doc or None, "sizing_mode": "stretch_width"}
        default = self.p.default
        if self.key == "name" and isinstance(self.p, param.String):
            default = None  # param fills a model's own ``name`` with the class name
        if self.kind == "column":
            return pn.widgets.Select(options=column_options(columns), value=None, **common)
        if self.kind == "columns":
            return pn.widgets.MultiChoice(options=esc_options(column_options(columns, none=False)), value=[], **common)
        if self.kind == "choice":
            return pn.widgets.Select(options=list(self.p.objects), value=default, **common)
        if self.kind == "bool":
            return pn.widgets.Checkbox(name=label, value=bool(default), margin=(28, 10, 10, 10))
        if self.kind == "int":
            return pn.widgets.IntInput(value=default, **common)
        if self.kind == "number":
            return pn.widgets.FloatInput(value=default, **common)
        text = "" if default is None else (default if isinstance(default, str) else json.dumps(default))
        if self.kind == "json" and isinstance(self.p, (param.List, param.Dict)) and not text:
            return pn.widgets.TextAreaInput(value="", placeholder=json_example(self.item_model), height=90, **common)
        return pn.widgets.TextInput(value=text, placeholder=placeholder(self.kind, self.p), **common)

    def set_columns(self, columns: dict[str, str]) -> None:
        """New column choices (another dataset); keeps the choice when it still exists."""
        if self.kind == "column":
            keep = self.widget.value if self.widget.value in columns else None
            self.widget.options = column_options(columns)
            self.widget.value = keep
        elif self.kind == "columns":
            self.widget.options = esc_options(column_options(columns, none=False))
            self.widget.value = [c for c in self.widget.value if c in columns]

    def read(self) -> tuple[bool, Any]:
        """(present, value); absent values are left out of the request."""
        value = self.widget.value
        if self.kind == "columns":
            return (bool(value), list(value))
        if self.kind in ("custom", "column", "choice", "bool", "int", "number"):
            return (value is not None, value)
        text = (value or "").strip()
        if not text:
            return (False, None)
        if self.kind == "text":
            return (True, value)
        if self.kind == "scalar":
            return (True, _number_or_text(text))
        try:
            return (True, json.loads(text))
        except ValueError as exc:
            raise FieldError(self.key, f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None

    def fill(self, value: Any) -> None:
        """Set the widget to ``value`` as :meth:`read` would return it (a clone of a job)."""
        if self.kind == "columns":
            self.widget.value = [c for c in (value or []) if c in self.widget.options.values()]
        elif self.kind in ("custom", "column", "choice", "bool", "int", "number"):
            self.widget.value = value
        elif self.kind == "text":
            self.widget.value = "" if value is None else str(value)
        elif self.kind == "scalar":
            self.widget.value = "" if value is None else (value if isinstance(value, str) else json.dumps(value))
        else:
            self.widget.value = "" if value is None else json.dumps(value)

    def show(self, message: str) -> None:
        self.error.object = self._error_html(message)

    def _error_html(self, message: str) -> str:
        return f"<div class='pc-field-error' data-testid='error-{esc(self.key)}' role='alert'>{esc(message)}</div>"


def column_options(columns: dict[str, str], none: bool = True) -> dict[str, Any]:
    """Picker options "name (dtype)" → name."""
    options: dict[str, Any] = {NONE_LABEL: None} if none else {}
    options.update({f"{name} ({dtype})": name for name, dtype in columns.items()})
    return options


def placeholder(kind: str, p: param.Parameter) -> str:
    if kind == "scalar":
        return "a value, e.g. control"
    if isinstance(p, param.ClassSelector):
        return "a number, or a JSON list such as [0, 10, 100]"
    if isinstance(p, param.List):
        return "JSON list, e.g. [0, 100]"
    return ""


def json_example(item_model: type[param.Parameterized] | None) -> str:
    """A JSON hint for list-of-object parameters: one item with every key."""
    if item_model is None:
        return "JSON"
    item = {}
    for key, p in public_params(item_model).items():
        if isinstance(p, param.Selector) and p.objects:
            item[key] = p.objects[0]
        else:
            item[key] = "<column>" if key == "column" else "…"
    return "JSON list, e.g. " + json.dumps([item])


def _number_or_text(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def error_field(exc: ProcessingError, known: set[str]) -> list[str]:
    """The form fields an error is about: details["field"] (its top-level name) or details["missing"]."""
    details = exc.details or {}
    fields = list(details.get("missing") or [])
    field = details.get("field")
    if isinstance(field, str) and field:
        fields.append(re.split(r"[.\[]", field, maxsplit=1)[0])
    return [f for f in fields if f in known]
