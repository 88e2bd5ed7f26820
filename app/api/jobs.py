"""Job endpoints: submit, status, list, cancel, result, wait; the queue; the catalogue.

The list reads many rows: it is read and encoded on the store's read pool, off the loop."""
from __future__ import annotations

import param

from ..models import JobListQuery, JobRequest, ResultQuery
from ..operations import catalogue
from .base import BaseHandler, Endpoint

ID = r"(?P<job_id>[^/]+)"


class WaitQuery(param.Parameterized):
    """How long to wait for a job to end."""

    timeout = param.Number(default=30.0, bounds=(0, 300), doc="Seconds to wait at most (0–300).")


class SubmitHandler(BaseHandler):
    openapi = {"post": Endpoint(
        "Submit a job; validated before it is queued", body=JobRequest,
        responses={201: "Queued", 400: "Invalid operation, parameters, priority or resources",
                   404: "Unknown dataset", 429: "Queue full"}, tags=("jobs",))}

    async def post(self) -> None:
        job = await self.service.jobs.submit(self.json_body())
        self.set_header("Location", f"/api/processing/jobs/{job['job_id']}/status")
        self.write_json({"message": "Job submitted successfully", "job_id": job["job_id"], "status": job["status"],
                         "priority": job["priority"], "created_at": job["created_at"]}, 201)


class StatusHandler(BaseHandler):
    openapi = {"get": Endpoint("A job's status, progress, ETA, queue position, attempts and result", tags=("jobs",))}

    async def get(self, job_id: str) -> None:
        # the attempts (and an older job's row) come from SQLite: read on the store's pool
        self.write_json(await self.service.reading(self.service.jobs.status, job_id))


class CancelHandler(BaseHandler):
    openapi = {"post": Endpoint("Cancel a pending or running job", responses={200: "Cancelled", 409: "Already finished"},
                                tags=("jobs",))}

    async def post(self, job_id: str) -> None:
        self.json_body()
        status = await self.service.jobs.cancel(job_id)
        self.write_json({"message": "Job cancelled successfully", "job_id": job_id, "status": status["status"],
                         "job": status})


class ListHandler(BaseHandler):
    openapi = {"get": Endpoint("Jobs, newest first, filtered by status, priority, dataset, operation, creation "
                               "time and a text search (q), paginated",
                               query=JobListQuery, tags=("jobs",))}

    async def get(self) -> None:
        q = self.parse_query(JobListQuery)
        jobs = self.service.jobs
        # read on the read pool, each entry encoded by SQLite: a 1000-job page is a few ms
        self.finish(await self.service.reading(
            jobs.list_json, q.status, q.priority, q.limit, q.offset, q.dataset_id, q.operation, q.sort == "newest",
            q.q, q.created_after, q.created_before))


class ResultHandler(BaseHandler):
    openapi = {"get": Endpoint("A page of a completed job's result rows", query=ResultQuery,
                               responses={200: "Rows", 409: "Not completed"}, tags=("jobs",))}

    async def get(self, job_id: str) -> None:
        q = self.parse_query(ResultQuery)
        self.write_json(await self.service.jobs.result(job_id, q.offset, q.limit))


class WaitHandler(BaseHandler):
    openapi = {"get": Endpoint("Wait until the job ends (or timeout), then its status", query=WaitQuery, tags=("jobs",))}

    async def get(self, job_id: str) -> None:
        q = self.parse_query(WaitQuery)
        self.write_json(await self.service.jobs.wait(job_id, q.timeout))


class QueueStatusHandler(BaseHandler):
    openapi = {"get": Endpoint("Queue depth by priority and the cluster's reserved and free resources",
                               tags=("jobs",))}

    def get(self) -> None:
        self.write_json(self.service.jobs.queue_status())  # counts from the store's counters: a few rows


class OperationsHandler(BaseHandler):
    openapi = {"get": Endpoint("The operations a job can run, with their parameter schemas", tags=("jobs",))}

    def get(self) -> None:
        ops = catalogue()
        self.write_json({"total": len(ops), "operations": ops})


ROUTES = [
    (r"/api/processing/jobs/submit", SubmitHandler),
    (r"/api/processing/jobs/list", ListHandler),
    (rf"/api/processing/jobs/{ID}/status", StatusHandler),
    (rf"/api/processing/jobs/{ID}/cancel", CancelHandler),
    (rf"/api/processing/jobs/{ID}/result", ResultHandler),
    (rf"/api/processing/jobs/{ID}/wait", WaitHandler),
    (r"/api/processing/queue/status", QueueStatusHandler),
    (r"/api/processing/operations", OperationsHandler),
]
