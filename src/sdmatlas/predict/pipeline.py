"""``predict``: validate everything, create or resume a cube, run chunk tasks on Dask."""

from __future__ import annotations

import fcntl
import logging
import os
import platform
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdmatlas import __version__
from sdmatlas.cluster import ClusterProfile
from sdmatlas.errors import (
    IncompleteReleaseError,
    InvalidInputError,
    ModelMismatchError,
    NotFoundError,
    ReleaseExistsError,
    TerritoryError,
)
from sdmatlas.executor import ExecutorOptions, open_executor
from sdmatlas.grid import ChunkWindow
from sdmatlas.models.adapters import Device, load_adapter
from sdmatlas.models.card import load_card
from sdmatlas.predict.covariates import CovariateStack
from sdmatlas.predict.cube import (
    FORMAT_VERSION,
    Cube,
    create_cube,
    fingerprint,
    now,
    open_cube,
)
from sdmatlas.predict.tasks import ChunkResult, ChunkTask, PredictContext, run_chunk
from sdmatlas.quantize import ENCODING
from sdmatlas.territory import Territory

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
"""Called as ``progress(done_chunks, total_chunks)`` after each finished chunk."""


@dataclass(frozen=True)
class PredictOptions:
    batch_size: int = 4096
    workers: int = 2
    threads_per_worker: int = 1
    scheduler: str | None = None
    device: Device = "auto"
    framework: str | None = None
    halo: int | None = None
    resume: bool = False
    cluster: ClusterProfile | None = None
    """Workers as cluster-manager jobs (``--cluster``); overrides ``workers``."""
    shard: tuple[int, int] | None = None
    """``(i, n)``: run only the i-th of n shares of the chunk tasks (job arrays)."""
    finish: bool = False
    """Run no task: mark the cube complete if every chunk has its done marker."""

    def __post_init__(self) -> None:
        if self.shard is not None:
            i, n = self.shard
            if not (n >= 1 and 0 <= i < n):
                raise InvalidInputError(f"--shard {i}/{n}: give i/N with 0 <= i < N")
        if self.finish and self.shard is not None:
            raise InvalidInputError("--finish and --shard do not go together")


@dataclass
class RunSummary:
    cube: Path
    total_chunks: int
    already_done: int
    computed: int
    pixels: int
    n_species: int
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def pixel_species_per_s(self) -> float:
        return self.pixels * self.n_species / self.seconds if self.seconds else 0.0


def plan_tasks(territory: Territory) -> list[ChunkTask]:
    """One task per spatial chunk holding at least one territory pixel (the mask is read
    one row of chunks at a time)."""
    tasks = []
    by_row: dict[int, list[ChunkWindow]] = {}
    for w in territory.grid.chunks():
        by_row.setdefault(w.row0, []).append(w)
    for row0, band in territory.bands():
        for w in by_row[row0]:
            n = int(band[:, w.col0 : w.col1].sum())
            if n:
                tasks.append(ChunkTask(w, n))
    if not tasks:
        raise TerritoryError(f"territory {territory.name!r} has no pixel on the grid")
    return tasks


def shard_of(tasks: list[ChunkTask], shard: tuple[int, int] | None) -> list[ChunkTask]:
    """The tasks of share ``i`` of ``n`` (every n-th task from the i-th, in plan order, so
    every share gets chunks from all over the territory); all of them without a shard."""
    if shard is None:
        return tasks
    i, n = shard
    return tasks[i::n]


@contextmanager
def cube_lock(output: Path) -> Iterator[None]:
    """An exclusive flock beside the cube, held while it is created or its run records
    are written: the shards of a job array start at once on the same cube. (On Lustre
    this needs the ``flock`` mount option; NFSv4 and local disks have it.)"""
    output.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(output.parent / f".{output.name}.predict.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _prepare_cube(
    output: Path,
    parts: dict[str, Any],
    territory: Territory,
    names: list[str],
    ids: list[int],
    meta: dict[str, Any],
    resume: bool,
    shared: bool = False,
) -> Cube:
    """Create the cube, or open it to resume. ``shared``: other shards may be writing to
    it right now, so their temporary files are left alone (``--finish`` removes any)."""
    digest = fingerprint(parts)
    if not output.exists():
        return create_cube(output, territory.grid, ids, names, {**meta, "fingerprint": digest})
    if output.is_dir() and not any(output.iterdir()):
        output.rmdir()
        return create_cube(output, territory.grid, ids, names, {**meta, "fingerprint": digest})
    try:
        cube = open_cube(output)
    except NotFoundError as exc:
        raise ReleaseExistsError(
            f"{output} exists and is not an sdmatlas cube: choose another output path"
        ) from exc
    existing = cube.meta
    if existing.get("fingerprint") != digest:
        old = existing.get("inputs", {})
        diffs = [k for k in parts if old.get(k) != parts[k]]
        raise ReleaseExistsError(
            f"{output} holds another release (it differs in: {', '.join(diffs) or 'format'}); "
            "choose another output path, nothing was changed"
        )
    if not resume:
        state = "is complete" if cube.is_complete else "is an unfinished run of this release"
        raise ReleaseExistsError(
            f"{output} {state}; pass --resume to finish it, or choose another output path"
        )
    if not shared:
        cube.remove_partials()
    return cube


def predict(
    card_path: Path,
    covariates: Mapping[str, Path],
    territory: Territory,
    output: Path,
    options: PredictOptions | None = None,
    progress: Progress | None = None,
) -> RunSummary:
    """Predict every species of a model over a territory into a Zarr cube at ``output``.

    Everything is checked before any work starts: the card against its model
    (input shape, number of outputs), against the covariates (names, CRS,
    resolution, alignment, coverage) and the halo. With ``resume``, an
    unfinished cube of the same release is finished, redoing only chunks with
    no done marker.
    """
    options = options or PredictOptions()
    t_start = time.perf_counter()
    started = now()
    card = load_card(card_path)
    framework = options.framework or card.framework
    needed = {i.name for i in card.inputs}
    stack = CovariateStack({k: Path(v) for k, v in covariates.items() if k in needed})
    stack.check(card, territory.grid)
    halo = card.halo if options.halo is None else options.halo
    if halo < card.halo:
        raise ModelMismatchError(
            f"patch size {card.patch_size} needs a halo of {card.halo} pixels, got {halo}"
        )
    adapter = load_adapter(
        card, framework=framework, device=options.device, threads=options.threads_per_worker
    )
    parts = {
        "format_version": FORMAT_VERSION,
        "model": card.digest(),
        "territory": territory.digest(),
        "covariates": stack.checksums(),
        "encoding": ENCODING,
    }
    meta = {
        "inputs": parts,
        "model": {
            "name": card.name,
            "version": card.version,
            "framework": framework,
            "card": card.model_dump(mode="json", exclude={"metrics", "training", "species"}),
        },
        "territory": territory.name,
    }
    output = Path(output)
    # shards and --finish meet a cube other processes made (or are making): resume it
    together = options.shard is not None or options.finish
    with cube_lock(output) if together else nullcontext():
        cube = _prepare_cube(
            output,
            parts,
            territory,
            [s.name for s in card.species],
            card.species_ids,
            meta,
            options.resume or together,
            shared=options.shard is not None,
        )
    tasks = plan_tasks(territory)
    done = cube.done_chunks()
    mine = shard_of(tasks, options.shard)
    todo = [t for t in mine if t.window.key not in done]
    total, already = len(tasks), len(mine) - len(todo)
    if options.finish:
        missing = sum(1 for t in tasks if t.window.key not in done)
        if missing:
            raise IncompleteReleaseError(
                f"{missing} of {total} chunks of {output} have no done marker: run their "
                "shards again (or predict --resume), then --finish"
            )
    ctx = PredictContext(
        card=card,
        framework=framework,
        covariates=stack,
        grid=territory.grid,
        territory=territory,
        cube_path=cube.path,
        batch_size=options.batch_size,
        device=options.device,
        threads=options.threads_per_worker,
        halo=halo,
    )
    results: list[ChunkResult] = []

    def on_done(r: ChunkResult) -> None:
        results.append(r)
        if progress:
            progress(already + len(results), total)

    if progress:
        progress(already, total)
    error: BaseException | None = None
    executor = ExecutorOptions(
        options.workers, options.threads_per_worker, options.scheduler, options.cluster
    )
    try:
        with open_executor(executor) as ex:
            ex.map(run_chunk, ctx, todo, on_done)
    except BaseException as exc:
        error = exc
    seconds = time.perf_counter() - t_start
    timings = {
        "read_s": round(sum(r.read_s for r in results), 3),
        "model_s": round(sum(r.model_s for r in results), 3),
        "write_s": round(sum(r.write_s for r in results), 3),
    }
    run = {
        "started": started,
        "finished": now(),
        "seconds": round(seconds, 3),
        "chunks_total": total,
        "chunks_already_done": already,
        "chunks_computed": len(results),
        "pixels_computed": sum(r.pixels for r in results),
        "scheduler": executor.label,
        "workers": options.workers if executor.label == "local" else None,
        "device": adapter.device,
        "worker_devices": sorted({r.device for r in results}),
        "batch_size": options.batch_size,
        "timings": timings,
        "sdmatlas": __version__,
        "host": platform.node(),
        **({"shard": f"{options.shard[0]}/{options.shard[1]}"} if options.shard else {}),
        **({"cluster": options.cluster.model_dump()} if options.cluster else {}),
        **({"error": f"{type(error).__name__}: {error}"} if error else {}),
    }
    with cube_lock(output) if together else nullcontext():
        if options.finish:
            cube.remove_partials()  # no shard runs any more
        complete = error is None and len(cube.done_chunks()) >= total
        cube.add_run(run, complete=complete)
    if error is not None:
        raise error
    return RunSummary(
        cube=cube.path,
        total_chunks=total,
        already_done=already,
        computed=len(results),
        pixels=sum(r.pixels for r in results),
        n_species=card.n_species,
        seconds=seconds,
        timings=timings,
    )
