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
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from sdmatlas.cluster import ClusterProfile, slurm_cluster
from sdmatlas.errors import PredictionFailedError

IN_FLIGHT_PER_WORKER = 4
"""Tasks submitted ahead per worker (enough to keep every worker busy)."""
WATCH_SECONDS = 5.0
"""How often a map with no task finishing checks that it still has workers."""
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
    cluster: ClusterProfile | None = None
    """Workers as cluster-manager jobs (``sdmatlas.cluster``); overrides ``workers``."""

    @property
    def label(self) -> str:
        if self.cluster is not None:
            return self.cluster.kind
        return self.scheduler or ("in-process" if self.workers == 0 else "local")


class Executor:
    """Maps ``fn(context, item)`` over items; ``client`` is None for in-process runs.

    ``workerless_limit``: seconds a map may go on with no worker at all before it stops
    with :class:`PredictionFailedError` (cluster jobs that were all cancelled, preempted
    or ran out of walltime, with nothing to replace them); None waits for ever (a
    LocalCluster's nanny restarts its workers itself)."""

    def __init__(self, client: Any | None, workerless_limit: float | None = None) -> None:
        self.client = client
        self.workerless_limit = workerless_limit

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
        from distributed import wait

        pending: list[tuple[Callable[[Any, Any], R], Any, Any]] = []
        for fn, context, items in groups:
            if not items:
                continue
            # The context is a task's result, not scattered data: a result Dask can
            # compute again if every worker holding it dies (a cancelled or preempted
            # cluster job); scattered data would be lost, and every task after it
            # cancelled. pure=False: a unique key per map.
            shared = self.client.submit(_identity, context, pure=False)
            pending += [(fn, shared, item) for item in items]
        pending.reverse()  # popped from the end: submitted in order
        # A bounded window of tasks in flight, refilled as they finish: the scheduler and
        # the workers hold a few tasks' state and results, not the whole run's (memory
        # that would otherwise grow with the extent).
        n_workers = max(1, len(self.client.scheduler_info().get("workers", {})))
        window = max(8, IN_FLIGHT_PER_WORKER * n_workers)
        running: set[Any] = set()
        futures: list[Any] = []
        workerless_since: float | None = None
        try:
            while pending and len(futures) < window:
                fn, shared, item = pending.pop()
                fut = self.client.submit(fn, shared, item, pure=False)
                futures.append(fut)
                running.add(fut)
            while running:
                try:
                    finished, _ = wait(running, timeout=WATCH_SECONDS,
                                       return_when="FIRST_COMPLETED")  # fmt: skip
                except TimeoutError:  # distributed.wait raises when nothing finished
                    workerless_since = self._watch(workerless_since)
                    continue
                for fut in finished:
                    try:  # re-raises a task's own exception
                        result = fut.result(timeout=WATCH_SECONDS)
                    except TimeoutError:
                        # finished, but its result went with its worker before it was
                        # gathered: Dask computes it again when a worker comes; until then
                        # the run may be left with no worker at all (watched here)
                        workerless_since = self._watch(workerless_since)
                        continue
                    workerless_since = None
                    running.discard(fut)
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

    def _watch(self, since: float | None) -> float | None:
        """Between finished tasks: when the run has had no worker for longer than
        ``workerless_limit``, stop it (its done tasks are kept: resume it later)."""
        if self.workerless_limit is None or self.client is None or self.client.nthreads():
            return None
        now = time.monotonic()
        since = now if since is None else since
        if now - since > self.workerless_limit:
            raise PredictionFailedError(
                f"no worker for {now - since:.0f} s (cluster jobs cancelled, preempted or out "
                "of walltime, and none replaced them): the finished tasks are kept, run again "
                "with --resume"
            )
        return since


def _identity(x: T) -> T:
    return x


@contextmanager
def open_executor(options: ExecutorOptions) -> Iterator[Executor]:
    """An executor for the length of a run (a LocalCluster is started and stopped here)."""
    if options.scheduler is None and options.cluster is None and options.workers == 0:
        yield Executor(None)
        return
    from distributed import Client

    if options.cluster is not None:
        with cluster_executor(options.cluster) as ex:
            yield ex
        return
    if options.scheduler:
        with Client(options.scheduler) as client:
            yield Executor(client)
        return
    with local_cluster(options.workers) as cluster, Client(cluster) as client:
        yield Executor(client)


@contextmanager
def cluster_executor(profile: ClusterProfile) -> Iterator[Executor]:
    """An executor on cluster-manager jobs: waits for the first worker (a job that never
    starts, a wrong partition or account, is a clear error, not a hang)."""
    from distributed import Client

    profile = profile.model_copy(update={"prologue": [*worker_exports(), *profile.prologue]})
    with slurm_cluster(profile) as cluster, Client(cluster) as client:
        if not profile.adaptive or (profile.minimum_jobs or 0) > 0:
            try:
                client.wait_for_workers(1, timeout=profile.worker_start_timeout)
            except TimeoutError:
                wait = profile.worker_start_timeout
                raise PredictionFailedError(
                    f"no {profile.kind} worker started within {wait:.0f} s: "
                    "see squeue and the job logs"
                    + (f" in {profile.log_directory}" if profile.log_directory else "")
                    + " (a wrong partition or account, or a full queue)"
                ) from None
        yield Executor(client, workerless_limit=profile.worker_start_timeout)


def worker_environment() -> dict[str, str]:
    """What every worker process gets beside Dask's own settings (see local_cluster)."""
    import dask
    import distributed  # noqa: F401  (its import loads its configuration defaults)

    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ"))
    environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    if "GDAL_CACHEMAX" not in os.environ:
        environ["GDAL_CACHEMAX"] = "16"
    return {k: str(v) for k, v in environ.items()}


def worker_exports() -> list[str]:
    """:func:`worker_environment` as job-script lines. The trim threshold is unset by a
    Dask configuration file for the job (``DASK_CONFIG`` adds a folder to Dask's search
    path): Dask's own variables cannot do it, since their keys are lower-cased and merged
    key by key, so Dask's default ``MALLOC_TRIM_THRESHOLD_`` entry would stay."""
    folder = '"${TMPDIR:-/tmp}/sdmatlas-dask-${SLURM_JOB_ID:-$$}"'
    lines = [
        f"export DASK_CONFIG={folder}",
        'mkdir -p "$DASK_CONFIG"',
        "printf 'distributed:\\n  nanny:\\n    pre-spawn-environ:\\n"
        '      MALLOC_TRIM_THRESHOLD_: null\\n\' > "$DASK_CONFIG/sdmatlas.yaml"',
    ]
    env = worker_environment()
    if "GDAL_CACHEMAX" in env:
        lines.append(f"export GDAL_CACHEMAX={env['GDAL_CACHEMAX']}")
    return lines


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
    # GDAL's block cache defaults to 5 % of the machine's memory and keeps every block a
    # task has read until it is full: prediction workers grew from 205 to 832 MB between a
    # 1024^2 and an 8192^2 territory (bench/scale.py). A task reads its window and halo
    # once (4 covariates x a few 256 x 256 blocks: about 4 MB); 16 MB holds that.
    environ = worker_environment()
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
