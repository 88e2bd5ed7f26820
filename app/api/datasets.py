"""Dataset endpoints: register, upload (streamed), list, show, delete, partition."""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, BinaryIO

from tornado import web

from ..errors import Conflict, InvalidRequest, PayloadTooLarge, Unprocessable, UnsupportedMediaType
from ..models import PageQuery, PartitionRequest, PreviewQuery, RegisterDatasetRequest, UploadQuery
from .base import BaseHandler, Endpoint

ID = r"(?P<dataset_id>[^/]+)"


class DatasetsHandler(BaseHandler):
    openapi = {
        "get": Endpoint("List datasets, newest first (paginated)", query=PageQuery, tags=("datasets",)),
        "post": Endpoint("Register a dataset by path, glob or URL; the schema is read now",
                         body=RegisterDatasetRequest,
                         responses={201: "Registered", 403: "Outside the data roots, or in the service's managed folder",
                                    409: "Id taken", 422: "Unreadable, empty, malformed or nested too deeply"}, tags=("datasets",)),
    }

    async def get(self) -> None:
        q = self.parse_query(PageQuery)
        total, items = await self.service.reading(self.service.datasets.list, q.limit, q.offset)
        self.write_json({"total": total, "limit": q.limit, "offset": q.offset, "datasets": items})

    async def post(self) -> None:
        req = self.parse_body(RegisterDatasetRequest)
        ds = await self.service.datasets.register(req.source, req.dataset_id, req.name, req.description,
                                                  req.format, req.options)
        self.write_json({"message": "Dataset registered successfully", "dataset": ds}, 201)


class DatasetHandler(BaseHandler):
    openapi = {
        "get": Endpoint("A dataset: schema, sizes, partitions and a preview of the first rows",
                        query=PreviewQuery, tags=("datasets",)),
        "delete": Endpoint("Forget a dataset and delete the files the service manages (never your own files)",
                           responses={200: "Deleted", 409: "Used by pending or running jobs"}, tags=("datasets",)),
    }

    async def get(self, dataset_id: str) -> None:
        q = self.parse_query(PreviewQuery)
        self.write_json(await self.service.datasets.detail(dataset_id, q.preview_rows))

    async def delete(self, dataset_id: str) -> None:
        self.write_json(await self.service.delete_dataset(dataset_id))


@web.stream_request_body
class UploadHandler(BaseHandler):
    """The body is the file itself (``curl --data-binary @file.csv``), streamed to disk."""

    openapi = {"post": Endpoint(
        "Upload a file as a new dataset (raw body, streamed to disk; limit MAX_UPLOAD_MB)",
        query=UploadQuery, content_type="application/octet-stream",
        responses={201: "Registered", 400: "Bad extension or empty body", 409: "Id taken",
                   413: "Over MAX_UPLOAD_MB", 415: "Multipart body", 422: "Unreadable or nested too deeply"},
        tags=("datasets",))}

    _file: BinaryIO | None = None
    _tmp: Path | None = None
    _writing: asyncio.Future | None = None

    def prepare(self) -> None:
        self._received = 0
        self._limit = int(self.service.settings.max_upload_mb * 1_000_000)
        if self.request.method != "POST":
            return
        self.query = self.parse_query(UploadQuery)
        if self.request.headers.get("Content-Type", "").startswith("multipart/"):
            raise UnsupportedMediaType("send the file itself as the body (curl --data-binary @file), "
                                       "not multipart form data")
        length = int(self.request.headers.get("Content-Length") or 0)
        if length > self._limit:
            raise self._too_large(f"an upload of {length / 1e6:.1f} MB")
        self.service.datasets.check_id_free(self.query.dataset_id)  # 409 before the body is sent
        # data_received enforces the limit with the JSON error shape; Tornado's own
        # limit would answer a chunked body with a bare 400
        self.request.connection.set_max_body_size(max(self._limit, length) + 2**20)
        self._tmp, _ = self.service.datasets.upload_target(self.query.filename)
        self._file = open(self._tmp, "wb")

    def _too_large(self, what: str = "the upload") -> PayloadTooLarge:
        limit_mb = self.service.settings.max_upload_mb
        return PayloadTooLarge(f"{what} is over MAX_UPLOAD_MB ({limit_mb:g} MB)", {"limit_bytes": self._limit})

    async def data_received(self, chunk: bytes) -> None:
        self._received += len(chunk)
        if self._file is None:
            return
        if self._received > self._limit:
            # answer now and drop the connection (Tornado closes it): reading on would
            # only let a client stream without end
            self._discard()
            self.refuse(self._too_large())
            return
        self._writing = asyncio.get_running_loop().run_in_executor(self.service.executor, self._file.write, chunk)
        await self._writing

    def on_connection_close(self) -> None:
        self._discard()  # an aborted upload leaves nothing behind
        super().on_connection_close()  # ends the request waiting for the rest of the body

    def on_finish(self) -> None:
        self._discard()

    def _discard(self) -> None:
        file, tmp, self._file, self._tmp = self._file, self._tmp, None, None

        def remove(_: Any = None) -> None:
            if file is not None:
                file.close()
            if tmp is not None:
                tmp.unlink(missing_ok=True)

        if self._writing is not None and not self._writing.done():
            self._writing.add_done_callback(remove)  # a write is in flight in a thread: close after it
        else:
            remove()

    async def post(self) -> None:
        file, tmp, self._file, self._tmp = self._file, self._tmp, None, None
        assert file is not None and tmp is not None
        try:
            file.close()
            if self._received == 0:
                raise InvalidRequest("the upload is empty: send the file as the request body")
            q = self.query
            options = {"delimiter": q.delimiter} if q.delimiter else {}
            ds = await self.service.datasets.adopt_upload(tmp, q.filename, q.dataset_id, q.name, q.description,
                                                          options)
        finally:
            tmp.unlink(missing_ok=True)  # gone already once adopted
        self.write_json({"message": "Dataset uploaded successfully", "dataset": ds,
                         "received_bytes": self._received}, 201)


class PartitionHandler(BaseHandler):
    openapi = {"post": Endpoint(
        "Rewrite a dataset as balanced Parquet partitions (a job). 200 with the contract's partition_info when it "
        "finishes within PARTITION_WAIT_S, else 202 with the job_id. n_partitions wins over partition_size_mb.",
        body=PartitionRequest, responses={200: "Partitioned", 202: "Still running as a job", 404: "Unknown dataset"},
        tags=("datasets",))}

    async def post(self) -> None:
        req = self.parse_body(PartitionRequest)
        done, status = await self.service.partition(req.dataset_id, req.n_partitions, req.partition_size_mb)
        if not done:
            self.write_json({"message": "Partitioning continues as a job; poll its status",
                             "dataset_id": req.dataset_id, "job_id": status["job_id"], "status": status["status"],
                             "progress": status["progress"],
                             "status_url": f"/api/processing/jobs/{status['job_id']}/status"}, 202)
            return
        if status["status"] == "failed":
            message = (status.get("error") or {}).get("message", "unknown error")
            raise Unprocessable(f"partitioning failed: {message}", {"job_id": status["job_id"]})
        if status["status"] == "cancelled":
            raise Conflict("partitioning was cancelled", {"job_id": status["job_id"]})
        self.write_json({"message": "Data partitioned successfully", "dataset_id": req.dataset_id,
                         "partition_info": status["result"], "job_id": status["job_id"]})


ROUTES = [
    (r"/api/processing/datasets", DatasetsHandler),
    (r"/api/processing/datasets/upload", UploadHandler),
    (rf"/api/processing/datasets/{ID}", DatasetHandler),
    (r"/api/processing/data/partition", PartitionHandler),
]
