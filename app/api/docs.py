"""The OpenAPI document, generated from the handlers' ``Endpoint`` notes and the
same param models the handlers validate with, and a readable /docs page."""
from __future__ import annotations

import html
import re
from typing import Any

from .. import __version__
from ..models import json_schema, public_params
from .base import BaseHandler, Endpoint

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {
        "type": "object",
        "required": ["code", "message"],
        "properties": {
            "code": {"type": "string"}, "message": {"type": "string"},
            "details": {"type": "object"}, "request_id": {"type": ["string", "null"]},
        },
    }},
}
ERROR_REF = {"$ref": "#/components/schemas/Error"}
BEARER = {"type": "http", "scheme": "bearer",
          "description": "PROCESSING_API_TOKEN; PROCESSING_READ_TOKEN is accepted for GET. "
                         "Needed only when the server has PROCESSING_API_TOKEN set."}

# Errors every operation may answer, besides those its Endpoint lists.
COMMON_ERRORS = {400: "Invalid request", 404: "Not found", 405: "Method not allowed",
                 421: "The Host header names none of the served names (PROCESSING_ALLOWED_HOSTS)"}
PROTECTED_ERRORS = {401: "Missing or wrong bearer token",
                    429: "Too many wrong tokens from this address (AUTH_MAX_FAILURES); Retry-After says when"}
WRITE_ERRORS = {403: "The read-only token cannot write, or the request comes from a foreign origin",
                413: "Body over MAX_REQUEST_KB"}


def _obj(required: dict[str, Any], **more: Any) -> dict[str, Any]:
    """An object schema requiring ``required`` (name → schema); other fields are allowed."""
    return {"type": "object", "required": list(required), "properties": {**required, **more}}


_S, _I, _N, _B, _O = {"type": "string"}, {"type": "integer"}, {"type": "number"}, {"type": "boolean"}, {"type": "object"}
_MESSAGE = _obj({"message": _S})
_JOB_ROW = _obj({"job_id": _S, "operation": _S, "status": _S, "priority": _S, "progress": _N, "created_at": _S})
_CLUSTER_STATUS = _obj({"status": _S, "n_workers": _I, "total_cores": _I, "total_memory": _S, "used_memory": _S,
                        "memory_usage_percent": _N, "active_tasks": _I})

# The response shapes the contract (processing-cluster-guide.md) promises: its
# fields are required, further fields are allowed. Keyed by (path, method, status).
RESPONSE_SCHEMAS: dict[tuple[str, str, int], dict[str, Any]] = {
    ("/api/processing/health", "get", 200): _obj({"status": {"enum": ["healthy", "degraded"]},
                                                   "cluster_running": _B, "timestamp": _S}),
    ("/api/processing/cluster/start", "post", 200): _obj({"message": _S, "cluster_info": _obj({"status": _S})}),
    ("/api/processing/cluster/status", "get", 200): _CLUSTER_STATUS,
    ("/api/processing/cluster/scale", "post", 200): _MESSAGE,
    ("/api/processing/cluster/stop", "post", 200): _MESSAGE,
    ("/api/processing/jobs/submit", "post", 201): _obj({"message": _S, "job_id": _S, "status": _S}),
    ("/api/processing/jobs/{job_id}/status", "get", 200): _JOB_ROW,
    ("/api/processing/jobs/{job_id}/cancel", "post", 200): _obj({"message": _S, "job_id": _S, "status": _S}),
    ("/api/processing/jobs/list", "get", 200): _obj({"total": _I, "jobs": {"type": "array", "items": _JOB_ROW}}),
    ("/api/processing/queue/status", "get", 200): _obj({
        "scheduler_running": _B,
        "queue_status": _obj({"total_queued": _I, "total_running": _I, "total_completed": _I,
                              "priority_breakdown": _O}),
        "resource_usage": _obj({"cluster_resources": _O}),
    }),
    ("/api/processing/data/partition", "post", 200): _obj({
        "message": _S, "dataset_id": _S,
        "partition_info": _obj({"n_partitions": _I, "columns": {"type": "array", "items": _S},
                                "estimated_size_mb": _N}),
    }),
    ("/api/processing/data/partition", "post", 202): _obj({"message": _S, "dataset_id": _S, "job_id": _S,
                                                           "status": _S}),
    ("/api/processing/metrics/cluster", "get", 200): _obj({"total": _I, "metrics": {"type": "array", "items": _obj({
        "timestamp": _S, "n_workers": _I, "total_memory": _S, "used_memory": _S, "total_cores": _I,
        "active_tasks": _I})}}),
}

# Request examples from the contract, so clients and fuzzers start from a body that works.
REQUEST_EXAMPLES: dict[tuple[str, str], dict[str, Any]] = {
    ("/api/processing/jobs/submit", "post"): {
        "operation": "aggregate", "dataset_id": "demo_expression",
        "parameters": {"column": "expression_level", "operation": "mean"}, "priority": "HIGH",
        "max_memory_gb": 0.5, "max_cores": 1},
    ("/api/processing/cluster/scale", "post"): {"n_workers": 2},
    ("/api/processing/data/partition", "post"): {"dataset_id": "demo_expression", "n_partitions": 2},
}

# OpenAPI links: where an id a response returns can be used next (by clients, and by
# schemathesis' stateful phase). (path, method, status) → [(target path, method, parameter, expression)].
_JOB = "$response.body#/job_id"
_DATASET = "$response.body#/dataset/dataset_id"
LINKS: dict[tuple[str, str, int], list[tuple[str, str, str, str]]] = {
    ("/api/processing/jobs/submit", "post", 201): [
        (f"/api/processing/jobs/{{job_id}}/{action}", method, "job_id", _JOB)
        for action, method in (("status", "get"), ("wait", "get"), ("result", "get"), ("cancel", "post"))],
    **{(path, "post", 201): [("/api/processing/datasets/{dataset_id}", method, "dataset_id", _DATASET)
                             for method in ("get", "delete")]
       for path in ("/api/processing/datasets", "/api/processing/datasets/upload")},
}

_GROUP = re.compile(r"\(\?P<(\w+)>[^)]*\)")


def openapi_path(pattern: str) -> str:
    """``/jobs/(?P<job_id>[^/]+)/status`` → ``/jobs/{job_id}/status``."""
    return _GROUP.sub(lambda m: "{" + m.group(1) + "}", pattern).rstrip("$").replace("\\.", ".")


def model_schema(model: Any) -> dict[str, Any]:
    """The model's JSON schema with each ``String(regex=...)`` as a ``pattern`` (param leaves it out)."""
    schema = json_schema(model)
    for name, p in public_params(model).items():
        regex = getattr(p, "regex", None)
        spec = schema["properties"].get(name)
        if regex and spec is not None:
            for alternative in spec.get("anyOf", [spec]):
                if alternative.get("type") == "string":
                    alternative["pattern"] = regex
    return schema


def _query_schema(spec: dict[str, Any]) -> dict[str, Any]:
    """A query value is a string or absent, never JSON null: drop param's null alternative."""
    alternatives = [a for a in spec.get("anyOf", []) if a.get("type") != "null"]
    if not alternatives:
        return spec
    rest = {k: v for k, v in spec.items() if k != "anyOf"}
    return {**rest, **alternatives[0]} if len(alternatives) == 1 else {**rest, "anyOf": alternatives}


def operation_id(path: str, method: str) -> str:
    """``post`` ``/api/processing/jobs/{job_id}/cancel`` → ``post_jobs_job_id_cancel``."""
    words = re.findall(r"[A-Za-z0-9]+", path.removeprefix("/api/processing"))
    return "_".join([method, *words])


def _links(path: str, method: str, status: int) -> dict[str, Any]:
    return {operation_id(target, target_method): {"operationId": operation_id(target, target_method),
                                                  "parameters": {param: expression}}
            for target, target_method, param, expression in LINKS.get((path, method, status), [])}


def _parameters(ep: Endpoint, path_params: list[str]) -> list[dict[str, Any]]:
    params = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in path_params]
    if ep.query is not None:
        schema = model_schema(ep.query)
        for name, spec in schema["properties"].items():
            params.append({"name": name, "in": "query", "required": name in schema.get("required", []),
                           "schema": _query_schema(spec), "description": spec.get("description", "")})
    return params


def _operation(ep: Endpoint, path: str, method: str, path_params: list[str], public: bool) -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": operation_id(path, method), "summary": ep.summary, "tags": list(ep.tags),
                          "responses": {}}
    if params := _parameters(ep, path_params):
        op["parameters"] = params
    if ep.body is not None:
        media: dict[str, Any] = {"schema": model_schema(ep.body)}
        if (path, method) in REQUEST_EXAMPLES:
            media["example"] = REQUEST_EXAMPLES[(path, method)]
        op["requestBody"] = {"required": True, "content": {ep.content_type: media}}
    if public:
        op["security"] = []  # open even when the server has a token
    errors = {**COMMON_ERRORS, **({} if public else PROTECTED_ERRORS),
              **(WRITE_ERRORS if method != "get" else {})}
    for status, text in sorted({**errors, **ep.responses}.items()):
        if status >= 400:
            content = {"application/json": {"schema": ERROR_REF}}
        else:
            schema = RESPONSE_SCHEMAS.get((path, method, status), {"type": "object"})
            content = {ep.response_type: {"schema": schema if ep.response_type == "application/json" else _S}}
        op["responses"][str(status)] = {"description": text, "content": content}
        if links := _links(path, method, status):
            op["responses"][str(status)]["links"] = links
    return op


def build_openapi(routes: list[tuple]) -> dict[str, Any]:
    """OpenAPI 3.1 for every route whose handler declares ``openapi``."""
    paths: dict[str, Any] = {}
    for route in routes:
        pattern, handler = route[0], route[1]
        notes: dict[str, Endpoint] = getattr(handler, "openapi", {})
        if not notes:
            continue
        path_params = _GROUP.findall(pattern)
        path = openapi_path(pattern)
        item = paths.setdefault(path, {})
        for method, ep in notes.items():
            item[method] = _operation(ep, path, method, path_params, getattr(handler, "public", False))
    return {
        "openapi": "3.1.0",
        "info": {"title": "Distributed Processing Cluster API", "version": __version__,
                 "description": "JSON API of the processing service. Every error has the shape "
                                "{\"error\": {\"code\", \"message\", \"details\", \"request_id\"}}. "
                                "With PROCESSING_API_TOKEN set, send 'Authorization: Bearer <token>'."},
        "paths": paths,
        "security": [{"bearer": []}],
        "components": {"schemas": {"Error": ERROR_SCHEMA}, "securitySchemes": {"bearer": BEARER}},
    }


class OpenAPIHandler(BaseHandler):
    openapi = {"get": Endpoint("This OpenAPI document", tags=("system",))}
    public = True  # the API's description is not a secret; every operation it lists still needs the token

    def initialize(self, service: Any, spec: dict[str, Any]) -> None:  # type: ignore[override]
        super().initialize(service)
        self.spec = spec

    def get(self) -> None:
        self.write_json(self.spec)


class DocsHandler(OpenAPIHandler):
    """A readable HTML page of the API, rendered from the same document."""

    openapi: dict[str, Endpoint] = {}

    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        rows = []
        for path, item in self.spec["paths"].items():
            for method, op in item.items():
                body = op.get("requestBody", {}).get("content", {})
                schema = next(iter(body.values()), {}).get("schema") if body else None
                fields = ""
                if schema:
                    fields = "".join(
                        f"<li><code>{html.escape(k)}</code> — {html.escape(str(v.get('description', '')))}</li>"
                        for k, v in schema.get("properties", {}).items()
                    )
                    fields = f"<ul>{fields}</ul>"
                rows.append(
                    f"<section><h3><span class='m {method}'>{method.upper()}</span> <code>{html.escape(path)}</code></h3>"
                    f"<p>{html.escape(op['summary'])}</p>{fields}</section>"
                )
        self.finish(DOCS_PAGE.format(body="".join(rows)))


DOCS_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Processing API</title>
<style>body{{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;padding:0 1em;color:#222}}
section{{border-bottom:1px solid #ddd;padding:.3em 0}} h3{{margin:.4em 0;font-size:1.05em}}
.m{{display:inline-block;min-width:4.5em;padding:2px 6px;border-radius:4px;color:#fff;font-size:.85em;text-align:center}}
.get{{background:#2b7bb9}} .post{{background:#2f9e44}} .delete{{background:#c92a2a}} p{{margin:.2em 0}}</style></head>
<body><h1>Distributed Processing Cluster API</h1>
<p>Machine-readable: <a href="/api/processing/openapi.json">/api/processing/openapi.json</a>.
Errors: <code>{{"error": {{"code", "message", "details", "request_id"}}}}</code>.</p>{body}</body></html>"""
