"""Every API route, in one list, with the service bound to each handler."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import cluster, datasets, jobs, metrics, results
from .base import NotFoundHandler
from .docs import DocsHandler, OpenAPIHandler, build_openapi

if TYPE_CHECKING:
    from ..service import ProcessingService

RESOURCE_ROUTES: list[tuple[str, Any]] = [
    *cluster.ROUTES,
    *datasets.ROUTES,
    *jobs.ROUTES,
    *results.ROUTES,
    *metrics.ROUTES,
]


def api_routes(service: "ProcessingService") -> list[tuple[str, Any, dict[str, Any]]]:
    """Tornado patterns for ``pn.serve(extra_patterns=...)``; the 404 catch-all last."""
    spec_routes = [*RESOURCE_ROUTES, (r"/api/processing/openapi.json", OpenAPIHandler)]
    spec = build_openapi(spec_routes)
    routes: list[tuple[str, Any, dict[str, Any]]] = [
        (pattern, handler, {"service": service}) for pattern, handler in RESOURCE_ROUTES
    ]
    routes += [
        (r"/api/processing/openapi.json", OpenAPIHandler, {"service": service, "spec": spec}),
        (r"/docs/?", DocsHandler, {"service": service, "spec": spec}),
        (r"/api(?:/.*)?", NotFoundHandler, {"service": service}),
    ]
    return routes
