"""The components' pure pieces, without a browser: forms generated from every operation's
model, error placement, wall URL options, chart rows and number formats."""
from __future__ import annotations

import pytest

from app.errors import InvalidRequest
from app.metrics import stopped_snapshot
from app.models import public_params, required_fields
from app.operations import catalogue, get as get_operation
from components.activity import render_queue, render_running
from components.forms import FieldError, ParamField, error_field
from components.live import SERIES, queue_counts, series_row
from components.theme import fmt_duration, fmt_number, progress_bar
from components.wall import parse_panels

SCHEMA = {"gene_id": "object", "condition": "object", "expression_level": "float64"}


@pytest.mark.parametrize("name", [e["name"] for e in catalogue()])
def test_every_operation_gets_a_form(name):
    op = get_operation(name)
    required = set(required_fields(op.Params))
    fields = {k: ParamField(k, p, k in required, SCHEMA, op.item_models.get(k))
              for k, p in public_params(op.Params).items()}
    assert fields, name
    for key, field in fields.items():
        assert field.widget.name.startswith(key)
        if field.kind in ("column", "columns"):  # pickers filled from the schema
            assert "expression_level (float64)" in field.widget.options
        present, value = field.read()
        if present:  # a default the service accepts as it is: the model's own, lists included
            assert value == getattr(op.Params, key), (key, value)


def test_parameter_kinds():
    kinds = {(n, k): ParamField(k, p, False, SCHEMA).kind
             for n in ("aggregate", "histogram", "differential_expression", "filter", "sort_top", "correlation")
             for k, p in public_params(get_operation(n).Params).items()}
    assert kinds[("aggregate", "column")] == "column"
    assert kinds[("aggregate", "group_by")] == "columns"
    assert kinds[("aggregate", "operation")] == "choice"
    assert kinds[("correlation", "columns")] == "columns"
    assert kinds[("histogram", "bins")] == "json"
    assert kinds[("differential_expression", "a")] == "scalar"
    assert kinds[("filter", "conditions")] == "json"
    assert kinds[("sort_top", "n")] == "int"
    assert kinds[("sort_top", "ascending")] == "bool"


def test_field_values_are_read_as_json_or_refused_next_to_the_field():
    bins = ParamField("bins", get_operation("histogram").Params.param["bins"], False, SCHEMA)
    bins.widget.value = "[0, 10, 100]"
    assert bins.read() == (True, [0, 10, 100])
    bins.widget.value = "[0, 10,"
    with pytest.raises(FieldError) as err:
        bins.read()
    assert err.value.key == "bins" and "not valid JSON" in err.value.message
    level = ParamField("a", get_operation("differential_expression").Params.param["a"], True, SCHEMA)
    level.widget.value = "control"
    assert level.read() == (True, "control")
    level.widget.value = "2"
    assert level.read() == (True, 2)


def test_columns_follow_the_dataset():
    field = ParamField("column", get_operation("aggregate").Params.param["column"], True, SCHEMA)
    field.widget.value = "expression_level"
    field.set_columns({"expression_level": "float64", "p_value": "float64"})
    assert field.widget.value == "expression_level"
    field.set_columns({"p_value": "float64"})
    assert field.widget.value is None


def test_errors_land_on_their_field():
    known = {"conditions", "column", "bins"}
    assert error_field(InvalidRequest("x", {"field": "conditions[0].value"}), known) == ["conditions"]
    assert error_field(InvalidRequest("x", {"missing": ["column"]}), known) == ["column"]
    assert error_field(InvalidRequest("x", {"field": "elsewhere"}), known) == []
    assert error_field(InvalidRequest("x"), known) == []


@pytest.mark.parametrize("panels, rotate, expected", [
    (None, None, (True, [["jobs", "queue", "memory", "cpu"]])),
    ("health,cpu", None, (True, [["cpu"]])),
    ("jobs,queue,memory,cpu", 20, (False, [["jobs", "queue"], ["memory", "cpu"]])),
    ("health,jobs,queue|memory,cpu", 20, (True, [["jobs", "queue"], ["memory", "cpu"]])),
    ("health,jobs,queue|memory,cpu", None, (True, [["jobs", "queue", "memory", "cpu"]])),
    ("cpu,bogus", None, (False, [["cpu"]])),
    ("health", 10, (True, [])),
])
def test_wall_panels_from_the_url(panels, rotate, expected):
    assert parse_panels(panels, rotate) == expected


def test_chart_rows_from_a_sample():
    snap = stopped_snapshot(1_700_000_000.0, "stopped")
    snap["queue"] = {"queued": 3, "running": 1, "queued_by_priority": {"HIGH": 2, "LOW": 1}}
    row = series_row(snap)
    assert set(row) == set(SERIES)
    assert row["t"] == 1_700_000_000_000.0 and row["q_HIGH"] == 2 and row["queued"] == 3
    assert list(queue_counts(snap)) == ["CRITICAL", "HIGH", "NORMAL", "LOW"]


def test_rendered_activity_carries_test_ids():
    job = {"job_id": "job_1", "operation": "describe", "priority": "HIGH", "dataset_id": "d", "progress": 42.0,
           "eta_seconds": 75.0, "elapsed_s": 30.0}
    html = render_running([job], [{"job_id": "job_2", "reason": "waiting for cores"}], limit=5)
    assert "data-value='42.00'" in html and "ETA 1 min 15 s" in html and "1 waiting" in html
    snap = stopped_snapshot(0.0, "running")
    snap["queue"] = {"queued_by_priority": {"NORMAL": 4}, "queued": 4, "running": 0}
    assert "data-testid='queue-normal'><div class='pc-label'>Normal</div><div class='pc-value'>4" in render_queue(snap, 4)


def test_formats():
    assert fmt_duration(None) == "—" and fmt_duration(5) == "5 s" and fmt_duration(4000) == "1 h 06 min"
    assert fmt_number(32.851792837) == "32.8518" and fmt_number(1234567) == "1,234,567"
    assert "data-value='100.00'" in progress_bar(140)
