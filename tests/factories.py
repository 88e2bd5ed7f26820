"""CLUSTER_FACTORY functions for tests: ``CLUSTER_FACTORY=tests.factories:small_cluster``.

The server imports them from its working directory (the repository root), the way a
deployment points CLUSTER_FACTORY at its own module (see the README, "Beyond one machine").
"""
from __future__ import annotations

import asyncio
import logging

from distributed import LocalCluster
from distributed.deploy.adaptive import Adaptive

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


RETIRE_DELAY_S = 3.0


class SlowRetire(Adaptive):
    """Dask's adaptive scaling whose retiring step takes ``RETIRE_DELAY_S`` longer, the way a
    retire that first moves a worker's data does: a window in which a step is under way."""

    async def scale_down(self, workers):  # type: ignore[no-untyped-def]
        if workers:
            logging.getLogger(__name__).warning("slow retire of %s begins", list(workers))
            await asyncio.sleep(RETIRE_DELAY_S)
        await super().scale_down(workers)


class SlowRetireCluster(LocalCluster):
    """A LocalCluster whose ``adapt`` steps every 200 ms and retires slowly."""

    def adapt(self, **kwargs):  # type: ignore[no-untyped-def, override]
        return super().adapt(Adaptive=SlowRetire, interval="200ms", wait_count=1, **kwargs)


def slow_retiring_cluster() -> LocalCluster:
    """Two single-threaded workers; adaptive scaling retires slowly (``SlowRetire``)."""
    return SlowRetireCluster(n_workers=2, threads_per_worker=1, processes=True, memory_limit=SMALL_WORKER_MEMORY,
                             host="127.0.0.1", dashboard_address="127.0.0.1:0")
