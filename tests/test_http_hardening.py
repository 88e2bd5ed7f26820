"""HTTP hardening against the real server (issue 14): Host and Origin checks (DNS
rebinding, CSRF), JSON-only bodies, security headers, HEAD, JSON depth, the sign-in
redirect, websocket origins, the token lockout, slow and half-open clients and the
log's repeat filter.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import time
from typing import Any, Iterator

import pytest
import requests

from tests import fuzzing
from tests.server import ServerProcess

TOKEN = "hardening-token-41c2"
READ_TOKEN = "hardening-read-token-77e0"
WALL_TOKEN = "hardening-wall-token-0a9d"
ALLOWED_ORIGIN = "http://analysis.example"
EVIL = "http://evil.example"
SUBMISSION = {"operation": "aggregate", "dataset_id": "demo_expression", "priority": "CRITICAL",
              "parameters": {"column": "expression_level", "operation": "mean"}, "max_cores": 1, "max_memory_gb": 0.5}
HOSTILE_NEXT = [
    "/%09/evil.example", "/\t/evil.example", "/\n/evil.example", "/\r\n/evil.example", "//evil.example",
    "///evil.example", "/\\evil.example", "\\\\evil.example", "/\\/evil.example", "http://evil.example",
    "https://evil.example/", "https:evil.example", "//evil.example/%2F..", "/%2F/evil.example",
    "/%2f%2fevil.example", "/%5Cevil.example", "/%5c%5cevil.example", "%2F%2Fevil.example",
    "/%252F%252Fevil.example", " //evil.example", "\t//evil.example", "javascript:alert(1)",
    "/\x00/evil.example", "/.//evil.example", "/\u3000/evil.example", "evil.example", "/%E3%80%80/evil.example",
]


def error_of(r: requests.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, (r.request.method, r.url, r.status_code, r.text[:500])
    assert r.headers["Content-Type"].startswith("application/json"), r.headers
    err = r.json()["error"]
    assert set(err) == {"code", "message", "details", "request_id"}
    assert err["request_id"] == r.headers["X-Request-Id"]
    if code is not None:
        assert err["code"] == code, err
    return err


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """No token (the default), loopback, one CORS origin, one extra host name."""
    srv = ServerProcess(tmp_path_factory.mktemp("open"), {
        "CLUSTER_AUTOSTART": "0", "CORS_ALLOWED_ORIGINS": ALLOWED_ORIGIN,
        "PROCESSING_ALLOWED_HOSTS": "dash.example"}).start()
    yield srv
    srv.cleanup()


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path_factory.mktemp("secured"), {
        "CLUSTER_AUTOSTART": "0", "PROCESSING_API_TOKEN": TOKEN, "PROCESSING_READ_TOKEN": READ_TOKEN,
        "WALL_TOKEN": WALL_TOKEN, "AUTH_MAX_FAILURES": "1000"}).start()
    yield srv
    srv.cleanup()


def job_count(srv: ServerProcess) -> int:
    return srv.get("/api/processing/jobs/list").json()["total"]


# -- CSRF: the two fetch reproductions of the issue -------------------------------------------

def test_text_plain_no_cors_submit_creates_no_job(open_server):
    """fetch(submit, {mode: 'no-cors', headers: {'Content-Type': 'text/plain'}, body}) from another page."""
    open_server.wait_for(lambda: open_server.get("/api/processing/datasets/demo_expression").status_code == 200)
    before = job_count(open_server)
    body = json.dumps(SUBMISSION)
    from_page = open_server.post("/api/processing/jobs/submit", data=body,
                                 headers={"Content-Type": "text/plain;charset=UTF-8", "Origin": EVIL})
    error_of(from_page, 403, "forbidden")
    # without the Origin (a script): still not JSON, so 415, whatever the body says
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None):
        headers = {"Content-Type": ctype} if ctype else {}
        r = requests.post(open_server.url + "/api/processing/jobs/submit", data=body.encode(), headers=headers,
                          timeout=30)
        assert "application/json" in error_of(r, 415, "unsupported_media_type")["message"]
    assert job_count(open_server) == before
    ok = open_server.post("/api/processing/jobs/submit", data=body,
                          headers={"Content-Type": "application/json; charset=utf-8"})
    assert ok.status_code == 201, ok.text


def test_cluster_stop_from_a_foreign_origin_is_403(open_server):
    """fetch('.../cluster/stop', {method: 'POST', mode: 'no-cors'}) from another page."""
    stop = "/api/processing/cluster/stop"
    for headers in ({"Origin": EVIL}, {"Origin": "null"}, {"Referer": f"{EVIL}/page.html"},
                    {"Origin": f"{open_server.url}.evil.example"}, {"Origin": "http://127.0.0.1:1"},
                    {"Origin": EVIL, "Referer": f"{open_server.url}/jobs"}):
        err = error_of(open_server.post(stop, headers=headers), 403, "forbidden")
        assert "CORS_ALLOWED_ORIGINS" in err["message"]
    for headers in ({}, {"Origin": open_server.url}, {"Origin": ALLOWED_ORIGIN},
                    {"Referer": f"{open_server.url}/cluster"},
                    {"Origin": f"http://localhost:{open_server.port}", "Host": f"localhost:{open_server.port}"}):
        assert open_server.post(stop, headers=headers).status_code == 200, headers


# -- DNS rebinding ------------------------------------------------------------------------------

@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "127.0.0.1.evil.example",
                                  "localhost.evil.example", "10.0.0.1", "[::2]"])
def test_a_foreign_host_is_421_on_the_api_and_the_pages(open_server, host):
    host = host.format(port=open_server.port)
    err = error_of(open_server.get("/api/processing/health", headers={"Host": host}), 421, "misdirected_request")
    assert "PROCESSING_ALLOWED_HOSTS" in err["message"]
    error_of(open_server.get("/api/processing/jobs/list", headers={"Host": host}), 421)
    error_of(open_server.post("/api/processing/cluster/stop", headers={"Host": host}), 421)
    for page in ("/", "/jobs", "/docs", "/wall", "/assets/does-not-exist.css", "/ws"):
        r = open_server.get(page, headers={"Host": host}, allow_redirects=False)
        assert r.status_code == 421, (page, r.status_code)
        assert "PROCESSING_ALLOWED_HOSTS" in r.text


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "LOCALHOST", "[::1]:{port}",
                                  "dash.example", "dash.example:443", "127.0.0.1:1"])
def test_served_names_are_answered_and_the_port_is_ignored(open_server, host):
    r = open_server.get("/api/processing/health", headers={"Host": host.format(port=open_server.port)})
    assert r.status_code == 200, r.text


# -- security headers --------------------------------------------------------------------------

def test_security_headers_on_pages_and_api(open_server):
    for path in ("/", "/jobs", "/docs", "/api/processing/health", "/api/processing/nope", "/api/processing/openapi.json"):
        r = open_server.get(path, allow_redirects=False)
        assert r.headers["X-Frame-Options"] == "DENY", path
        assert r.headers["X-Content-Type-Options"] == "nosniff", path
        assert r.headers["Referrer-Policy"] == "same-origin", path
        csp = r.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in csp, path
        if r.headers["Content-Type"].startswith("text/html"):
            assert "default-src 'self'" in csp and "object-src 'none'" in csp and "base-uri 'self'" in csp, path
            assert f"ws://127.0.0.1:{open_server.port}" in csp
        else:
            assert csp.startswith("default-src 'none'"), path


# -- HEAD --------------------------------------------------------------------------------------

def test_head_on_every_get_route(secured):
    spec = secured.get("/api/processing/openapi.json").json()
    gets = [path for path, item in spec["paths"].items() if "get" in item and "{" not in path]
    assert len(gets) >= 8
    for path in gets:
        for token in (TOKEN, READ_TOKEN):
            url = path + ("?timeout=0" if path.endswith("/wait") else "")
            got = secured.get(url, headers={"Authorization": f"Bearer {token}"})
            head = requests.head(secured.url + url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
            assert head.status_code == got.status_code == 200, (path, head.status_code, got.status_code)
            assert head.content == b"" and head.headers["Content-Type"] == got.headers["Content-Type"], path
    assert requests.head(secured.url + "/api/processing/jobs/list", timeout=30).status_code == 401
    assert requests.head(secured.url + "/api/processing/health", timeout=30).status_code == 200
    assert requests.head(secured.url + "/api/processing/jobs/nope/status", timeout=30,
                         headers={"Authorization": f"Bearer {READ_TOKEN}"}).status_code == 404


def test_head_on_pages(open_server):
    for path in ("/", "/jobs", "/docs"):
        got = open_server.get(path)
        head = requests.head(open_server.url + path, timeout=30)
        assert head.status_code == got.status_code == 200, (path, head.status_code)
        assert head.content == b"" and head.headers["Content-Type"].startswith("text/html"), path


# -- bodies --------------------------------------------------------------------------------------

def test_json_nested_too_deep_is_400_and_the_corpus_is_4xx(open_server):
    deep = b"[" * 100_000 + b"]" * 100_000
    r = requests.post(open_server.url + "/api/processing/jobs/submit", data=deep, timeout=60,
                      headers={"Content-Type": "application/json"})
    assert "nested" in error_of(r, 400, "invalid_request")["message"]
    for method, path, headers, body in fuzzing.KNOWN_BAD:
        r = requests.request(method, open_server.url + path, headers=headers, data=body, timeout=60)
        assert 400 <= r.status_code < 500, (path, r.status_code, r.text[:300])
        error_of(r, r.status_code)
    assert open_server.get("/api/processing/health").status_code == 200


# -- sign-in redirect ---------------------------------------------------------------------------

def test_sign_in_redirects_only_to_local_paths(secured):
    for value in HOSTILE_NEXT:
        r = requests.post(secured.url + "/login", data={"token": TOKEN, "next": value}, allow_redirects=False,
                          timeout=30)
        assert r.status_code == 302 and r.headers["Location"] == "/", (value, r.headers.get("Location"))
    # the form also gets hostile values in its query string, percent-encoded once more
    raw = requests.post(secured.url + "/login", data="token=" + TOKEN + "&next=/%09/evil.example",
                        headers={"Content-Type": "application/x-www-form-urlencoded"}, allow_redirects=False,
                        timeout=30)
    assert raw.headers["Location"] == "/"
    for value in ("/jobs", "/data?dataset=demo_expression", "/wall"):
        r = requests.post(secured.url + "/login", data={"token": TOKEN, "next": value}, allow_redirects=False,
                          timeout=30)
        assert r.headers["Location"] == value


# -- websocket origin -------------------------------------------------------------------------------

def ws_handshake(port: int, origin: str, cookie: str, path: str = "/ws") -> bytes:
    """The answer's head to a websocket upgrade of ``path`` from a page on ``origin``."""
    request = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: {origin}\r\n"
               f"Sec-WebSocket-Protocol: bokeh, not-a-session-token\r\nCookie: {cookie}\r\n\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(request.encode())
        return s.recv(4096)


def test_websocket_refuses_foreign_origins_on_a_public_bind(make_server):
    srv = make_server({"PROCESSING_HOST": "0.0.0.0", "PROCESSING_API_TOKEN": TOKEN, "CLUSTER_AUTOSTART": "0",
                       "DEMO_DATASET": "0"})
    signed_in = requests.Session()
    assert signed_in.post(srv.url + "/login", data={"token": TOKEN}, allow_redirects=False).status_code == 302
    cookie = "; ".join(f"{k}={v}" for k, v in signed_in.cookies.items())
    for origin in (EVIL, f"http://evil.example:{srv.port}", "null", f"https://127.0.0.1.evil.example:{srv.port}"):
        assert ws_handshake(srv.port, origin, cookie).startswith(b"HTTP/1.1 403"), origin
    for origin in (f"http://127.0.0.1:{srv.port}", f"http://localhost:{srv.port}"):
        assert ws_handshake(srv.port, origin, cookie).startswith(b"HTTP/1.1 101"), origin


# -- brute force -----------------------------------------------------------------------------------

def test_wrong_tokens_lock_the_address_out_for_a_while(make_server):
    srv = make_server({"PROCESSING_API_TOKEN": TOKEN, "WALL_TOKEN": WALL_TOKEN, "CLUSTER_AUTOSTART": "0",
                       "DEMO_DATASET": "0", "AUTH_MAX_FAILURES": "3", "AUTH_LOCKOUT_S": "4"})
    right = {"Authorization": f"Bearer {TOKEN}"}
    wrong = [f"guess-{i}-a8f3" for i in range(3)]
    for guess in wrong:
        error_of(srv.get("/api/processing/jobs/list", headers={"Authorization": f"Bearer {guess}"}), 401)
    locked = srv.get("/api/processing/jobs/list", headers=right)
    error_of(locked, 429, "too_many_requests")
    assert 1 <= int(locked.headers["Retry-After"]) <= 4
    # the lockout covers the sign-in form and the wall too
    assert requests.post(srv.url + "/login", data={"token": TOKEN}, allow_redirects=False, timeout=30).status_code == 429
    assert requests.get(srv.url + f"/wall?token={WALL_TOKEN}", allow_redirects=False, timeout=30).status_code == 302
    assert srv.get("/api/processing/health").status_code == 200  # public: never locked
    time.sleep(4.5)
    assert srv.get("/api/processing/jobs/list", headers=right).status_code == 200
    # wrong wall tokens and sign-ins count as well
    for guess in wrong[:2]:
        requests.get(srv.url + f"/wall?token={guess}", allow_redirects=False, timeout=30)
    requests.post(srv.url + "/login", data={"token": wrong[2]}, allow_redirects=False, timeout=30)
    error_of(srv.get("/api/processing/jobs/list", headers=right), 429)
    log = srv.log_tail(400)
    assert "wrong token from 127.0.0.1" in log and "locked out" in log
    assert "the wall URL" in log and "the sign-in form" in log
    for guess in wrong:
        assert guess not in log
    assert TOKEN not in log and WALL_TOKEN not in log


# -- slow and half-open clients -------------------------------------------------------------------

HALF_OPEN = b"GET / HTTP/1.1\r\nHost: x\r\n"


def open_half(port: int, n: int, source: str = "127.0.0.1") -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind((source, 0))
        s.settimeout(30)
        s.connect(("127.0.0.1", port))
        s.sendall(HALF_OPEN)
        socks.append(s)
    return socks


def closed_by_server(s: socket.socket, within: float) -> bytes | None:
    """What the server sent before closing ``s`` within ``within`` s; None if still open."""
    s.settimeout(within)
    data = b""
    try:
        while True:
            chunk = s.recv(4096)
            if not chunk:
                return data
            data += chunk
    except ConnectionResetError:
        return data
    except socket.timeout:
        return None


def test_half_open_connections_are_closed_after_the_idle_timeout(make_server):
    srv = make_server({"CLUSTER_AUTOSTART": "0", "DEMO_DATASET": "0", "IDLE_TIMEOUT_S": "2"})
    socks = open_half(srv.port, 300)
    try:
        started = time.monotonic()
        r = srv.get("/api/processing/health", timeout=15)
        assert r.status_code == 200
        still_open = [s for s in socks if closed_by_server(s, max(0.1, started + 8 - time.monotonic())) is None]
        assert not still_open, f"{len(still_open)} of 300 half-open connections still open"
        assert srv.get("/api/processing/health", timeout=15).status_code == 200
        slow = socket.create_connection(("127.0.0.1", srv.port))  # one byte a second: the header timeout holds
        for byte in b"GET /api/processing/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 10:
            try:
                slow.sendall(bytes([byte]))
            except OSError:
                break
            time.sleep(0.5)
        assert closed_by_server(slow, 3) is not None
    finally:
        for s in socks:
            s.close()


def open_busy(port: int, n: int, source: str) -> list[socket.socket]:
    """``n`` connections whose request header is complete, their body still to come: never evicted."""
    busy = []
    for _ in range(n):
        s = socket.socket()
        s.bind((source, 0))
        s.connect(("127.0.0.1", port))
        s.sendall(b"POST /api/processing/jobs/submit HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        busy.append(s)
    time.sleep(1)
    return busy


def refused_with_503(port: int, source: str) -> bool:
    s = socket.socket()
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    answer = closed_by_server(s, 10)
    s.close()
    return answer is not None and answer.startswith(b"HTTP/1.1 503")


def test_connection_caps_answer_503_and_evict_half_open_ones(make_server):
    srv = make_server({"CLUSTER_AUTOSTART": "0", "DEMO_DATASET": "0", "MAX_CONNECTIONS_PER_CLIENT": "20",
                       "MAX_CONNECTIONS": "30", "BODY_TIMEOUT_S": "60"})
    busy = open_busy(srv.port, 20, "127.0.0.2")
    assert refused_with_503(srv.port, "127.0.0.2")
    assert srv.get("/api/processing/health").status_code == 200  # another address is not held back
    for s in busy:
        s.close()
    time.sleep(0.5)
    # 20 half-open ones: the next connection takes the place of the oldest, which is told 503
    half = open_half(srv.port, 20, source="127.0.0.2")
    time.sleep(1)
    probe = socket.socket()
    probe.bind(("127.0.0.2", 0))
    probe.connect(("127.0.0.1", srv.port))
    probe.sendall(b"GET /api/processing/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    assert (closed_by_server(probe, 10) or b"").startswith(b"HTTP/1.1 200")
    evicted = closed_by_server(half[0], 5)
    assert evicted is not None and evicted.startswith(b"HTTP/1.1 503"), evicted
    for s in half:
        s.close()
    time.sleep(1)  # the server sees them closed (else the next busy ones from .2 would be over its cap)
    # the total: 20 + 10 busy connections from two addresses fill MAX_CONNECTIONS=30
    busy = open_busy(srv.port, 20, "127.0.0.2") + open_busy(srv.port, 10, "127.0.0.3")
    assert refused_with_503(srv.port, "127.0.0.4")
    for s in busy:
        s.close()
    time.sleep(0.5)
    assert srv.get("/api/processing/health").status_code == 200
    assert "connection refused with 503" in srv.log_tail(100)


# -- the front door in-process: the limiter, and the Tornado and Bokeh hooks it rests on ---------

def _pair() -> tuple[Any, socket.socket]:
    """A real Tornado stream (server end) and its client socket."""
    from tornado.iostream import IOStream

    server_end, client = socket.socketpair()
    return IOStream(server_end), client


def test_limiter_evicts_the_longest_idle_then_the_longest_queued_and_never_a_busy_one():
    from app.connections import ConnectionLimiter

    async def main() -> None:
        now = [0.0]
        limiter = ConnectionLimiter(max_total=10, max_per_client=3, idle_timeout_s=5, clock=lambda: now[0])
        pairs = [_pair() for _ in range(6)]
        streams = [stream for stream, _ in pairs]
        for i in range(3):  # 0 read and busy, 1 read and idle (half-open), 2 queued unread
            assert limiter.admit(streams[i], ("10.0.0.1", 1000 + i))
            now[0] += 1
        limiter.waiting(streams[0])
        limiter.busy(streams[0])
        limiter.waiting(streams[1])
        assert limiter.admit(streams[3], ("10.0.0.1", 2000))  # over the cap: 1 (idle) goes first
        await asyncio.sleep(0.05)
        assert streams[1].closed() and not streams[2].closed()
        assert limiter.admit(streams[4], ("10.0.0.1", 2001))  # no idle one left: the longest queued (2) goes
        await asyncio.sleep(0.05)
        assert streams[2].closed() and not streams[0].closed()
        assert pairs[1][1].recv(100).startswith(b"HTTP/1.1 503")  # never served: told why
        # 0 busy, 3 and 4 queued; a connection from another address is admitted
        assert limiter.admit(streams[5], ("10.0.0.2", 1)) and limiter.open == 4
        now[0] += 5
        assert limiter.expired(10) == [streams[3], streams[4], streams[5]]  # waited 5 s; busy 0 never expires
        assert limiter.expired(2) == [streams[3], streams[4]]
        limiter.waiting(streams[0])  # answered, kept alive: the longest waiting of its client now
        limiter.ready(streams[3])  # its complete request is about to be read
        assert limiter.admit(pairs[1][0], ("10.0.0.1", 3000))  # 4 (queued) makes room, not 0 nor 3
        await asyncio.sleep(0.05)
        assert streams[4].closed() and not streams[0].closed() and not streams[3].closed()
        limiter.closed(streams[0])
        assert limiter.open == 3
        for stream, client in pairs:
            stream.close()
            client.close()

    asyncio.run(main())


def test_bokeh_builds_the_guarded_http_server_and_tornado_reports_what_the_limiter_needs():
    """Fails when upstream changes what the front door rests on: Bokeh building its server
    through tornado's ``HTTPServer`` (so ``HTTPServer.configure`` reaches it), BokehTornado's
    live ``websocket_origins`` set, the delegate calls (``start_request`` with a connection
    whose ``stream`` is the one ``handle_stream`` got, ``headers_received``, ``on_close``)."""
    from bokeh.server.server import Server
    from bokeh.server.tornado import BokehTornado

    from app.connections import ConnectionLimiter, guarded_http_server

    seen: dict[str, Any] = {}

    def wrap(app: Any) -> Any:
        seen["app"] = app
        return app

    def bound(app: Any, port: int) -> None:
        app.websocket_origins.update({f"127.0.0.1:{port}"})
        seen["port"] = port

    async def main() -> None:
        limiter = ConnectionLimiter(max_total=10, max_per_client=2, idle_timeout_s=0.5)
        with guarded_http_server(limiter=limiter, wrap_app=wrap, on_bound=bound):
            server = Server({"/": lambda doc: None}, port=0, address="127.0.0.1")
        try:
            server.start()
            assert isinstance(seen["app"], BokehTornado) and seen["port"] == server.port
            assert f"127.0.0.1:{server.port}" in seen["app"].websocket_origins
            loop = asyncio.get_running_loop()
            kept = socket.create_connection(("127.0.0.1", server.port))
            kept.setblocking(False)
            await loop.sock_sendall(kept, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert (await loop.sock_recv(kept, 100)).startswith(b"HTTP/1.1 200")
            await asyncio.sleep(0.1)
            assert limiter.open == 1 and limiter.evicted == 0
            half = socket.create_connection(("127.0.0.1", server.port))
            half.setblocking(False)
            await loop.sock_sendall(half, HALF_OPEN)
            await asyncio.sleep(0.1)
            assert limiter.open == 2
            third = socket.create_connection(("127.0.0.1", server.port))  # over the cap of 2
            # the half-open connection makes room (told 503), not the kept-alive one: it was
            # served (its header seen) and waits again since its answer (start_request)
            evicted = b""
            while chunk := await asyncio.wait_for(loop.sock_recv(half, 100), 5):
                evicted += chunk
            assert evicted.startswith(b"HTTP/1.1 503") and limiter.evicted == 1
            for _ in range(40):  # the sweep closes the other two once idle 0.5 s
                await asyncio.sleep(0.1)
                if limiter.open == 0:
                    break
            assert limiter.open == 0 and limiter.timed_out == 2
            rest = b""
            while chunk := await asyncio.wait_for(loop.sock_recv(kept, 65536), 5):
                rest += chunk
            assert b"HTTP/1.1 503" not in rest  # closed silently at the idle timeout
            for sock in (half, kept, third):
                sock.close()
        finally:
            server.stop()

    asyncio.run(main())


def test_repeated_log_lines_are_rate_limited():
    from app.server import RepeatFilter

    records: list[str] = []
    now = [1000.0]

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logger = logging.getLogger("tests.hardening.repeat")
    logger.propagate = False
    handler = Keep()
    handler.addFilter(RepeatFilter(burst=5, interval_s=10, clock=lambda: now[0]))  # a clock the test moves
    logger.addHandler(handler)
    try:
        for _ in range(10_000):
            logger.error("socket.accept() out of system resource: [Errno 24] Too many open files")
        logger.error("another line")
        assert len(records) == 6 and records[-1] == "another line", records
        now[0] += 9.9
        logger.error("socket.accept() out of system resource: [Errno 24] Too many open files")
        assert len(records) == 6
        now[0] += 0.2
        logger.error("socket.accept() out of system resource: [Errno 24] Too many open files")
        assert records[-1].endswith("[9996 identical lines suppressed before this one]"), records[-1]
    finally:
        logger.removeHandler(handler)


# -- the pages under the Content-Security-Policy ----------------------------------------------------

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
VIOLATIONS_JS = """() => {
  window.__violations = [];
  document.addEventListener('securitypolicyviolation',
    e => window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));
}"""


@pytest.fixture(scope="module")
def csp_browser() -> Iterator:
    """One Chromium for the module's page checks (each gets a fresh context of its own)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.mark.ui
@pytest.mark.parametrize("path", ["/", "/jobs", "/data", "/wall", "/docs"])
def test_pages_render_under_the_policy_with_no_violation(open_server, csp_browser, path):
    """Chromium loads the page with the headers on: it renders, and no CSP violation is reported."""
    csp = open_server.get(path).headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp
    messages: list[str] = []
    context = csp_browser.new_context()
    try:
        page = context.new_page()
        page.on("console", lambda m: messages.append(m.text))
        page.add_init_script(f"({VIOLATIONS_JS})()")
        page.goto(open_server.url + path)
        rendered = {"/": page.get_by_test_id("cluster-status"), "/wall": page.get_by_test_id("wall-status"),
                    "/docs": page.get_by_text("Distributed Processing Cluster API")}
        rendered.get(path, page.locator(".bk-Column, .bk-Row").first).wait_for(timeout=60_000)
        page.wait_for_timeout(1500)  # the websocket's updates render too (three pushes at the test servers' LIVE_INTERVAL)
        violations = page.evaluate("window.__violations")
    finally:
        context.close()
    reported = [m for m in messages if "Content Security Policy" in m or "Refused to" in m]
    assert not violations and not reported, (violations, reported)
