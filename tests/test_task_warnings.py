"""Warnings raised in a job's tasks on the workers reach the job's log: the server side
(bounded, repeats counted, the text stored as raised and escaped by the Log tab) with a
real store, and a real RuntimeWarning from a job on the shared cluster."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from app import task_warnings
from app.store import Store
from app.task_warnings import MAX_LINES, WarningLog
from components.job_extras import render_log
from tests.server import ROOT

HOSTILE = "<script>alert('x')</script><img src=x onerror=alert(1)> & \"quoted\""


@pytest.fixture
def store(tmp_path: Path):
    s = Store(tmp_path / "processing.db")
    yield s
    s.close()


def event(job: str, message: str, count: int = 1, worker: str = "tcp://127.0.0.1:1", where: str = "x.py:3"):
    return (0.0, {"job": job, "category": "RuntimeWarning", "message": message, "where": where, "count": count,
                  "worker": worker})


def warning_lines(store: Store, job_id: str) -> list[dict]:
    return [line for line in store.job_log(job_id, limit=1000) if line["event"] == "task_warning"]


def test_a_warning_is_logged_once_and_its_repeats_at_each_power_of_ten(store):
    heard = WarningLog(store.log_job)
    for count in (1, 10):
        for worker in ("tcp://127.0.0.1:1", "tcp://127.0.0.1:2"):  # two workers: their counts add up
            heard.heard(event("job_a/1", "invalid value encountered in divide", count, worker))
    heard.heard(event("job_a/2", "invalid value encountered in divide", 100))  # worker 1 counts on, same job
    lines = warning_lines(store, "job_a")
    assert [line["details"]["count"] for line in lines] == [1, 11, 110], lines
    assert lines[0]["message"] == "a task warned: RuntimeWarning: invalid value encountered in divide (x.py:3)"
    assert "20 times so far" not in lines[1]["message"] and "11 times so far" in lines[1]["message"]
    assert all(line["level"] == "warning" for line in lines) and warning_lines(store, "job_b") == []


def test_a_job_gets_at_most_max_lines_and_a_line_saying_so(store):
    heard = WarningLog(store.log_job)
    for i in range(MAX_LINES + 30):
        heard.heard(event("job_many/1", f"warning number {i} " + "y" * 2000, where=f"m.py:{i}"))
    lines = warning_lines(store, "job_many")
    assert len(lines) == MAX_LINES + 1 and "only the first" in lines[-1]["message"]
    assert max(len(line["message"]) for line in lines) < task_warnings.MAX_CHARS + 200


def test_hostile_warning_text_is_stored_as_raised_and_the_log_tab_escapes_it(store):
    WarningLog(store.log_job).heard(event("job_h/1", HOSTILE))
    lines = store.job_log("job_h")
    assert HOSTILE in lines[0]["message"]
    html = render_log(json.loads(json.dumps(lines)))
    assert "<script>" not in html and "<img" not in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html and "&lt;img src=x" in html


def test_a_bad_event_is_not_an_error(store):
    WarningLog(store.log_job).heard((0.0, {"nothing": "useful"}))  # logged, not raised


def test_outside_a_task_warnings_pass_through_once_per_place():
    """In a process of its own: the hook is process-wide (pytest's own hook stays out of it)."""
    code = ("import warnings\n"
            "from app import task_warnings\n"
            "task_warnings.install(); task_warnings.install()\n"
            "assert warnings.showwarning is task_warnings._show\n"
            "for _ in range(3):\n"
            "    warnings.warn('a plain warning', UserWarning)\n"
            "warnings.warn_explicit('ignored as before', DeprecationWarning, 'lib.py', 1, module='lib')\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("a plain warning") == 1 and "ignored as before" not in done.stderr, done.stderr


@pytest.mark.slow
def test_a_runtime_warning_in_a_job_task_is_in_its_log_every_time(server):
    """A one-row JSON array (read by Dask's reader, not the kernels): the std of one value
    makes numpy warn on the worker. Each job says so, not only the first on that worker."""
    from tests.helpers import register, submit, wait_job

    source = server.data_dir / "inputs" / "one_row.json"
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_text(json.dumps([{"gene_id": "g1", "expression_level": 1.5}]))
    register(server, source, "one_row_json", "json")
    for _ in range(2):
        job = submit(server, "aggregate", "one_row_json", {"column": "expression_level", "operation": "std"},
                     cache=False)
        assert wait_job(server, job)["status"] == "completed"
        from tests.helpers import wait_until

        lines = wait_until(lambda: [line for line in server.get(f"/api/processing/jobs/{job}/logs").json()["lines"]
                                    if line["event"] == "task_warning"], 30, 0.1, "the task's warning logged")
        assert "RuntimeWarning" in lines[0]["message"] and "invalid value" in lines[0]["message"], lines
        assert lines[0]["level"] == "warning" and lines[0]["details"]["count"] >= 1
