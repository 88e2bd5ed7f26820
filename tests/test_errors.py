"""One error shape everywhere: every route, unknown routes, wrong methods, bad JSON."""
from __future__ import annotations

import re

import pytest
import requests


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


def concrete(path: str) -> str:
    return re.sub(r"\{\w+\}", "does-not-exist", path)


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
    for path, _ in spec_operations(server):
        allowed = set(server.get("/api/processing/openapi.json").json()["paths"][path])
        for method in ("put", "patch", "delete", "post", "get"):
            if method in allowed:
                continue
            r = requests.request(method.upper(), server.url + concrete(path), timeout=30)
            if r.status_code == 404:  # a path with an id that does not exist
                assert_error_shape(r, 404)
                continue
            assert_error_shape(r, 405)


def test_malformed_json_on_every_post_is_400(server):
    for path, method in spec_operations(server):
        if method != "post":
            continue
        r = requests.post(server.url + concrete(path), data=b"{not json", timeout=30,
                          headers={"Content-Type": "application/json"})
        if r.status_code == 404:
            assert_error_shape(r, 404)
            continue
        if r.status_code in (413, 415):  # upload endpoints refuse non-multipart bodies differently
            assert_error_shape(r, r.status_code)
            continue
        assert_error_shape(r, 400)


@pytest.mark.parametrize("path", ["/api/nope", "/api/processing/nope", "/api/processing/cluster/nope", "/api"])
def test_unknown_api_route_is_404_json(server, path):
    err = assert_error_shape(server.get(path), 404)
    assert err["code"] == "not_found"


def test_non_object_body_is_400(server):
    err = assert_error_shape(server.post("/api/processing/cluster/scale", json=[1, 2]), 400)
    assert "JSON object" in err["message"]
