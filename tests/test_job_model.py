"""The job model: a Job record's named transitions follow the lifecycle (and raise otherwise),
its ``to_dict`` is the API's status of the job, and the job repository, which writes through to
SQLite and memory, is the only place with SQL about jobs."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from app.job_model import FIELDS, Job
from app.jsonsafe import json_safe
from app.lifecycle import ALLOWED, InvalidTransition, JobStatus
from app.store import Store
from app.store_schema import SCHEMA
from tests.helpers import job_on_disk, submit, wait_job

NOW = "2026-01-01T00:00:10.000Z"
LATER = "2026-01-01T00:00:20.000Z"
# each named transition, called on a record, and the status it leads to
TRANSITIONS = {
    "start": (lambda job: job.start(2, LATER), JobStatus.RUNNING),
    "requeue": (lambda job: job.requeue(), JobStatus.PENDING),
    "complete": (lambda job: job.complete(LATER, result={"value": 1.5}, result_kind="scalar"), JobStatus.COMPLETED),
    "fail": (lambda job: job.fail(LATER, {"type": "X", "message": "boom"}), JobStatus.FAILED),
    "cancel": (lambda job: job.cancel(LATER), JobStatus.CANCELLED),
}
ROOT = Path(__file__).resolve().parents[1]


def record(status: JobStatus, **values) -> Job:
    return Job(job_id="job_a", seq=1, operation="aggregate", dataset_id="ds", parameters={"column": "x"},
               priority="HIGH", max_memory_gb=2.0, max_cores=1.0, status=status, progress=40.0, created_at=NOW,
               started_at=NOW if status is not JobStatus.PENDING else None, attempt_count=1, tasks_total=8,
               tasks_done=3, eta_seconds=5.0, eta_history={"25": {"at": NOW}}, **values)


def test_the_record_has_the_jobs_tables_columns():
    assert FIELDS == tuple(SCHEMA["jobs"][0])


def test_the_transitions_lead_to_every_status():
    assert {to for _, to in TRANSITIONS.values()} == set(JobStatus)


@pytest.mark.parametrize("name", list(TRANSITIONS))
@pytest.mark.parametrize("status", list(JobStatus))
def test_each_named_transition_is_allowed_exactly_where_the_lifecycle_allows_it(status, name):
    move, to = TRANSITIONS[name]
    job = record(status)
    before = job.row()
    if to in ALLOWED[status]:
        changes = move(job)
        assert changes["status"] == to.value and type(changes["status"]) is str
        assert job.status is to
        assert {k: v for k, v in job.row().items() if v != before[k]} == \
            {k: v for k, v in changes.items() if v != before[k]}  # the record changed by what is to be written
    else:
        with pytest.raises(InvalidTransition, match=f"a {status.value} job cannot become {to.value}"):
            move(job)
        assert job.row() == before  # a refused move changes nothing


def test_what_each_transition_writes():
    job = record(JobStatus.PENDING)
    assert job.start(1, NOW) == {"status": "running", "attempt_count": 1, "started_at": NOW}
    assert job.requeue() == {"status": "pending", "eta_seconds": None, "estimated_completion_at": None}
    assert job.start(2, LATER)["started_at"] == NOW  # a second attempt keeps the first start
    done = job.complete(LATER, result={"value": 1}, result_kind="scalar", cache_key="k")
    assert done == {"status": "completed", "completed_at": LATER, "result": {"value": 1}, "result_kind": "scalar",
                    "result_dataset_id": None, "cache_key": "k", "cached_from": None, "progress": 100.0,
                    "eta_seconds": 0.0, "estimated_completion_at": None, "tasks_done": 8,
                    "eta_history": {"25": {"at": NOW}, "actual_end": LATER}}
    assert record(JobStatus.RUNNING).fail(LATER, {"type": "X"}) == {"status": "failed", "completed_at": LATER,
                                                                    "error": {"type": "X"}}
    assert record(JobStatus.PENDING).cancel(LATER) == {"status": "cancelled", "completed_at": LATER, "error": None}


def test_a_status_reads_as_the_api_spells_it():
    assert f"{JobStatus.FAILED}" == str(JobStatus.FAILED) == "failed"
    assert json.dumps(JobStatus.FAILED) == '"failed"'


def test_a_stored_row_and_its_record_agree(tmp_path):
    store = Store(tmp_path / "s.db")
    try:
        row = store.jobs.insert([record(JobStatus.PENDING).row()])[0]
        assert Job.from_row(store.jobs.get("job_a")).row() == store.jobs.get("job_a") == row
        assert store.jobs.job("job_a") == Job.from_row(row)
        assert store.jobs.job("nope") is None
        with pytest.raises(ValueError):
            Job.from_row({**row, "status": "paused"})
    finally:
        store.close()


def test_the_repository_writes_each_transition_through_to_sqlite_and_memory(tmp_path):
    path = tmp_path / "s.db"
    store = Store(path)
    try:
        repo = store.jobs
        repo.insert([{"job_id": "job_a", "status": "pending", "priority": "NORMAL", "created_at": NOW,
                      "parameters": {"column": "x"}, "eta_history": {}}])
        steps = [lambda j: j.start(1, NOW), lambda j: j.requeue(), lambda j: j.start(2, NOW),
                 lambda j: j.complete(LATER, result={"rows": [[1, "é"]]}, result_kind="table")]
        for step in steps:
            job = repo.job("job_a")
            repo.update("job_a", **step(job))
            held = repo.records.get("job_a")
            assert held is not None and held == job_on_disk(path, "job_a") == repo.get("job_a")
            assert Job.from_row(held).status is job.status
        assert repo.get("job_a")["status"] == "completed" and repo.get("job_a")["attempt_count"] == 2
        with pytest.raises(InvalidTransition):  # nothing leaves a finished job, and nothing is written
            repo.update("job_a", **repo.job("job_a").requeue())
        assert job_on_disk(path, "job_a")["status"] == "completed"
    finally:
        store.close()


def test_the_api_status_of_a_job_is_its_records_to_dict(server):
    job_id = submit(server)
    api = wait_job(server, job_id)
    assert api["status"] == "completed", api
    job = Job.from_row(job_on_disk(server.data_dir / "processing.db", job_id))
    # a finished job has no place in the queue: its status is the record's, with its attempts
    want = json.loads(json.dumps(json_safe({**job.to_dict(), "attempts": api["attempts"]})))
    assert list(api) == list(want)
    assert api == want
    assert [a["outcome"] for a in api["attempts"]] == ["completed"]


SQL_ABOUT_JOBS = re.compile(r"\b(from|into|update|join|table)\s+\[?(jobs|jobs_fts|job_counts|job_blocks)\b", re.I)
ALLOWED_SQL = {"app/job_repository.py", "app/store_schema.py"}  # the repository; the schema's DDL and triggers


def test_the_repository_is_the_only_place_with_sql_about_jobs():
    found = {str(p.relative_to(ROOT)): SQL_ABOUT_JOBS.findall(p.read_text())
             for folder in ("app", "components") for p in (ROOT / folder).rglob("*.py")}
    assert {path for path, hits in found.items() if hits} - ALLOWED_SQL == set()
    assert found["app/job_repository.py"]  # the pattern does find job SQL where it is
