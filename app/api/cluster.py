"""Cluster lifecycle and health endpoints."""
from __future__ import annotations

from ..errors import InvalidRequest
from ..models import AdaptiveRange, PageQuery, ScaleRequest, build
from .base import BaseHandler, Endpoint


class HealthHandler(BaseHandler):
    openapi = {"get": Endpoint("Service health (contract shape); 'degraded' with reasons", tags=("system",))}
    public = True  # probes and the wall's watchdog poll it without a token

    def get(self) -> None:
        self.write_json(self.service.health())


class ClusterStartHandler(BaseHandler):
    openapi = {"post": Endpoint("Start the cluster (idempotent)", responses={200: "Started or already running", 409: "Could not start"}, tags=("cluster",))}

    async def post(self) -> None:
        self.json_body()  # a body is optional, but must be JSON when given
        started, info = await self.service.start_cluster()
        message = "Cluster started successfully" if started else "Cluster is already running"
        self.write_json({"message": message, "cluster_info": info})


class ClusterStatusHandler(BaseHandler):
    openapi = {"get": Endpoint("Cluster status from the last sample (≤ 1 s old)", tags=("cluster",))}

    def get(self) -> None:
        self.write_json(self.service.cluster_status())


class ClusterScaleHandler(BaseHandler):
    openapi = {"post": Endpoint(
        "Scale to n_workers, or adaptively between minimum and maximum",
        body=ScaleRequest, responses={200: "Scaling", 400: "Out of bounds", 409: "Not running or not scalable"},
        tags=("cluster",),
    )}

    async def post(self) -> None:
        req = self.parse_body(ScaleRequest)
        limit = self.service.settings.max_workers
        adaptive = None
        if req.adaptive is not None:
            rng = build(AdaptiveRange, req.adaptive)
            adaptive = {"minimum": rng.minimum, "maximum": rng.maximum}
        for value in (req.n_workers, *(adaptive or {}).values()):
            if value is not None and value > limit:
                raise InvalidRequest(f"worker count {value} is out of bounds; allowed 0..{limit} (MAX_WORKERS)",
                                     {"maximum": limit})
        status = await self.service.scale_cluster(req.n_workers, adaptive)
        target = f"{req.n_workers} workers" if adaptive is None else f"{adaptive['minimum']}–{adaptive['maximum']} workers (adaptive)"
        self.write_json({"message": f"Cluster scaling to {target}", "cluster_status": status, "target": req.n_workers, "adaptive": adaptive})


class ClusterStopHandler(BaseHandler):
    openapi = {"post": Endpoint("Stop the cluster (detach from an external one)", tags=("cluster",))}

    async def post(self) -> None:
        self.json_body()
        stopped = await self.service.stop_cluster()
        external = self.service.cluster.mode == "external"
        if not stopped:
            message = "Cluster is not running"
        else:
            message = "Detached from the external cluster" if external else "Cluster stopped successfully"
        self.write_json({"message": message, "cluster_status": self.service.cluster_status()})


class WorkersHandler(BaseHandler):
    openapi = {"get": Endpoint("Per-worker memory, CPU, tasks and heartbeat", tags=("cluster",))}

    def get(self) -> None:
        workers = self.service.workers()
        self.write_json({"total": len(workers), "workers": workers})


class ClusterEventsHandler(BaseHandler):
    openapi = {"get": Endpoint("Start/scale/stop events, newest first", query=PageQuery, tags=("cluster",))}

    async def get(self) -> None:
        q = self.parse_query(PageQuery)
        total, events = await self.service.reading(self.service.cluster_events, q.limit, q.offset)
        self.write_json({"total": total, "events": events})


ROUTES = [
    (r"/api/processing/health", HealthHandler),
    (r"/api/processing/cluster/start", ClusterStartHandler),
    (r"/api/processing/cluster/status", ClusterStatusHandler),
    (r"/api/processing/cluster/scale", ClusterScaleHandler),
    (r"/api/processing/cluster/stop", ClusterStopHandler),
    (r"/api/processing/cluster/events", ClusterEventsHandler),
    (r"/api/processing/metrics/workers", WorkersHandler),
]
