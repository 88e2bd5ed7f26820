"""One lock for building and optimizing Dask DataFrame expressions in a process.

dask-expr is not safe to build or optimize from several threads of one process at
once, and the job engine runs each attempt in its own thread:

- on Python < 3.12, ``functools.cached_property`` holds one lock per *property*
  shared by every instance (cpython gh-87634, removed in 3.12). dask-expr's
  ``_meta`` and ``columns`` are cached properties that compute each other, so two
  threads optimizing two expressions take those locks in opposite orders and wait
  for each other forever. This is what left jobs "running" at 0 % with nothing on
  the scheduler: both job threads sat in ``cached_property.__get__`` inside
  ``Client.compute`` before a single task was sent;
- ``Expr.__new__`` looks expressions up in a shared ``WeakValueDictionary``; under
  concurrency that raises ``KeyError`` for an entry collected between the check and
  the read.

Every place that builds, optimizes or lowers an expression (the job threads in the
server, and tasks that compute a slice of a collection on a worker with several
threads) holds this lock while it does. Computing the optimized graph happens
outside it.
"""
from __future__ import annotations

import threading

GRAPH_LOCK = threading.RLock()
