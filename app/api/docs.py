"""The OpenAPI document, generated from the handlers' ``Endpoint`` notes and the
same param models the handlers validate with, and a readable /docs page."""
from __future__ import annotations

import html
import re
from typing import Any

from .. import __version__
from ..models import json_schema
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

_GROUP = re.compile(r"\(\?P<(\w+)>[^)]*\)")


def openapi_path(pattern: str) -> str:
    """``/jobs/(?P<job_id>[^/]+)/status`` → ``/jobs/{job_id}/status``."""
    return _GROUP.sub(lambda m: "{" + m.group(1) + "}", pattern).rstrip("$")


def _operation(ep: Endpoint, path_params: list[str]) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": ep.summary, "tags": list(ep.tags), "responses": {}}
    params = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in path_params]
    if ep.query is not None:
        for name, spec in json_schema(ep.query)["properties"].items():
            params.append({"name": name, "in": "query", "required": False, "schema": spec,
                           "description": spec.get("description", "")})
    if params:
        op["parameters"] = params
    if ep.body is not None:
        op["requestBody"] = {"required": True, "content": {ep.content_type: {"schema": json_schema(ep.body)}}}
    for status, text in sorted(ep.responses.items()):
        schema = ERROR_SCHEMA if status >= 400 else {"type": "object"}
        op["responses"][str(status)] = {"description": text, "content": {"application/json": {"schema": schema}}}
    for status, text in ((400, "Invalid request"), (404, "Not found"), (405, "Method not allowed")):
        op["responses"].setdefault(str(status), {"description": text, "content": {"application/json": {"schema": ERROR_SCHEMA}}})
    return op


def build_openapi(routes: list[tuple]) -> dict[str, Any]:
    """OpenAPI 3.0 for every route whose handler declares ``openapi``."""
    paths: dict[str, Any] = {}
    for route in routes:
        pattern, handler = route[0], route[1]
        notes: dict[str, Endpoint] = getattr(handler, "openapi", {})
        if not notes:
            continue
        path_params = _GROUP.findall(pattern)
        item = paths.setdefault(openapi_path(pattern), {})
        for method, ep in notes.items():
            item[method] = _operation(ep, path_params)
    return {
        "openapi": "3.0.3",
        "info": {"title": "Distributed Processing Cluster API", "version": __version__,
                 "description": "JSON API of the processing service. Every error has the shape "
                                "{\"error\": {\"code\", \"message\", \"details\", \"request_id\"}}."},
        "paths": paths,
        "components": {"schemas": {"Error": ERROR_SCHEMA}},
    }


class OpenAPIHandler(BaseHandler):
    openapi = {"get": Endpoint("This OpenAPI document", tags=("system",))}

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
