"""The SQL job's query editor: a monospace text area with the dataset's columns beside it.

It stands in for the generated ``query`` field of the submit form (same ``read``,
``show`` and ``set_columns`` as :class:`~components.forms.ParamField`), so a submit
error about the query, with its line and column, is shown under the editor.
"""
from __future__ import annotations

from typing import Any

import panel as pn

from app.models import public_params
from app.operations import Operation

from .forms import ParamField
from .theme import CSS, esc

MONO = ("textarea { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, 'Liberation Mono', monospace; "
        "font-size: 13px; line-height: 1.4; }")
PLACEHOLDER = "SELECT gene_id, avg(expression_level) AS mean\nFROM data\nGROUP BY gene_id\nORDER BY mean DESC\nLIMIT 10"


class SqlEditor(ParamField):
    """The ``query`` parameter as an editor; the column list follows the chosen dataset."""

    def __init__(self, p: Any, columns: dict[str, str]):
        super().__init__("query", p, required=True, columns=columns)
        self._column_list = pn.pane.HTML(column_list(columns), stylesheets=[CSS], width=170, margin=(0, 4),
                                         css_classes=["pc-sql-columns"])
        editor = pn.Column(self.widget, self.error, sizing_mode="stretch_width", min_width=200)
        self.layout = pn.Row(editor, self._column_list, sizing_mode="stretch_width", css_classes=["pc-field-query"],
                             styles={"flex": "1 1 100%"})

    def _widget(self, label: str, doc: str, columns: dict[str, str]) -> pn.widgets.Widget:
        return pn.widgets.TextAreaInput(name=label, description=doc or None, value="", placeholder=PLACEHOLDER,
                                        height=190, sizing_mode="stretch_width", stylesheets=[MONO],
                                        css_classes=["pc-sql-editor"])

    def set_columns(self, columns: dict[str, str]) -> None:
        """Show another dataset's columns."""
        self._column_list.object = column_list(columns)


def column_list(columns: dict[str, str]) -> str:
    """The table ``data``'s columns and types, escaped, as the editor's side panel."""
    if not columns:
        return "<div class='pc-muted'>No columns: choose a dataset.</div>"
    rows = "".join(f"<div style='margin:2px 0;overflow-wrap:anywhere'><code>{esc(name)}</code> "
                   f"<span class='pc-muted'>{esc(dtype)}</span></div>" for name, dtype in columns.items())
    return (f"<div class='pc-help'><b>Columns of <code>data</code></b></div>"
            f"<div style='max-height:170px;overflow:auto' data-testid='sql-columns'>{rows}</div>")


def editor_fields(op: Operation, columns: dict[str, str]) -> dict[str, ParamField]:
    """The fields the SQL operation shows differently (its query editor); none for others."""
    if op.name != "sql":
        return {}
    return {"query": SqlEditor(public_params(op.Params)["query"], columns)}
