"""Start the one process: Panel pages and the JSON API on one port, one service."""
from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import resource
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from .aio import within
from .batching import FairSelector
from .connections import ConnectionLimiter, guarded_http_server
from .guard import is_loopback, served_hosts, websocket_origins
from .settings import Settings

log = logging.getLogger("app.server")
STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
TITLE = "Processing Cluster"  # the pages' HTML title


FD_RESERVE = 256  # descriptors kept for the database, Dask and the log beyond MAX_CONNECTIONS


class RepeatFilter(logging.Filter):
    """Lets ``burst`` identical lines (same logger, level and message) through per
    ``interval_s``; the next one let through says how many were suppressed.

    A flood of one error (a descriptor shortage once wrote 134,656 lines in 20 s)
    then costs a few lines, not the disk.
    """

    def __init__(self, burst: int = 5, interval_s: float = 10.0, max_keys: int = 1000,
                 clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.clock = clock
        self.burst = burst
        self.interval_s = interval_s
        self.max_keys = max_keys
        self._seen: dict[tuple[str, int, str], list[float | int]] = {}  # key -> [window start, passed, suppressed]

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg)[:200])
        now = self.clock()
        entry = self._seen.get(key)
        if entry is None or now - entry[0] >= self.interval_s:
            suppressed = int(entry[2]) if entry else 0
            if len(self._seen) >= self.max_keys:
                self._seen.clear()
            self._seen[key] = [now, 1, 0]
            if suppressed:
                record.msg = f"{record.msg} [{suppressed} identical lines suppressed before this one]"
            return True
        if entry[1] < self.burst:
            entry[1] += 1
            return True
        entry[2] += 1
        return False


def install_log_filter(filter_: logging.Filter | None = None) -> logging.Filter:
    """Put the repeat filter on every handler of the root logger (records from any logger pass there)."""
    filter_ = filter_ or RepeatFilter()
    for handler in logging.getLogger().handlers:
        handler.addFilter(filter_)
    return filter_


def raise_fd_limit() -> int:
    """Raise this process's descriptor limit to its hard limit; the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if wanted > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            pass
    return soft


def connection_caps(settings: Settings, fd_limit: int) -> tuple[int, int]:
    """(total, per client) caps, the total kept under the descriptor limit."""
    total = min(settings.max_connections, max(64, fd_limit - FD_RESERVE))
    if total < settings.max_connections:
        log.warning("MAX_CONNECTIONS=%d lowered to %d: the descriptor limit is %d",
                    settings.max_connections, total, fd_limit)
    return total, min(settings.max_connections_per_client, total)


def http_server_options(settings: Settings) -> dict[str, Any]:
    """Tornado HTTPServer options.

    The connection limiter's sweep closes connections idle (waiting for a request
    header) for IDLE_TIMEOUT_S, a slice per loop pass. Tornado's own header timeout,
    one timer per connection whose expiries all land in one pass when a flood of
    connections times out together, is left as a backstop behind it.
    """
    return {"idle_connection_timeout": 2 * settings.idle_timeout_s + 5, "body_timeout": settings.body_timeout_s}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m app serve", description="Serve the dashboard and API.")
    parser.add_argument("--host", help="bind address (default PROCESSING_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default PROCESSING_PORT or 8001)")
    return parser.parse_args(argv)


def check_binding(settings: Settings) -> None:
    """Refuse a non-loopback bind without a token unless explicitly allowed."""
    if is_loopback(settings.host) or settings.api_token:
        return
    if not settings.allow_insecure:
        raise SystemExit(
            f"refusing to bind {settings.host} without PROCESSING_API_TOKEN; "
            "set a token, or PROCESSING_ALLOW_INSECURE=1 to accept an open service"
        )
    log.warning("serving on %s WITHOUT a token (PROCESSING_ALLOW_INSECURE=1)", settings.host)


def describe_access(settings: Settings) -> list[str]:
    """One start-up line per access rule in force, so the log says how open the service is."""
    if not settings.api_token:
        lines = [f"no PROCESSING_API_TOKEN: the API and the pages are open to anyone who can reach {settings.host}"]
        lines += [f"{name} has no effect without PROCESSING_API_TOKEN"
                  for name, value in (("PROCESSING_READ_TOKEN", settings.read_token), ("WALL_TOKEN", settings.wall_token))
                  if value]
    else:
        lines = ["API: bearer token required (except /api/processing/health and the API description); "
                 "pages: sign-in required"]
        if settings.read_token:
            lines.append("PROCESSING_READ_TOKEN accepted for GET requests")
        if settings.wall_token:
            lines.append("/wall opens with ?token=<WALL_TOKEN>")
    origins = ", ".join(settings.cors_origins) or "none"
    lines.append(f"CORS origins allowed: {origins}")
    lines.append(f"host names served (others get 421): {', '.join(sorted(served_hosts(settings)))}")
    return lines


def session_expiry(settings: Settings) -> dict[str, int]:
    """Bokeh's sweep of sessions whose tab closed: dropped ``SESSION_EXPIRY_S`` after their last
    websocket went, looked for every ``min(17 s, SESSION_EXPIRY_S / 2)`` (Bokeh's defaults: 15 s, 17 s)."""
    lifetime_ms = int(settings.session_expiry_s * 1000)
    return {"unused_session_lifetime_milliseconds": lifetime_ms,
            "check_unused_sessions_milliseconds": max(500, min(17_000, lifetime_ms // 2))}


def serve(argv: list[str]) -> int:
    args = parse_args(argv)
    settings = Settings.from_env(host=args.host, port=args.port)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_log_filter()
    logging.getLogger("distributed").setLevel(max(logging.WARNING, logging.getLogger().level))
    check_binding(settings)
    for line in describe_access(settings):
        log.info("access: %s", line)

    import panel as pn
    from tornado.ioloop import IOLoop

    # before anything asks for the current loop: Tornado, Panel and the service share this one
    selector = FairSelector()
    asyncio.set_event_loop(asyncio.SelectorEventLoop(selector))
    from components.pages import applications

    from . import runtime
    from .api.routes import api_routes
    from .auth import dashboard_auth
    from .guard import GuardRouter
    from .service import ProcessingService

    service = ProcessingService(settings)
    runtime.set_service(service)
    total, per_client = connection_caps(settings, raise_fd_limit())
    limiter = ConnectionLimiter(total, per_client, settings.idle_timeout_s)

    def allow_bound_port(app: Any, port: int) -> None:
        if settings.port == 0:  # PROCESSING_PORT=0: the OS chose the port; page websockets come from it
            # BokehTornado.websocket_origins is public and is the set its websocket handler
            # checks; Bokeh adds the port to the names it is given only once it knows it
            app.websocket_origins.update(websocket_origins(replace(settings, port=port)))

    guarded: list[GuardRouter] = []

    def guard_app(app: Any) -> GuardRouter:
        guarded.append(GuardRouter(app, service))
        return guarded[-1]

    with guarded_http_server(limiter=limiter, selector=selector, on_bound=allow_bound_port, wrap_app=guard_app):
        server = pn.serve(
            applications(TITLE), port=settings.port, address=settings.host, websocket_origin=websocket_origins(settings),
            show=False, start=False, title=TITLE, extra_patterns=api_routes(service),
            static_dirs={"assets": str(STATIC_DIR)}, verbose=False, http_server_kwargs=http_server_options(settings),
            **session_expiry(settings),
            **dashboard_auth(settings),
        )
    if not guarded:  # pragma: no cover - the guard and the caps are not optional
        raise SystemExit("the HTTP server was not built through tornado's HTTPServer: cannot install the request guard")
    # the bound port, as soon as it is bound: what tests (and scripts) starting on port 0 read;
    # printed, not logged, so a LOG_LEVEL of WARNING still says it
    print(f"listening on http://{settings.host}:{server.port}/", flush=True)
    loop = IOLoop.current()
    stopping = {"flag": False, "clean": True}

    async def shutdown(signame: str) -> None:
        if stopping["flag"]:
            return
        stopping["flag"] = True
        started = time.perf_counter()
        log.info("%s received: stopping the service", signame)
        try:
            stopped, _ = await within(service.stop(), 10, "stopping the service")
        except Exception:
            stopped = False
            log.exception("service stop did not finish cleanly")
        stopping["clean"] = stopped and not service.cluster.left_open
        server.stop()
        loop.stop()
        log.info("stopped in %.2f s", time.perf_counter() - started)

    def install_signals() -> None:
        aio = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            aio.add_signal_handler(sig, lambda s=sig: aio.create_task(shutdown(s.name)))
        aio.set_exception_handler(_client_gone_quietly)

    async def boot() -> None:
        install_signals()
        await service.start()
        # What start-up made (modules, pages, the cluster) lives as long as the process:
        # frozen, the collector's full passes skip it. Without this a full pass took
        # 100-350 ms on the loop under a burst of requests; see bench/bench_burst.py.
        gc.freeze()
        log.info("serving on http://%s:%s/ (API under /api/processing/, docs at /docs)", settings.host, settings.port)

    log.info("connections: at most %d open, %d per client address; idle/header timeout %g s, body timeout %g s",
             total, per_client, settings.idle_timeout_s, settings.body_timeout_s)
    server.start()
    loop.add_callback(boot)
    loop.start()
    if not stopping["clean"]:
        # What did not close (a cluster whose scheduler was signalled with us, say) would hold the
        # exit: the interpreter joins executor threads still closing it, and distributed's exit
        # hook closes every cluster again for up to 10 s. The store is closed, logs are flushed,
        # and the children end themselves once this process is gone (app.child_watch).
        log.warning("exiting without waiting for what did not close")
        logging.shutdown()
        sys.stdout.flush()
        os._exit(0)
    return 0


def _client_gone_quietly(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """A write to a browser tab that has just closed fails in a task nobody awaits (Tornado's
    ``write_message`` returns one, and the page's pushes do not await it): that is a client
    going away, logged at debug, not an error with a traceback. Everything else as asyncio does."""
    from tornado.iostream import StreamClosedError
    from tornado.websocket import WebSocketClosedError

    if isinstance(context.get("exception"), (WebSocketClosedError, StreamClosedError)):
        log.debug("a client went away during a write: %s", context.get("message"))
        return
    loop.default_exception_handler(context)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return serve(argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
