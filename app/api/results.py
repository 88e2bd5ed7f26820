"""A job's log, its result as a CSV or Parquet download, and re-running it."""
from __future__ import annotations

import asyncio

import param
from tornado.iostream import StreamClosedError

from ..downloads import FORMATS
from ..pipelines import PipelineRequest
from .base import BaseHandler, Endpoint

ID = r"(?P<job_id>[^/]+)"


class LogQuery(param.Parameterized):
    """Lines after a line id, for polling."""

    since = param.Integer(default=0, bounds=(0, None), doc="Return lines with an id above this (the last `next_since`).")
    limit = param.Integer(default=500, bounds=(1, 2000), doc="Lines to return at most (1–2000).")


class LogsHandler(BaseHandler):
    openapi = {"get": Endpoint(
        "The job's log: timestamped lines from queued to its end (attempts, retries, preemption, "
        "cancellation, worker exceptions with tracebacks); poll with since=next_since",
        query=LogQuery, responses={200: "Lines", 404: "Unknown job"}, tags=("jobs",))}

    async def get(self, job_id: str) -> None:
        q = self.parse_query(LogQuery)
        self.write_json(await self.service.reading(self.service.jobs.logs, job_id, q.since, q.limit))


class RerunHandler(BaseHandler):
    openapi = {"post": Endpoint(
        "Submit the same operation, dataset, parameters, priority and reservation as a new job (rerun_of)",
        responses={201: "Queued", 404: "Unknown job", 400: "No longer valid (its dataset changed)",
                   429: "Queue full"}, tags=("jobs",))}

    async def post(self, job_id: str) -> None:
        self.json_body()
        job = await self.service.jobs.rerun(job_id)
        self.set_header("Location", f"/api/processing/jobs/{job['job_id']}/status")
        self.write_json({"message": "Job submitted successfully", "job_id": job["job_id"], "status": job["status"],
                         "priority": job["priority"], "created_at": job["created_at"], "rerun_of": job_id}, 201)


class DownloadHandler(BaseHandler):
    fmt = "csv"

    def _check_access(self) -> None:
        """A bearer token, or the dashboard's signed sign-in cookie: the job page's download
        links are plain links, which carry the cookie and no header."""
        if (self.request.method in ("GET", "HEAD") and self.service.settings.api_token
                and self.request.headers.get("Authorization") is None and self._signed_in()):
            return
        super()._check_access()

    def _signed_in(self) -> bool:
        try:
            return bool(self.get_signed_cookie("user"))
        except Exception:  # noqa: BLE001 - no cookie secret (no sign-in): not signed in
            return False

    async def get(self, job_id: str) -> None:
        fmt = self.fmt
        loop = asyncio.get_running_loop()
        stream = await self.service.reading(self.service.jobs.download, job_id, fmt)
        self.set_header("Content-Type", FORMATS[fmt])
        self.set_header("Content-Disposition", f'attachment; filename="{job_id}_result.{fmt}"')
        if self.request.method == "HEAD":
            self.finish()
            return
        while True:
            chunk = await loop.run_in_executor(self.service.executor, stream.next_chunk)
            if chunk is None:
                break
            if chunk:
                self.write(chunk)
                try:
                    await self.flush()  # the client takes each batch before the next is read
                except StreamClosedError:
                    return  # the client went away
        self.finish()


class CsvDownloadHandler(DownloadHandler):
    fmt = "csv"
    openapi = {"get": Endpoint(
        "A completed job's whole result as CSV (a table, a result dataset of any size, or a value as one row), "
        "streamed a batch at a time", responses={200: "The file", 404: "Unknown job", 409: "Not completed"},
        tags=("jobs",), response_type=FORMATS["csv"])}


class ParquetDownloadHandler(DownloadHandler):
    fmt = "parquet"
    openapi = {"get": Endpoint(
        "A completed job's whole result as one Parquet file, streamed a record batch at a time",
        responses={200: "The file", 404: "Unknown job", 409: "Not completed"}, tags=("jobs",),
        response_type=FORMATS["parquet"])}


ROUTES = [
    (rf"/api/processing/jobs/{ID}/logs", LogsHandler),
    (rf"/api/processing/jobs/{ID}/rerun", RerunHandler),
    (rf"/api/processing/jobs/{ID}/result\.csv", CsvDownloadHandler),
    (rf"/api/processing/jobs/{ID}/result\.parquet", ParquetDownloadHandler),
]


PIPELINE_ID = r"(?P<pipeline_id>[^/]+)"


class PipelineSubmitHandler(BaseHandler):
    openapi = {"post": Endpoint(
        "Submit a pipeline: named steps (jobs) that refer to each other ('@step:<name>' reads a step's result "
        "dataset; depends_on waits for steps). The whole graph is checked first; on any error nothing is written",
        body=PipelineRequest, responses={201: "Submitted", 400: "Unknown step, cycle, bad step", 404: "Unknown dataset",
                                         429: "Queue full"}, tags=("pipelines",))}

    async def post(self) -> None:
        body = self.json_body()
        pipelines = self.service.pipelines
        req, ordered = await asyncio.get_running_loop().run_in_executor(self.service.executor, pipelines.check, body)
        status = await pipelines.submit(req, ordered)
        self.set_header("Location", f"/api/processing/pipelines/{status['pipeline_id']}")
        self.write_json(status, 201)


class PipelineStatusHandler(BaseHandler):
    openapi = {"get": Endpoint("A pipeline's status and its steps' jobs, statuses and progress",
                               responses={200: "Status", 404: "Unknown pipeline"}, tags=("pipelines",))}

    async def get(self, pipeline_id: str) -> None:
        self.write_json(await self.service.reading(self.service.pipelines.status, pipeline_id))


class PipelineCancelHandler(BaseHandler):
    openapi = {"post": Endpoint("Cancel every step of the pipeline that has not finished",
                                responses={200: "Cancelled", 404: "Unknown pipeline"}, tags=("pipelines",))}

    async def post(self, pipeline_id: str) -> None:
        self.json_body()
        self.write_json(await self.service.pipelines.cancel(pipeline_id))


PIPELINE_ROUTES = [
    (r"/api/processing/pipelines", PipelineSubmitHandler),
    (rf"/api/processing/pipelines/{PIPELINE_ID}", PipelineStatusHandler),
    (rf"/api/processing/pipelines/{PIPELINE_ID}/cancel", PipelineCancelHandler),
]
ROUTES += PIPELINE_ROUTES
