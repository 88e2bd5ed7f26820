"""Several hosts on one machine: a Dask scheduler and two workers, each in its own Linux
network namespace, joined by veth pairs to a bridge (in a namespace of its own, so the
machine's bridge firewall rules don't touch traffic between them), and the app in the root
namespace attached over that network. A job runs across them; one worker's namespace is torn down mid-job (its
link cut, its processes killed, the namespace deleted: a host that vanished) and the job
still completes with pandas' answer. What crossed the network is reported from Dask's
own counters.

Needs root and iproute2; skips with the reason where namespaces, bridges or veth pairs
cannot be created. Everything it creates has a random name and is removed afterwards;
it ends only processes it started.
"""
from __future__ import annotations

import ipaddress
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cloudpickle
import psutil
import pytest
from distributed import Client

from app.demo import generate_expression
from tests.helpers import register_generated, status, submit, wait_job, wait_running
from tests.server import ROOT, ServerProcess

pytestmark = pytest.mark.slow

ROWS, FILES = 1_200_000, 24
MEDIAN = {"column": "expression_level", "operation": "median", "group_by": "sample_id"}
SCHED_PORT, DASHBOARD_PORT = 8786, 8787  # free by construction: the scheduler's namespace is its own
# A vanished host sends nothing, not even a reset: the scheduler notices when heartbeats stop
# (worker-ttl, 5 minutes by default) and peers when connections time out (30 s by default).
DASK_ENV = {
    "DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL": "10s",
    "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "10s",
    "DASK_DISTRIBUTED__COMM__TIMEOUTS__TCP": "15s",  # at least 11 s (10 keepalive probes)
}


class NotPermitted(Exception):
    """A step of building the network was refused: the module skips."""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["ip", *args], check=False, capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, ["ip", *args], proc.stdout, proc.stderr)
    return proc


def _used_networks() -> list[ipaddress.IPv4Network]:
    nets = []
    for args in (("-j", "-4", "addr"), ("-j", "-4", "route")):
        try:
            entries = json.loads(ip(*args).stdout or "[]")
        except (subprocess.CalledProcessError, ValueError):
            raise NotPermitted("this `ip` has no JSON output (`ip -j`); a newer iproute2 is needed") from None
        for entry in entries:
            for a in entry.get("addr_info", []):
                nets.append(ipaddress.ip_network(f"{a['local']}/{a['prefixlen']}", strict=False))
            dst = entry.get("dst")
            if dst and dst != "default":
                nets.append(ipaddress.ip_network(dst if "/" in dst else f"{dst}/32", strict=False))
    return nets


def _free_subnet() -> ipaddress.IPv4Network:
    used = _used_networks()
    for x in random.sample(range(1, 255), 254):
        net = ipaddress.ip_network(f"10.213.{x}.0/24")
        if not any(net.overlaps(u) for u in used):
            return net
    raise NotPermitted("no free 10.213.X.0/24 subnet")


@dataclass
class Host:
    """One namespace on the bridge: its veth pair, its address and the processes in it."""

    role: str
    netns: str
    dev: str  # the veth end inside the namespace
    peer: str  # the end on the bridge
    address: str
    procs: list[subprocess.Popen] = field(default_factory=list)


class Network:
    """Namespaces, a bridge and veth pairs; remembers all it made so teardown removes them."""

    def __init__(self, base: Path):
        self.base = base
        tok = secrets.token_hex(3)
        self.prefix = f"dpc{tok}"  # every interface name starts with it (≤ 15 characters)
        self.bridge_ns = f"dpc-{tok}-br"
        self.subnet = _free_subnet()
        hosts = list(self.subnet.hosts())
        # the root namespace (the app and this test) is a host on the bridge too
        self.root = Host("root", "", f"{self.prefix}h0", f"{self.prefix}h1", str(hosts[0]))
        self.hosts = {role: Host(role, f"dpc-{tok}-{role}", f"{self.prefix}{c}0", f"{self.prefix}{c}1", str(hosts[i]))
                      for i, (role, c) in enumerate((("sched", "s"), ("w1", "a"), ("w2", "b")), start=1)}
        self.namespaces: list[str] = []
        self.root_links: list[str] = []
        self.gone: set[str] = set()

    # -- building ---------------------------------------------------------
    def _step(self, what: str, *args: str) -> None:
        try:
            ip(*args)
        except subprocess.CalledProcessError as exc:
            raise NotPermitted(f"{what} not permitted (`ip {' '.join(args)}`: {exc.stderr.strip()})") from None

    def _add_netns(self, name: str) -> None:
        self._step("`ip netns add`", "netns", "add", name)
        self.namespaces.append(name)
        self._step("`ip link set lo up` in a namespace", "-n", name, "link", "set", "lo", "up")

    def _wire(self, host: Host) -> None:
        """A veth pair: one end in the host's namespace (or the root's), the other on the bridge."""
        self._step("creating a veth pair", "link", "add", host.dev, "type", "veth", "peer", "name", host.peer)
        self.root_links.append(host.dev)
        self._step("moving a veth end into a namespace", "link", "set", host.peer, "netns", self.bridge_ns)
        self._step("attaching a veth to the bridge", "-n", self.bridge_ns, "link", "set", host.peer, "master", "br0")
        self._step("bringing a bridge port up", "-n", self.bridge_ns, "link", "set", host.peer, "up")
        inside = ("-n", host.netns) if host.netns else ()
        if host.netns:
            self._step("moving a veth end into a namespace", "link", "set", host.dev, "netns", host.netns)
            self.root_links.remove(host.dev)
        self._step("adding an address", *inside, "addr", "add", f"{host.address}/{self.subnet.prefixlen}", "dev", host.dev)
        self._step("bringing a veth up", *inside, "link", "set", host.dev, "up")

    def build(self) -> None:
        self._add_netns(self.bridge_ns)
        self._step("creating a bridge", "-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
        self._step("bringing the bridge up", "-n", self.bridge_ns, "link", "set", "br0", "up")
        for host in self.hosts.values():
            self._add_netns(host.netns)
        self._wire(self.root)
        for host in self.hosts.values():
            self._wire(host)
        probe = subprocess.run(["ip", "netns", "exec", self.hosts["sched"].netns, sys.executable, "-c", "pass"],
                               check=False, capture_output=True, text=True, timeout=60)
        if probe.returncode != 0:
            raise NotPermitted(f"`ip netns exec` not permitted: {probe.stderr.strip()}")

    # -- processes ----------------------------------------------------------
    def spawn(self, role: str, args: list[str], log_name: str) -> subprocess.Popen:
        """``python -m …`` inside the host's namespace, in a new session (its own process group)."""
        host = self.hosts[role]
        env = {**os.environ, **DASK_ENV, "PYTHONUNBUFFERED": "1"}
        with open(self.base / log_name, "ab") as log:
            proc = subprocess.Popen(["ip", "netns", "exec", host.netns, sys.executable, "-m", *args],
                                    cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        host.procs.append(proc)
        return proc

    @staticmethod
    def _mine(procs: list[subprocess.Popen]) -> set[int]:
        """PIDs of the processes we started and their descendants."""
        pids = set()
        for proc in procs:
            if proc.poll() is None:
                pids.add(proc.pid)
                try:
                    pids.update(c.pid for c in psutil.Process(proc.pid).children(recursive=True))
                except psutil.NoSuchProcess:
                    pass
        return pids

    def end_processes(self, host: Host, sig: int = signal.SIGTERM, grace: float = 10) -> None:
        """Signal the process groups we created for this host, then SIGKILL what is left."""
        mine = self._mine(host.procs)
        for proc in host.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    pass
        deadline = time.time() + grace
        for proc in host.procs:
            try:
                proc.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(10)
        # anything of ours still in the namespace (a child that left the group)
        if host.netns and host.netns not in self.gone:
            left = ip("netns", "pids", host.netns, check=False).stdout.split()
            for pid in {int(p) for p in left} & mine:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def veth_counters(self, host: Host) -> dict[str, int]:
        """The kernel's byte counters of the host's veth end (bytes on the wire)."""
        inside = ("-n", host.netns) if host.netns else ()
        stats = json.loads(ip(*inside, "-s", "-j", "link", "show", "dev", host.dev).stdout)[0]["stats64"]
        return {"rx_bytes": stats["rx"]["bytes"], "tx_bytes": stats["tx"]["bytes"]}

    def tear_down_host(self, role: str) -> None:
        """The host vanishes: link cut first (nothing more leaves it, not even a reset), then
        its processes killed, then its namespace deleted (which removes its veth pair)."""
        host = self.hosts[role]
        ip("-n", self.bridge_ns, "link", "set", host.peer, "down")
        ip("-n", host.netns, "link", "set", host.dev, "down")
        self.end_processes(host, signal.SIGKILL, grace=5)
        deadline = time.time() + 10  # the nanny's worker child may still be exiting
        while (left := ip("netns", "pids", host.netns, check=False).stdout.split()) and time.time() < deadline:
            time.sleep(0.1)
        assert not left, f"processes left in {host.netns}: {left}"
        ip("netns", "del", host.netns)
        self.namespaces.remove(host.netns)
        self.gone.add(host.netns)

    # -- teardown -------------------------------------------------------------
    def destroy(self) -> None:
        for host in reversed(self.hosts.values()):  # workers first, then the scheduler
            self.end_processes(host)
        for dev in self.root_links:  # deleting one end deletes its peer
            ip("link", "del", dev, check=False)
        for name in reversed(self.namespaces):
            ip("netns", "del", name, check=False)
        self.namespaces.clear()
        # a deleted namespace's interfaces go asynchronously; wait so the next run sees a clean host
        deadline = time.time() + 10
        while time.time() < deadline and self.prefix in ip("-br", "link", check=False).stdout:
            time.sleep(0.1)

    def leftovers(self) -> list[str]:
        listed = ip("netns", "list", check=False).stdout
        names = [n for n in [self.bridge_ns, *(h.netns for h in self.hosts.values())] if n in listed]
        links = [line.split()[0] for line in ip("-br", "link", check=False).stdout.splitlines() if self.prefix in line]
        return names + links


def _wait_port(address: str, port: int, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            with socket.create_connection((address, port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"{address}:{port} not reachable in {timeout} s:\n{log.read_text(errors='replace')[-3000:]}")


@dataclass
class Cluster:
    net: Network
    address: str
    client: Client
    workers: dict[str, str]  # role -> worker address

    @property
    def roles(self) -> dict[str, str]:
        return {a: r for r, a in self.workers.items()}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if not sys.platform.startswith("linux"):
        pytest.skip("network namespaces are Linux-only")
    if os.geteuid() != 0:
        pytest.skip("creating network namespaces needs root (run as root to include this test)")
    if shutil.which("ip") is None:
        pytest.skip("iproute2's `ip` command is not installed")
    base = tmp_path_factory.mktemp("multihost")
    net: Network | None = None
    client = None
    try:
        try:
            net = Network(base)
            net.build()
        except NotPermitted as exc:
            pytest.skip(str(exc))  # after what was made is removed, below
        sched = net.hosts["sched"]
        address = f"tcp://{sched.address}:{SCHED_PORT}"
        proc = net.spawn("sched", ["distributed.cli.dask_scheduler", "--host", sched.address, "--port", str(SCHED_PORT),
                                   "--dashboard-address", f"{sched.address}:{DASHBOARD_PORT}", "--no-show"],
                         "scheduler.log")
        _wait_port(sched.address, SCHED_PORT, proc, base / "scheduler.log")  # from the root namespace
        for role in ("w1", "w2"):
            w = net.hosts[role]
            net.spawn(role, ["distributed.cli.dask_worker", address, "--name", role, "--nthreads", "1",
                             "--memory-limit", "1GB", "--host", w.address, "--dashboard-address", f"{w.address}:0",
                             "--local-directory", str(base / role)], f"{role}.log")
        client = Client(address, timeout="30s")
        client.wait_for_workers(2, timeout=90)
        # the probes below run in the workers and the scheduler: ship them by value
        cloudpickle.register_pickle_by_value(sys.modules[__name__])
        workers = {w["name"]: addr for addr, w in client.scheduler_info(n_workers=-1)["workers"].items()}
        assert {a.split("//")[1].rsplit(":", 1)[0] for a in workers.values()} == \
            {net.hosts["w1"].address, net.hosts["w2"].address}, workers
        yield Cluster(net, address, client, workers)
    finally:
        try:
            cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
        except ValueError:
            pass
        if client is not None:
            client.close(timeout=10)
        if net is not None:
            net.destroy()
            left = net.leftovers()
            assert not left, f"not cleaned up: {left}"


@pytest.fixture
def app(cluster: Cluster, tmp_path: Path) -> Iterator[ServerProcess]:
    # KERNELS=0: this test follows a shuffle's shards across the bridge; kernels shuffle nothing
    srv = ServerProcess(tmp_path / "data", {"DASK_SCHEDULER_ADDRESS": cluster.address, "DEMO_DATASET": "0",
                                            "KERNELS": "0"})
    try:
        srv.start()
        yield srv
    finally:
        srv.cleanup()


# -- Dask's counters, read where they live ---------------------------------------

def _worker_counters(dask_worker: Any) -> dict[str, Any]:
    """What this worker's Dask counters say it moved, read in the worker."""
    dask_worker.monitor.update()
    net = dask_worker.monitor._last_net_io_counters  # the snapshot its host_net_io rates come from
    p2p = [(k, v) for k, v in dask_worker.digests_total.items() if isinstance(k, tuple) and k[0] == "p2p"]
    return {
        # shuffle shards sent by the P2P extension (to every worker, itself included)
        "p2p_sent_bytes": sum(v for k, v in p2p if k[2:] == ("background-comms", "process", "bytes")),
        # task results served to peers, the scheduler or clients, and fetched from peers
        "transfer_out_bytes": dask_worker.transfer_outgoing_bytes_total,
        "transfer_in_bytes": sum(e["total"] for e in dask_worker.transfer_incoming_log),
        # the host's interfaces, as the system monitor reads them (this namespace: veth and lo)
        "host_net_recv_bytes": net.bytes_recv,
        "host_net_sent_bytes": net.bytes_sent,
    }


def _scheduler_counters(dask_scheduler: Any) -> dict[str, Any]:
    dask_scheduler.monitor.update()
    net = dask_scheduler.monitor._last_net_io_counters
    return {"host_net_recv_bytes": net.bytes_recv, "host_net_sent_bytes": net.bytes_sent}


def _sample(c: Cluster, roles: list[str]) -> dict[str, dict[str, int]]:
    """Dask's counters of the given workers and the scheduler, and the kernel's counters of
    their veth ends (the bytes that really crossed the bridge)."""
    def wire(role: str) -> dict[str, int]:
        host = c.net.root if role == "root" else c.net.hosts[role]
        return {f"veth_{k}": v for k, v in c.net.veth_counters(host).items()}

    by_addr = c.client.run(_worker_counters, workers=[c.workers[r] for r in roles])
    out = {r: {**by_addr[c.workers[r]], **wire(r)} for r in roles}
    out["sched"] = {**c.client.run_on_scheduler(_scheduler_counters), **wire("sched")}
    out["app"] = wire("root")
    return out


def _delta(after: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    return {k: v - before.get(k, 0) if isinstance(v, int) else v for k, v in after.items()}


def test_job_across_namespaces_survives_a_vanished_worker_host(cluster: Cluster, app: ServerProcess, tmp_path: Path):
    c, srv = cluster, app
    cluster_status = srv.wait_workers(2)
    assert cluster_status["mode"] == "external" and cluster_status["scheduler_address"] == c.address
    ds = register_generated(srv, ROWS, FILES, "csv")  # the data dir is shared: every host reads the same path
    before = _sample(c, ["w1", "w2"])
    job = submit(srv, "aggregate", ds["dataset_id"], MEDIAN, max_cores=1, max_memory_gb=0.5)
    wait_running(srv, job, 5)
    # mid-shuffle: both workers have sent shuffle shards (the first ones cross the bridge)
    shipped = {r: before[r]["p2p_sent_bytes"] for r in ("w1", "w2")}
    srv.wait_for(lambda: all(v["p2p_sent_bytes"] > shipped[c.roles[a]]
                             for a, v in c.client.run(_worker_counters).items()), timeout=60, interval=0.2)
    at_teardown = status(srv, job)
    assert at_teardown["status"] == "running", at_teardown

    # the victim: the worker holding or running the most of the job's work right now
    processing, has_what = c.client.processing(), c.client.has_what()
    load = {r: len(processing.get(a, ())) + len(has_what.get(a, ())) for r, a in c.workers.items()}
    victim = max(sorted(load), key=load.get)
    survivor = "w2" if victim == "w1" else "w1"
    last_seen = _sample(c, ["w1", "w2"])  # a vanished host's counters are gone with it
    torn_down_at = time.time()
    c.net.tear_down_host(victim)

    final = wait_job(srv, job, 180)
    assert final["status"] == "completed", final
    rows = srv.get(f"/api/processing/jobs/{job}/result?limit=10000").json()["rows"]
    got = {r["sample_id"]: r["median"] for r in rows}
    want = generate_expression(ROWS).groupby("sample_id").expression_level.median().to_dict()
    assert got.keys() == want.keys() and got == pytest.approx(want, rel=1e-12)

    # the scheduler lost the host unexpectedly, with part of this job on it
    removed = [(t, m) for t, m in c.client.get_events(c.workers[victim]) if m.get("action") == "remove-worker"]
    assert len(removed) == 1 and removed[0][1]["expected"] is False, removed
    removed_at, removal = removed[0]
    lost = len(removal["processing-tasks"]) + len(removal["lost-computed-tasks"])
    assert lost > 0, removal

    # the app sees what is left: one worker, the survivor, across the bridge
    cluster_status = srv.wait_workers(1, timeout=60)
    assert cluster_status["status"] == "running" and cluster_status["total_cores"] == 1
    listed = srv.get("/api/processing/metrics/workers").json()["workers"]
    assert [w["address"] for w in listed] == [c.workers[survivor]], listed

    after = _sample(c, [survivor])
    moved = {survivor: _delta(after[survivor], before[survivor]),
             victim: _delta(last_seen[victim], before[victim]),
             "sched": _delta(after["sched"], before["sched"]),
             "app": _delta(after["app"], before["app"])}
    summary = {
        "job_id": job, "attempts": [a["outcome"] for a in final["attempts"]],
        "victim": victim, "survivor": survivor, "subnet": str(c.net.subnet),
        "progress_at_teardown": at_teardown["progress"], "tasks_lost_with_host": lost,
        "host_loss_noticed_by": removal["stimulus_id"].rsplit("-", 1)[0],
        "host_loss_noticed_after_s": round(removed_at - torn_down_at, 1),
        # what crossed the bridge (every frame is sent by one host and received by another)
        "bridge_bytes": sum(m["veth_tx_bytes"] for m in moved.values()),
        "p2p_shuffle_sent_bytes": sum(moved[r]["p2p_sent_bytes"] for r in ("w1", "w2")),
        "bytes_during_job": moved,
    }
    print("MULTIHOST", json.dumps(summary, sort_keys=True))
    (tmp_path / "multihost-network.json").write_text(json.dumps(summary, indent=2, sort_keys=True))

    # the job really crossed the network: every host sent and received over its veth, Dask
    # counted it, and both workers shipped shuffle data before one of them vanished
    for role in (survivor, victim, "sched"):
        m = moved[role]
        assert min(m["veth_rx_bytes"], m["veth_tx_bytes"], m["host_net_recv_bytes"], m["host_net_sent_bytes"]) > 0, (role, m)
    assert moved[survivor]["p2p_sent_bytes"] > 0 and moved[victim]["p2p_sent_bytes"] > 0, moved
    assert moved[survivor]["transfer_out_bytes"] > 0, moved  # at least the result, gathered from it
