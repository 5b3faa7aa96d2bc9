"""Where chunk tasks run: in this process, on a Dask LocalCluster, or on a running scheduler.

Prediction and publishing share it. A run opens one executor and maps task functions
over lists of items with it; each task's result comes back to ``on_done`` in the
calling process as soon as the task finishes (the caller records progress and
reduces partial results). A task that raises stops the map: the other tasks are
cancelled and the exception is raised again here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

IN_FLIGHT_PER_WORKER = 4
"""Tasks submitted ahead per worker (enough to keep every worker busy)."""
C = TypeVar("C")
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class ExecutorOptions:
    workers: int = 2
    """LocalCluster worker processes; 0 runs every task in this process."""
    threads_per_worker: int = 1
    scheduler: str | None = None
    """Address of a running Dask scheduler (``tcp://host:8786``); overrides ``workers``."""

    @property
    def label(self) -> str:
        return self.scheduler or ("in-process" if self.workers == 0 else "local")


class Executor:
    """Maps ``fn(context, item)`` over items; ``client`` is None for in-process runs."""

    def __init__(self, client: Any | None) -> None:
        self.client = client

    def map(
        self,
        fn: Callable[[C, T], R],
        context: C,
        items: Sequence[T],
        on_done: Callable[[R], None],
    ) -> None:
        self.map_all([(fn, context, items)], on_done)

    def map_all(
        self,
        groups: Sequence[tuple[Callable[[Any, Any], R], Any, Sequence[Any]]],
        on_done: Callable[[R], None],
    ) -> None:
        """Several maps at once (``(fn, context, items)`` each): tasks of independent
        maps run side by side instead of one map waiting for the other's last task."""
        if not any(items for _, _, items in groups):
            return
        if self.client is None:
            for fn, context, items in groups:
                for item in items:
                    on_done(fn(context, item))
            return
        from distributed import as_completed

        pending: list[tuple[Callable[[Any, Any], R], Any, Any]] = []
        for fn, context, items in groups:
            if not items:
                continue
            # hash=False: a unique key per map; two maps over equal contexts would
            # otherwise share one key, and the first map's release would drop the data
            shared = self.client.scatter(context, broadcast=True, hash=False)
            pending += [(fn, shared, item) for item in items]
        pending.reverse()  # popped from the end: submitted in order
        # A bounded window of tasks in flight, refilled as they finish: the scheduler and
        # the workers hold a few tasks' state and results, not the whole run's (memory
        # that would otherwise grow with the extent).
        n_workers = max(1, len(self.client.scheduler_info().get("workers", {})))
        window = max(8, IN_FLIGHT_PER_WORKER * n_workers)
        running = as_completed()
        futures: list[Any] = []
        try:
            while pending and len(futures) < window:
                fn, shared, item = pending.pop()
                fut = self.client.submit(fn, shared, item, pure=False)
                futures.append(fut)
                running.add(fut)
            for fut in running:
                result = fut.result()  # re-raises a task's own exception
                fut.release()
                if pending:
                    fn, shared, item = pending.pop()
                    nxt = self.client.submit(fn, shared, item, pure=False)
                    futures.append(nxt)
                    running.add(nxt)
                on_done(result)
        except BaseException:
            self.client.cancel([f for f in futures if not f.done()])
            raise


@contextmanager
def open_executor(options: ExecutorOptions) -> Iterator[Executor]:
    """An executor for the length of a run (a LocalCluster is started and stopped here)."""
    if options.scheduler is None and options.workers == 0:
        yield Executor(None)
        return
    from distributed import Client

    if options.scheduler:
        with Client(options.scheduler) as client:
            yield Executor(client)
        return
    with local_cluster(options.workers) as cluster, Client(cluster) as client:
        yield Executor(client)


@contextmanager
def local_cluster(workers: int) -> Iterator[Any]:
    """A LocalCluster of ``workers`` single-threaded worker processes, set up for chunk
    tasks (see the two environment settings below)."""
    import dask
    from distributed import LocalCluster

    # Dask starts workers with MALLOC_TRIM_THRESHOLD_=65536, which also turns off glibc's
    # adaptive mmap threshold: every array of more than 128 kB is then mmap'ed, faulted in
    # and unmapped again. Our tasks allocate such arrays all the time; measured on a
    # publish of 2048^2 x 16 species, the 64 level-0 tasks took 5.7 s with it, 3.5 s
    # without (bench/scale.py, docs/publish.md). Memory stays bounded by the tasks' own
    # working sets (bench/scale.py measures the workers' peak RSS).
    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ"))
    environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    # GDAL's block cache defaults to 5 % of the machine's memory and keeps every block a
    # task has read until it is full: prediction workers grew from 205 to 832 MB between a
    # 1024^2 and an 8192^2 territory (bench/scale.py). A task reads its window and halo
    # once (4 covariates x a few 256 x 256 blocks: about 4 MB); 16 MB holds that.
    if "GDAL_CACHEMAX" not in os.environ:
        environ["GDAL_CACHEMAX"] = "16"
    with (
        dask.config.set({"distributed.nanny.pre-spawn-environ": environ}),
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        ) as cluster,
    ):
        yield cluster
