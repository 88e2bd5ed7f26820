"""Access, CORS, limits and hygiene, against the real server with tokens set.

Walks every operation of the OpenAPI document with no token, a wrong token, the
API token and the read-only token; checks CORS preflights, the body limit, the
request id, the sign-in of the pages, the bind refusal, and a burst of
submissions answered 201 or 429 with none lost.
"""
from __future__ import annotations

import asyncio
import logging
import re
from typing import Any, Iterator

import httpx
import pytest
import requests

from tests.load import burst, count_rows
from tests.helpers import concrete
from tests.server import ServerProcess

TOKEN = "test-api-token-5f1c"
READ_TOKEN = "test-read-token-93ab"
WALL_TOKEN = "test-wall-token-7d20"
ORIGIN = "http://analysis.example"
OTHER_ORIGIN = "http://evil.example"
MAX_REQUEST_KB = 16
SECURED_ENV = {
    "PROCESSING_API_TOKEN": TOKEN, "PROCESSING_READ_TOKEN": READ_TOKEN, "WALL_TOKEN": WALL_TOKEN,
    "CORS_ALLOWED_ORIGINS": f"{ORIGIN},http://localhost:5173", "MAX_REQUEST_KB": str(MAX_REQUEST_KB),
    "MAX_WORKERS": "2", "AUTH_MAX_FAILURES": "100000",  # the walks below send hundreds of wrong tokens
}
PUBLIC = {("/api/processing/health", "get"), ("/api/processing/openapi.json", "get")}
SUBMISSION = {"operation": "aggregate", "dataset_id": "demo_expression",
              "parameters": {"column": "expression_level", "operation": "mean"}, "max_cores": 1, "max_memory_gb": 0.5}


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path_factory.mktemp("secured"), SECURED_ENV).start()
    yield srv
    srv.cleanup()


@pytest.fixture(scope="module")
def operations(secured: ServerProcess) -> list[tuple[str, str]]:
    spec = secured.get("/api/processing/openapi.json").json()
    return [(path, method) for path, item in spec["paths"].items() for method in item]


def call(srv: ServerProcess, method: str, path: str, headers: dict[str, str] | None = None,
         **kw: Any) -> requests.Response:
    return requests.request(method.upper(), srv.url + concrete(path), headers=headers or {}, timeout=60, **kw)


def assert_error(r: requests.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, (r.request.method, r.url, r.status_code, r.text)
    assert r.headers["Content-Type"].startswith("application/json")
    err = r.json()["error"]
    assert set(err) == {"code", "message", "details", "request_id"}
    assert err["request_id"] == r.headers["X-Request-Id"]
    assert "Traceback" not in r.text
    if code is not None:
        assert err["code"] == code, err
    return err


# -- tokens on every route -------------------------------------------------------------

def test_every_protected_route_refuses_a_missing_or_wrong_token(secured, operations):
    assert len(operations) >= 20
    for path, method in operations:
        if (path, method) in PUBLIC:
            continue
        for headers in ({}, auth("wrong-token"), {"Authorization": f"Basic {TOKEN}"}, {"Authorization": "Bearer"}):
            r = call(secured, method, path, headers, data=b"{}")
            assert_error(r, 401, "unauthorized")
            assert r.headers["WWW-Authenticate"].startswith("Bearer")


def test_every_route_accepts_the_api_token(secured, operations):
    for path, method in operations:
        # a malformed body stops every write before it acts: 400 (or 404 for an unknown id)
        data = b"{not json" if method != "get" else None
        r = call(secured, method, path, auth(TOKEN), data=data)
        assert r.status_code not in (401, 403), (method, path, r.text)
        assert r.status_code < 500, (method, path, r.text)


def test_read_token_reads_but_never_writes(secured, operations):
    for path, method in operations:
        r = call(secured, method, path, auth(READ_TOKEN), data=b"{}" if method != "get" else None)
        if method == "get":
            assert r.status_code not in (401, 403), (path, r.text)
        elif (path, method) not in PUBLIC:
            err = assert_error(r, 403, "forbidden")
            assert "read-only" in err["message"]


def test_health_and_the_api_description_stay_open(secured):
    assert secured.get("/api/processing/health").json()["status"] in ("healthy", "degraded")
    assert "paths" in secured.get("/api/processing/openapi.json").json()
    assert secured.get("/docs").status_code == 200


def test_openapi_declares_the_bearer_scheme(secured):
    spec = secured.get("/api/processing/openapi.json").json()
    scheme = spec["components"]["securitySchemes"]["bearer"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    assert spec["security"] == [{"bearer": []}]
    assert spec["paths"]["/api/processing/health"]["get"]["security"] == []
    assert "401" in spec["paths"]["/api/processing/jobs/submit"]["post"]["responses"]


def test_unknown_paths_and_prometheus_need_the_token_too(secured):
    assert_error(secured.get("/api/processing/nope"), 401)
    assert_error(secured.get("/api/processing/nope", headers=auth(TOKEN)), 404, "not_found")
    assert_error(secured.get("/metrics"), 401)
    assert secured.get("/metrics", headers=auth(READ_TOKEN)).status_code == 200


def test_scheme_is_case_insensitive_and_token_exact(secured):
    assert secured.get("/api/processing/jobs/list", headers={"Authorization": f"bearer {TOKEN}"}).status_code == 200
    assert_error(secured.get("/api/processing/jobs/list", headers=auth(TOKEN + "x")), 401)
    assert_error(secured.get("/api/processing/jobs/list", headers=auth(TOKEN[:-1])), 401)


def test_every_api_response_carries_a_request_id(secured):
    ok = secured.get("/api/processing/health")
    assert re.fullmatch(r"[0-9a-f]{12}", ok.headers["X-Request-Id"])
    err = secured.get("/api/processing/jobs/nope/status", headers=auth(TOKEN))
    assert err.headers["X-Request-Id"] == err.json()["error"]["request_id"]
    assert secured.get("/api/processing/health").headers["X-Request-Id"] != ok.headers["X-Request-Id"]


# -- CORS --------------------------------------------------------------------------------

def preflight(srv: ServerProcess, path: str, origin: str, method: str = "POST") -> requests.Response:
    return requests.options(srv.url + path, timeout=30, headers={
        "Origin": origin, "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization, content-type"})


def test_preflight_from_an_allowed_origin_needs_no_token(secured):
    r = preflight(secured, "/api/processing/jobs/submit", ORIGIN)
    assert r.status_code == 204 and r.content == b""
    assert r.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "Origin" in r.headers["Vary"]
    assert "POST" in r.headers["Access-Control-Allow-Methods"]
    allowed = {h.strip().lower() for h in r.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type"} <= allowed
    assert int(r.headers["Access-Control-Max-Age"]) > 0


def test_preflight_from_another_origin_gets_no_grant(secured):
    r = preflight(secured, "/api/processing/jobs/submit", OTHER_ORIGIN)
    assert r.status_code == 204
    assert not [h for h in r.headers if h.lower().startswith("access-control-")]


def test_responses_carry_the_origin_only_for_allowed_origins(secured):
    r = secured.get("/api/processing/jobs/list", headers={**auth(TOKEN), "Origin": ORIGIN})
    assert r.status_code == 200 and r.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "Origin" in r.headers["Vary"] and "X-Request-Id" in r.headers["Access-Control-Expose-Headers"]
    denied = secured.get("/api/processing/jobs/list", headers={"Origin": ORIGIN})  # the browser can read the 401
    assert_error(denied, 401)
    assert denied.headers["Access-Control-Allow-Origin"] == ORIGIN
    other = secured.get("/api/processing/jobs/list", headers={**auth(TOKEN), "Origin": OTHER_ORIGIN})
    assert other.status_code == 200
    assert not [h for h in other.headers if h.lower().startswith("access-control-")]


def test_the_contract_fetch_example_works_from_an_allowed_origin(secured):
    """What a browser does for the guide's submitJob(): preflight, then the POST with the token."""
    pre = preflight(secured, "/api/processing/jobs/submit", ORIGIN)
    assert pre.headers["Access-Control-Allow-Origin"] == ORIGIN
    r = secured.post("/api/processing/jobs/submit", json=SUBMISSION, headers={**auth(TOKEN), "Origin": ORIGIN})
    assert r.status_code == 201, r.text
    assert r.headers["Access-Control-Allow-Origin"] == ORIGIN
    status = secured.get(f"/api/processing/jobs/{r.json()['job_id']}/status", headers={**auth(TOKEN), "Origin": ORIGIN})
    assert status.headers["Access-Control-Allow-Origin"] == ORIGIN and status.json()["job_id"] == r.json()["job_id"]


# -- limits --------------------------------------------------------------------------------

def test_json_body_over_the_limit_is_413(secured):
    big = {**SUBMISSION, "parameters": {"column": "x" * (MAX_REQUEST_KB * 1024)}}
    err = assert_error(secured.post("/api/processing/jobs/submit", json=big, headers=auth(TOKEN)), 413,
                       "payload_too_large")
    assert "MAX_REQUEST_KB" in err["message"]


def test_chunked_json_body_over_the_limit_is_413(secured):
    def chunks() -> Iterator[bytes]:
        for _ in range(MAX_REQUEST_KB * 2):
            yield b" " * 1024

    r = requests.post(secured.url + "/api/processing/jobs/submit", data=chunks(), timeout=30,
                      headers={**auth(TOKEN), "Content-Type": "application/json"})
    assert_error(r, 413, "payload_too_large")


def test_a_body_under_the_limit_still_works(secured):
    body = {**SUBMISSION, "parameters": {**SUBMISSION["parameters"]}}
    padded = '{"pad": "' + "x" * (MAX_REQUEST_KB * 1024 - 200) + '"}'
    assert_error(secured.post("/api/processing/jobs/submit", data=padded,
                              headers={**auth(TOKEN), "Content-Type": "application/json"}), 400)
    assert secured.post("/api/processing/jobs/submit", json=body, headers=auth(TOKEN)).status_code == 201


def test_uploads_are_exempt_from_the_json_limit(secured):
    rows = "\n".join(f"g{i},{i * 0.5}" for i in range(MAX_REQUEST_KB * 200))
    data = ("gene_id,value\n" + rows).encode()
    assert len(data) > MAX_REQUEST_KB * 1024
    r = secured.post("/api/processing/datasets/upload?filename=big.csv&dataset_id=big_upload", json=None,
                     data=data, headers={**auth(TOKEN), "Content-Type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    assert_error(secured.post("/api/processing/datasets/upload?filename=x.csv", data=b"a,b\n1,2\n"), 401)


def test_fuzz_finding_a_subnormal_partition_size_is_a_400_not_a_500(secured):
    """Schemathesis' coverage phase sent 5e-324: the partition count overflowed (OverflowError → 500)."""
    r = secured.post("/api/processing/data/partition", headers=auth(TOKEN),
                     json={"dataset_id": "demo_expression", "n_partitions": None, "partition_size_mb": 5e-324})
    assert "more than 10000 partitions" in assert_error(r, 400, "invalid_request")["message"]


@pytest.mark.parametrize("path", ["/api/processing/jobs/list", "/api/processing/datasets",
                                  "/api/processing/cluster/events"])
def test_fuzz_finding_an_offset_beyond_sqlite_integers_is_a_400(secured, path):
    """bench_fuzz sent offset=16188278797931575296: SQLite's OverflowError was a 500."""
    r = secured.get(f"{path}?offset={2**64}", headers=auth(TOKEN))
    assert "out of range" in assert_error(r, 400, "invalid_request")["message"]


# -- the pages ----------------------------------------------------------------------------

def test_pages_redirect_to_sign_in_and_the_token_signs_in(secured):
    s = requests.Session()
    r = s.get(secured.url + "/jobs", allow_redirects=False, timeout=30)
    assert r.status_code == 302 and "login" in r.headers["Location"]
    form = s.get(secured.url + "/login?next=/jobs", timeout=30)
    assert 'name="token"' in form.text and 'type="password"' in form.text
    bad = s.post(secured.url + "/login", data={"token": "nope", "next": "/jobs"}, allow_redirects=False, timeout=30)
    assert bad.status_code == 302 and "error=1" in bad.headers["Location"] and "user" not in s.cookies
    good = s.post(secured.url + "/login", data={"token": TOKEN, "next": "/jobs"}, allow_redirects=False, timeout=30)
    assert good.status_code == 302 and good.headers["Location"] == "/jobs"
    assert "HttpOnly" in good.headers["Set-Cookie"] and "SameSite=Lax" in good.headers["Set-Cookie"]
    assert s.get(secured.url + "/jobs", allow_redirects=False, timeout=30).status_code == 200
    # the page cookie is not an API credential
    assert_error(s.get(secured.url + "/api/processing/jobs/list", timeout=30), 401)


def test_sign_in_never_redirects_off_site(secured):
    r = requests.post(secured.url + "/login", data={"token": TOKEN, "next": "//evil.example/x"},
                      allow_redirects=False, timeout=30)
    assert r.headers["Location"] == "/"


def test_wall_opens_with_its_token_only(secured):
    assert requests.get(secured.url + f"/wall?token={WALL_TOKEN}", allow_redirects=False, timeout=30).status_code == 200
    for query in ("", "?token=wrong", f"?token={READ_TOKEN}"):
        r = requests.get(secured.url + "/wall" + query, allow_redirects=False, timeout=30)
        assert r.status_code == 302, query
    # the wall token opens nothing else
    assert requests.get(secured.url + f"/?token={WALL_TOKEN}", allow_redirects=False, timeout=30).status_code == 302
    assert_error(requests.get(secured.url + "/api/processing/jobs/list", headers=auth(WALL_TOKEN), timeout=30), 401)


# -- binding ------------------------------------------------------------------------------

def test_public_bind_without_token_is_refused(tmp_path):
    srv = ServerProcess(tmp_path, {"PROCESSING_HOST": "0.0.0.0", "PROCESSING_API_TOKEN": "",
                                   "PROCESSING_ALLOW_INSECURE": "0"})
    with pytest.raises(RuntimeError, match="server exited"):  # start waits for the bound port
        srv.start(wait=False)
    assert srv.proc is not None
    assert srv.proc.wait(60) != 0
    log = srv.log_tail()
    assert "refusing to bind 0.0.0.0 without PROCESSING_API_TOKEN" in log and "PROCESSING_ALLOW_INSECURE=1" in log


def test_check_binding_rules(caplog):
    from app.server import check_binding, is_loopback
    from app.settings import Settings

    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        assert is_loopback(host)
        check_binding(Settings(host=host))
    for host in ("0.0.0.0", "192.0.2.10", "::", "example.org"):
        assert not is_loopback(host)
        with pytest.raises(SystemExit):
            check_binding(Settings(host=host))
        check_binding(Settings(host=host, api_token="t"))
    with caplog.at_level(logging.WARNING, logger="app.server"):
        check_binding(Settings(host="0.0.0.0", allow_insecure=True))
    assert "WITHOUT a token" in caplog.text


def test_insecure_flag_starts_on_a_loopback_alias(make_server):
    srv = make_server({"PROCESSING_HOST": "127.0.0.2", "PROCESSING_ALLOW_INSECURE": "1", "CLUSTER_AUTOSTART": "0"},
                      start=False)
    srv.start()  # ServerProcess reaches it at the address it logged (127.0.0.2)
    assert srv.get("/api/processing/health").status_code == 200
    assert "access: no PROCESSING_API_TOKEN" in srv.log_tail(200)


# -- 500s -----------------------------------------------------------------------------------

def test_an_unexpected_error_is_a_500_with_the_request_id_and_no_trace(caplog):
    """The write_error path, in-process: the traceback goes to the log under the request id."""
    from tornado.httpserver import HTTPServer
    from tornado.netutil import bind_sockets
    from tornado.web import Application

    from app.api.base import BaseHandler
    from app.settings import Settings

    class Service:
        settings = Settings()

    class Boom(BaseHandler):
        def get(self) -> None:
            raise RuntimeError("secret internals /etc/shadow")

    async def run() -> httpx.Response:
        sockets = bind_sockets(0, "127.0.0.1")
        server = HTTPServer(Application([(r"/boom", Boom, {"service": Service()})]))
        server.add_sockets(sockets)
        try:
            async with httpx.AsyncClient() as client:
                return await client.get(f"http://127.0.0.1:{sockets[0].getsockname()[1]}/boom")
        finally:
            server.stop()

    with caplog.at_level(logging.ERROR, logger="app.api"):
        r = asyncio.run(run())
    assert r.status_code == 500
    err = r.json()["error"]
    assert err["code"] == "internal_error" and err["request_id"] == r.headers["X-Request-Id"]
    assert err["request_id"] in err["message"]
    assert "secret" not in r.text and "Traceback" not in r.text
    assert f"request {err['request_id']} failed" in caplog.text and "secret internals" in caplog.text


# -- burst ------------------------------------------------------------------------------------

def test_burst_of_submissions_is_answered_201_or_429_and_none_lost(make_server):
    srv = make_server({"PROCESSING_API_TOKEN": TOKEN, "MAX_QUEUED_JOBS": "100"})
    srv.wait_for(lambda: srv.get("/api/processing/cluster/status", headers=auth(TOKEN)).json()["n_workers"] == 2)
    result = asyncio.run(burst(srv.url, TOKEN, n=200, concurrency=200))
    assert set(result["statuses"]) <= {201, 429}, result["error_samples"]
    assert result["statuses"].get(201, 0) >= 100 and result["statuses"].get(429, 0) > 0, result["statuses"]
    assert result["errors"] == 0, result["error_samples"]
    assert result["health_max_ms"] < 2500, result
    found, total = count_rows(srv.data_dir / "processing.db", result["job_ids"])
    assert found == total == result["statuses"][201] == len(result["job_ids"])
