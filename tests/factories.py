"""CLUSTER_FACTORY functions for tests: ``CLUSTER_FACTORY=tests.factories:small_cluster``.

The server imports them from its working directory (the repository root), the way a
deployment points CLUSTER_FACTORY at its own module (see the README, "Beyond one machine").
"""
from __future__ import annotations

from distributed import LocalCluster

# Distinct from the test servers' DASK_MEMORY_LIMIT (1GB): a worker with this limit
# can only have been made by this factory's cluster object.
SMALL_WORKER_MEMORY = "600MB"


def small_cluster() -> LocalCluster:
    """One single-threaded worker process on loopback; scaling adds more of the same."""
    return LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=True,
        memory_limit=SMALL_WORKER_MEMORY,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
    )
