"""Start the one process: Panel pages and the JSON API on one port, one service."""
from __future__ import annotations

import argparse
import asyncio
import gc
import ipaddress
import logging
import signal
import sys
import time
from pathlib import Path

from .batching import ConnectionPacer, FairSelector
from .settings import Settings

log = logging.getLogger("app.server")
STATIC_DIR = Path(__file__).resolve().parent.parent / "static"


def is_loopback(host: str) -> bool:
    if host in {"localhost", ""}:
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
    return lines


def websocket_origins(settings: Settings) -> list[str]:
    port = settings.port
    hosts = {"localhost", "127.0.0.1", settings.host}
    return [f"{h}:{port}" for h in hosts] + (["*"] if not is_loopback(settings.host) else [])


def serve(argv: list[str]) -> int:
    args = parse_args(argv)
    settings = Settings.from_env(host=args.host, port=args.port)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("distributed").setLevel(max(logging.WARNING, logging.getLogger().level))
    check_binding(settings)
    for line in describe_access(settings):
        log.info("access: %s", line)

    import panel as pn
    from tornado.ioloop import IOLoop

    # before anything asks for the current loop: Tornado, Panel and the service share this one
    selector = FairSelector()
    asyncio.set_event_loop(asyncio.SelectorEventLoop(selector))
    from components.pages import PAGES

    from . import runtime
    from .api.routes import api_routes
    from .auth import dashboard_auth
    from .service import ProcessingService

    service = ProcessingService(settings)
    runtime.set_service(service)
    server = pn.serve(
        PAGES, port=settings.port, address=settings.host, websocket_origin=websocket_origins(settings),
        show=False, start=False, title="Processing Cluster", extra_patterns=api_routes(service),
        static_dirs={"assets": str(STATIC_DIR)}, verbose=False, **dashboard_auth(settings),
    )
    loop = IOLoop.current()
    stopping = {"flag": False}

    async def shutdown(signame: str) -> None:
        if stopping["flag"]:
            return
        stopping["flag"] = True
        started = time.perf_counter()
        log.info("%s received: stopping the service", signame)
        try:
            await asyncio.wait_for(service.stop(), 10)
        except Exception:
            log.exception("service stop did not finish cleanly")
        server.stop()
        loop.stop()
        log.info("stopped in %.2f s", time.perf_counter() - started)

    def install_signals() -> None:
        aio = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            aio.add_signal_handler(sig, lambda s=sig: aio.create_task(shutdown(s.name)))

    async def boot() -> None:
        install_signals()
        await service.start()
        # What start-up made (modules, pages, the cluster) lives as long as the process:
        # frozen, the collector's full passes skip it. Without this a full pass took
        # 100-350 ms on the loop under a burst of requests; see bench/bench_burst.py.
        gc.freeze()
        log.info("serving on http://%s:%s/ (API under /api/processing/, docs at /docs)", settings.host, settings.port)

    http = getattr(server, "_http", None)  # bokeh keeps its Tornado HTTPServer here
    if http is not None:
        ConnectionPacer.install(http, selector)
    else:  # pragma: no cover - a bokeh without it serves unpaced
        log.warning("new connections are not paced: the HTTP server was not found")
    server.start()
    loop.add_callback(boot)
    loop.start()
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return serve(argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
