"""Half-open connections: thousands of clients that send ``GET / HTTP/1.1\\r\\nHost: x\\r\\n``
and never finish their request, while a monitor probes ``/api/processing/health``.

    .venv/bin/python bench/bench_halfopen.py [--n 5000] [--hold 20] [--env IDLE_TIMEOUT_S=10 ...]

Starts its own server (tests/server.py; the cluster starts as usual), probes health
from a child process (one kept-alive connection, and a fresh connection per probe)
before, during and after opening ``--n`` half-open connections, holds them for
``--hold`` seconds while counting how many the server closed (and how: a 503, or
silently at the header timeout), then reports health p50/p99/max, the server's
descriptors at their peak and the lines its log gained. Exits 1 when a target is
missed: health p99 of both probes <= ``--health-ms``, no failed probe, at most
``--log-lines`` new log lines.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import selectors
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ServerProcess, median, pct  # noqa: E402

HALF_OPEN = b"GET / HTTP/1.1\r\nHost: x\r\n"
PROBE_EVERY_S = 0.05


def raise_fd_limit() -> int:
    """The client holds a descriptor per connection: raise the soft limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _probe_loop(url: str, stop: Any, out: Any) -> None:
    """Kept-alive and fresh-connection probes, alternately, in a process of their own."""
    kept: list[tuple[float, float]] = []
    fresh: list[tuple[float, float]] = []
    failures: list[str] = []
    with requests.Session() as session:
        while not stop.is_set():
            for series, get in ((kept, session.get), (fresh, requests.get)):
                t0 = time.perf_counter()
                try:
                    status = get(url + "/api/processing/health", timeout=10).status_code
                    if status != 200:
                        failures.append(f"health {status} at {time.time():.1f}")
                except requests.RequestException as exc:
                    failures.append(f"health {type(exc).__name__} at {time.time():.1f}")
                series.append((time.time(), (time.perf_counter() - t0) * 1000))
            time.sleep(PROBE_EVERY_S)
    out.send((kept, fresh, failures))


def open_half(port: int, n: int) -> tuple[list[socket.socket], int, float]:
    """``n`` half-open connections; (sockets, connections that failed to open, seconds taken)."""
    socks, failed = [], 0
    started = time.perf_counter()
    for _ in range(n):
        s = socket.socket()
        s.settimeout(5)
        try:
            s.connect(("127.0.0.1", port))
            s.sendall(HALF_OPEN)
            s.setblocking(False)
            socks.append(s)
        except OSError:
            failed += 1
            s.close()
    return socks, failed, time.perf_counter() - started


def count_closed(socks: list[socket.socket], answers: dict[int, bytes], wait_s: float) -> None:
    """Read whatever is ready within ``wait_s``: a 503, or the end of a silently closed connection."""
    with selectors.DefaultSelector() as sel:
        for s in socks:
            if s.fileno() not in answers:
                sel.register(s, selectors.EVENT_READ)
        if not sel.get_map():
            time.sleep(wait_s)
            return
        for key, _ in sel.select(wait_s):
            s = key.fileobj
            try:
                data = s.recv(4096)  # type: ignore[union-attr]
            except (ConnectionResetError, BlockingIOError):
                data = b""
            answers[s.fileno()] = data[:12]  # type: ignore[union-attr]


def server_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def summarise(series: list[tuple[float, float]], start: float, end: float) -> dict[str, Any]:
    during = [ms for t, ms in series if start <= t <= end]
    slowest = sorted(((ms, t) for t, ms in series if start <= t <= end), reverse=True)[:3]
    return {"probes": len(during), "p50_ms": round(median(during), 1), "p99_ms": round(pct(during, 0.99), 1),
            "max_ms": round(max(during), 1) if during else float("nan"),
            "slowest": [f"{ms:.0f} ms at +{t - start:.1f} s" for ms, t in slowest]}


def by_logger(lines: list[str]) -> dict[str, int]:
    """New log lines counted by "LEVEL logger" (continuation lines, e.g. tracebacks, under "...")."""
    counts: dict[str, int] = {}
    for line in lines:
        parts = line.split(" ", 4)
        key = f"{parts[2]} {parts[3].rstrip(':')}" if len(parts) > 3 and line[:2].isdigit() else "..."
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=5000, help="half-open connections")
    parser.add_argument("--hold", type=float, default=20.0, help="seconds to hold them after opening")
    parser.add_argument("--health-ms", type=float, default=100.0, help="target for health p99")
    parser.add_argument("--log-lines", type=int, default=100, help="target for new log lines")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the server (repeatable)")
    args = parser.parse_args()
    limit = raise_fd_limit()
    if limit < args.n + 200:
        print(f"the descriptor limit ({limit}) is too low for {args.n} connections", file=sys.stderr)
        return 2
    env = dict(item.split("=", 1) for item in args.env)
    srv = ServerProcess(Path(tempfile.mkdtemp(prefix="bench-halfopen-")), env)
    stop = multiprocessing.Event()
    here, there = multiprocessing.Pipe()
    socks: list[socket.socket] = []
    try:
        srv.start()
        assert srv.proc is not None
        # every worker up first: their start-up lines are not the flood's
        srv.wait_workers(int(srv.env.get("DASK_N_WORKERS", "2")), timeout=120)
        time.sleep(2)
        log_before = len(srv.log_path.read_text(errors="replace").splitlines())
        prober = multiprocessing.Process(target=_probe_loop, args=(srv.url, stop, there), daemon=True)
        prober.start()
        time.sleep(2)  # a baseline
        attack_start = time.time()
        socks, failed, open_s = open_half(srv.port, args.n)
        opened = time.time()
        answers: dict[int, bytes] = {}
        peak_fds, all_closed_at = server_fds(srv.proc.pid), None
        deadline = time.perf_counter() + args.hold
        while time.perf_counter() < deadline:
            count_closed(socks, answers, 0.5)
            peak_fds = max(peak_fds, server_fds(srv.proc.pid))
            if all_closed_at is None and len(answers) == len(socks):
                all_closed_at = time.time() - attack_start
        attack_end = time.time()
        for s in socks:
            s.close()
        time.sleep(1)
        stop.set()
        kept, fresh, failures = here.recv()
        prober.join(10)
        alive = srv.proc.poll() is None
        new_lines = srv.log_path.read_text(errors="replace").splitlines()[log_before:]
    finally:
        for s in socks:
            s.close()
        srv.cleanup()
    busy = sum(1 for data in answers.values() if data.startswith(b"HTTP/1.1 503"))
    result = {
        "half_open": args.n, "attack_started_at": round(attack_start, 1), "failed_to_open": failed, "open_s": round(open_s, 2),
        "closed_by_server": len(answers), "closed_with_503": busy, "closed_silently": len(answers) - busy,
        "all_closed_after_s": round(all_closed_at, 1) if all_closed_at is not None else None,
        "server_fds_peak": peak_fds, "server_alive": alive,
        "health_kept_alive": summarise(kept, attack_start, attack_end),
        "health_new_connection": summarise(fresh, attack_start, attack_end),
        "health_while_opening": {"kept_alive": summarise(kept, attack_start, opened),
                                 "new_connection": summarise(fresh, attack_start, opened)},
        "health_while_held": {"kept_alive": summarise(kept, opened, attack_end),
                              "new_connection": summarise(fresh, opened, attack_end)},
        "health_before": {"kept_alive": summarise(kept, 0, attack_start),
                          "new_connection": summarise(fresh, 0, attack_start)},
        "health_failures": len(failures), "failure_samples": failures[:5],
        "new_log_lines": len(new_lines), "new_log_lines_by_logger": by_logger(new_lines),
    }
    ok = (alive and not failures and len(new_lines) <= args.log_lines
          and result["health_kept_alive"]["p99_ms"] <= args.health_ms
          and result["health_new_connection"]["p99_ms"] <= args.health_ms)
    print(json.dumps(result, indent=2))
    print("PASS" if ok else "FAIL", f"— {args.n} half-open connections: health p99 "
          f"{result['health_kept_alive']['p99_ms']} ms kept-alive / {result['health_new_connection']['p99_ms']} ms new, "
          f"{len(failures)} failed probes, {len(new_lines)} new log lines, "
          f"{len(answers)} closed by the server ({busy} with 503)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
