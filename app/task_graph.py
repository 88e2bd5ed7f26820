"""The task graph of a kernel plan: one task per fragment whose partials merge in a tree of
``SPLIT_EVERY`` (or in bucket tasks, :class:`app.kernels.Buckets`), or the whole plan as one
task for a small input. Merges carry the job's annotation plus ``/merge``; the tasks
themselves run :mod:`app.kernels`' functions on the workers."""
from __future__ import annotations

import contextlib
import functools
import operator
import os
from dataclasses import dataclass
from typing import Any

from .kernels import Fragment, KernelPlan, one_scan, run_fragment

SPLIT_EVERY = 8  # partials merged per combine task
MAX_BUCKETS = 32  # bucket tasks of a merge spread by hash (see Buckets; numbered as UTINYINT)
MAX_PIECES = 1024  # fragments x buckets: the small tasks that hand pieces to the buckets


def combine(partials: list[Any], plan: KernelPlan) -> Any:
    """A combine task of the tree."""
    return plan.combine(list(partials))


def finish(partial: Any, plan: KernelPlan) -> Any:
    """The last task: what ``Operation.finalize`` takes."""
    return plan.finish(partial)


def run_split(frag: Fragment, plan: KernelPlan, n: int) -> list[Any]:
    """A fragment's kernel, its partial cut in ``n`` pieces for the bucket tasks."""
    buckets = plan.buckets
    assert buckets is not None
    return run_fragment(frag, plan, lambda src, args: buckets.kernel(src, args, n))


def reduce_bucket(pieces: list[Any], plan: KernelPlan) -> Any:
    assert plan.buckets is not None
    return plan.buckets.reduce(list(pieces))


def gather_buckets(results: list[Any], plan: KernelPlan) -> Any:
    assert plan.buckets is not None
    return plan.buckets.gather(list(results))


def bucket_count(fragments: int, threads: int) -> int:
    """Bucket tasks for a merge: two per thread of the job, at most one per fragment and
    ``MAX_BUCKETS``, and fewer when ``fragments × buckets`` piece tasks would pass
    ``MAX_PIECES`` (0 or 1: merge in the tree instead)."""
    n = min(fragments, max(2, 2 * threads), MAX_BUCKETS)
    while n > 1 and fragments * n > MAX_PIECES:
        n -= 1
    return n


def combine_finish(partials: list[Any], plan: KernelPlan) -> Any:
    """The root of the tree: the last combine and the finish in one task."""
    return plan.finish(plan.combine(list(partials)))


def run_all(frags: list[Fragment], plan: KernelPlan, threads: int = 1) -> Any:
    """The whole plan in one task (a small input, or one file): kernels, combine, finish.

    The job reserved ``threads`` cores and this task is all of it, so DuckDB may use that
    many threads (at most this machine's cores) instead of one: a 241 MB JSON-lines file,
    one task, took 2.4x DuckDB's time on one thread.
    """
    threads = max(1, min(int(threads), os.cpu_count() or 1))
    return plan.finish(plan.combine([run_fragment(f, plan, threads=threads) for f in frags]))


@dataclass(frozen=True)
class OneTask:
    """The whole plan as one call on a worker: submitted as it is, with no graph to optimize."""

    frags: list[Fragment]
    plan: KernelPlan
    threads: int = 1  # the job's reserved cores, which this one task may use

    def __call__(self) -> Any:
        return run_all(self.frags, self.plan, self.threads)


def as_delayed(graph_or_task: Any) -> Any:
    """A Delayed for what :func:`graph` returned (to join a larger graph)."""
    import dask

    if isinstance(graph_or_task, OneTask):
        return dask.delayed(run_all, pure=False)(graph_or_task.frags, graph_or_task.plan, graph_or_task.threads)
    return graph_or_task


def graph(frags: list[Fragment], plan: KernelPlan, small: bool, threads: int = 1) -> Any:
    """What computes the plan's finished value: a :class:`OneTask` for a small input (or one
    fragment) that may use ``threads`` (the job's cores), else a Delayed of kernels combined
    in a tree, one thread each."""
    import dask

    if small or len(frags) == 1:
        return OneTask(one_scan(frags), plan, threads)
    # merges carry the job's annotation plus "/merge": a job's progress (and so its ETA)
    # counts the fragments read, not the few small merges after them, which would count
    # as much as a fragment each and push the estimate late
    job = dask.get_annotations().get("job")
    merging = (lambda: dask.annotate(job=f"{job}/merge")) if job else contextlib.nullcontext

    def call(fn: Any, *deps: Any, **fixed: Any) -> Any:
        # fragments and the plan are bound in a partial, out of Delayed's sight: it walks
        # every argument's fields looking for collections (2.5 ms of a 10M-row mean's graph)
        return dask.delayed(functools.partial(fn, **fixed), pure=False)(*deps)

    n = bucket_count(len(frags), threads) if plan.buckets is not None else 0
    if n > 1:  # the bucket tasks count like the fragments; picking pieces and gathering do not
        split = [call(run_split, frag=f, plan=plan, n=n) for f in frags]
        with merging():
            pieces = [[dask.delayed(operator.getitem, pure=False)(part, b) for part in split] for b in range(n)]
        reduced = [call(reduce_bucket, pieces[b], plan=plan) for b in range(n)]
        with merging():
            return call(gather_buckets, reduced, plan=plan)
    level = [call(run_fragment, frag=f, plan=plan) for f in frags]
    with merging():
        while len(level) > SPLIT_EVERY:
            level = [call(combine, level[i:i + SPLIT_EVERY], plan=plan) for i in range(0, len(level), SPLIT_EVERY)]
        return call(combine_finish, level, plan=plan)  # the last combine and finish: one task
