"""One error shape everywhere: every route, unknown routes, wrong methods, bad JSON."""
from __future__ import annotations

import re

import pytest
import requests

from tests.helpers import concrete


def assert_error_shape(r: requests.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert set(err) == {"code", "message", "details", "request_id"}
    assert isinstance(err["code"], str) and err["code"]
    assert isinstance(err["message"], str) and err["message"]
    assert isinstance(err["details"], dict)
    assert re.fullmatch(r"[0-9a-f]{12}", err["request_id"])
    assert "Traceback" not in r.text
    return err


def spec_operations(server):
    spec = server.get("/api/processing/openapi.json").json()
    for path, item in spec["paths"].items():
        for method in item:
            yield path, method


def test_openapi_lists_the_cluster_endpoints(server):
    spec = server.get("/api/processing/openapi.json").json()
    for path in ("/api/processing/health", "/api/processing/cluster/start", "/api/processing/cluster/status",
                 "/api/processing/cluster/scale", "/api/processing/cluster/stop"):
        assert path in spec["paths"], path
    scale = spec["paths"]["/api/processing/cluster/scale"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "n_workers" in scale["properties"] and "name" not in scale["properties"]


def test_docs_page_is_readable(server):
    r = server.get("/docs")
    assert r.status_code == 200 and "text/html" in r.headers["Content-Type"]
    assert "/api/processing/cluster/scale" in r.text


def test_wrong_method_on_every_route_is_405_json(server):
    paths = server.get("/api/processing/openapi.json").json()["paths"]
    checked = 0
    for path, allowed in paths.items():
        for method in ("put", "patch", "delete", "post", "get"):
            if method in allowed:
                continue
            # the method is refused before any lookup: 405 even for an id that does not exist
            r = requests.request(method.upper(), server.url + concrete(path), timeout=30)
            err = assert_error_shape(r, 405)
            assert err["code"] == "method_not_allowed", (method, path)
            checked += 1
    assert checked >= 20, "the spec lists the routes"


def test_malformed_json_on_every_post_is_400(server):
    posts = [path for path, method in spec_operations(server) if method == "post"]
    assert len(posts) >= 5
    for path in posts:
        # the body is read before any lookup: 400 even for an id that does not exist. The upload
        # takes a raw file, not JSON: its 400 is for the missing ``filename``
        r = requests.post(server.url + concrete(path), data=b"{not json", timeout=30,
                          headers={"Content-Type": "application/json"})
        err = assert_error_shape(r, 400)
        assert err["code"] == "invalid_request", path
        needle = "filename" if path.endswith("/upload") else "not valid JSON"
        assert needle in err["message"], (path, err["message"])


@pytest.mark.parametrize("path", ["/api/nope", "/api/processing/nope", "/api/processing/cluster/nope", "/api"])
def test_unknown_api_route_is_404_json(server, path):
    err = assert_error_shape(server.get(path), 404)
    assert err["code"] == "not_found"


def test_non_object_body_is_400(server):
    err = assert_error_shape(server.post("/api/processing/cluster/scale", json=[1, 2]), 400)
    assert "JSON object" in err["message"]
