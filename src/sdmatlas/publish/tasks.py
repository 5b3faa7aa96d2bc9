"""The chunk tasks of a publish: each reads and writes a bounded region, whatever the extent.

A publish is five kinds of task (:mod:`sdmatlas.publish.release` runs them in order,
each kind over all its tiles, on the prediction executor):

``base``     one task per tile of level 0 (``tile`` x ``tile`` pixels, all species): writes
             level 0, the pixel-major copy, the territory, the 8-pixel block aggregates
             and the indicators that need no range size; keeps its partial sums (code
             histograms, presence boxes, code sums, indicator statistics per cube chunk).
``rarity``   per tile again, once the range sizes are reduced: rarity-weighted richness,
             and every indicator folded into the 8-pixel blocks.
``hist``     per tile: indicator histograms on the bin edges of the reduced minimum and
             maximum (the catalog's statistics).
``level<k>`` per tile of level k: the 2 x 2 weighted means (class layers: the weighted
             mode) of its 2 tile x 2 tile region of level k - 1 (species in groups of one
             shard), and its level-0 pixel counts for level k + 1: the pyramid as a tree.
``blocks<e>`` per chunk of the block aggregates of edge e, from the finer edge.

Memory of a task: ``tile^2 x species`` bytes a few times over for ``base`` and
``rarity``; ``4 tile^2 x SHARD_SPECIES`` for a level; 64 x 64 blocks x species for a
block chunk. None of these depends on the extent. Every task writes whole shards or
chunks (:class:`~sdmatlas.chunk_writer.ChunkWriter`), then its done marker: a task run
twice writes the same bytes, so a killed publish resumes by running the tasks with no
marker.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import zarr

from sdmatlas.chunk_writer import ChunkWriter
from sdmatlas.chunks import ChunkReader, ZarrChunkReader, local_reader
from sdmatlas.classes import block_class_counts, class_counts, mode_downsample
from sdmatlas.errors import CorruptDataError
from sdmatlas.grid import ChunkWindow, Grid
from sdmatlas.predict.cube import PROBABILITY, SHARD_SPECIES
from sdmatlas.publish import aggregates
from sdmatlas.publish.categorical import CLASS_LAYERS, ClassLayer
from sdmatlas.publish.indicators import INDICATORS, SpeciesInfo
from sdmatlas.publish.levels import downsample_codes, downsample_float, downsample_weights
from sdmatlas.publish.stats import SpeciesStats
from sdmatlas.publish.workspace import Workspace
from sdmatlas.quantize import NODATA
from sdmatlas.release import layout
from sdmatlas.zarr_access import array

BLOCK = aggregates.EDGES[0]
RARITY = "rarity_weighted_richness"


@dataclass(frozen=True)
class PublishJob:
    """What every task of one publish shares (sent once to each worker)."""

    release: str
    """URL or path of the staging group."""
    storage_options: dict[str, Any] | None
    workspace: Workspace
    cube: Path
    grid: Grid
    n_species: int
    tile: int
    threshold_code: int
    species: SpeciesInfo
    """With ``range_km2`` filled from the ``rarity`` stage on."""
    edges: dict[str, list[float]] | None = None
    """Histogram bin edges per indicator, for the ``hist`` stage."""
    class_layers: Mapping[str, ClassLayer] = field(default_factory=lambda: dict(CLASS_LAYERS))
    """The class layers: the registry's, and a habitat classifier's (``--habitats``)."""


@dataclass(frozen=True)
class TaskResult:
    stage: str
    key: str
    seconds: float
    info: dict[str, Any]


def tiles(height: int, width: int, tile: int) -> list[ChunkWindow]:
    """The ``tile`` x ``tile`` windows over a ``height`` x ``width`` grid, row-major."""
    return [
        ChunkWindow(iy, ix, y, min(y + tile, height), x, min(x + tile, width))
        for iy, y in enumerate(range(0, height, tile))
        for ix, x in enumerate(range(0, width, tile))
    ]


@lru_cache(maxsize=4)
def _group(release: str, storage_options: tuple[tuple[str, Any], ...] | None) -> zarr.Group:
    if "://" in release and not release.startswith("file://"):
        from zarr.storage import FsspecStore

        store = FsspecStore.from_url(release, storage_options=dict(storage_options or ()))
        return zarr.open_group(store=store, mode="r+")
    return zarr.open_group(release.removeprefix("file://"), mode="r+")


def open_staging(job: PublishJob) -> zarr.Group:
    opts = tuple(sorted(job.storage_options.items())) if job.storage_options else None
    return _group(job.release, opts)


def _local_dir(job: PublishJob) -> Path | None:
    if "://" in job.release and not job.release.startswith("file://"):
        return None
    return Path(job.release.removeprefix("file://"))


def _writer(job: PublishJob, path: str) -> ChunkWriter:
    """A writer made afresh for each task (it caches nothing between tasks)."""
    local = _local_dir(job)
    direct = ChunkWriter.at(local / path) if local is not None else None
    return direct or ChunkWriter.of(array(open_staging(job), path))


def _reader(job: PublishJob, path: str) -> ChunkReader:
    """A reader made afresh for each task: a reader caches shard indexes, which other
    tasks' writes may change."""
    local = _local_dir(job)
    direct = local_reader(local / path) if local is not None else None
    return direct or ZarrChunkReader(array(open_staging(job), path))


def _read(job: PublishJob, path: str, *region: slice) -> npt.NDArray[Any]:
    return _reader(job, path).region(region)


def read_cube(job: PublishJob, win: ChunkWindow) -> npt.NDArray[np.uint8]:
    """All species of a tile of the cube, read one cube chunk at a time so that a chunk
    that cannot be decoded is named in a :class:`CorruptDataError`."""
    src: ChunkReader = local_reader(job.cube / PROBABILITY) or ZarrChunkReader(
        zarr.open_array(job.cube / PROBABILITY, mode="r")
    )
    out = np.empty((job.n_species, *win.shape), dtype=np.uint8)
    c = job.grid.chunk
    for y in range(win.row0, win.row1, c):
        for x in range(win.col0, win.col1, c):
            y1, x1 = min(y + c, win.row1), min(x + c, win.col1)
            try:
                block = src.region((slice(0, job.n_species), slice(y, y1), slice(x, x1)))
            except Exception as exc:  # zarr/numcodecs raise several unrelated types
                raise CorruptDataError(
                    f"cube chunk rows {y}:{y1}, cols {x}:{x1} cannot be decoded "
                    f"({type(exc).__name__}: {exc}); re-run the prediction of that chunk"
                ) from exc
            out[:, y - win.row0 : y1 - win.row0, x - win.col0 : x1 - win.col0] = block
    return out


def _chunk_stats(
    job: PublishJob, win: ChunkWindow, values: npt.NDArray[np.float32]
) -> list[list[float]]:
    """``[iy, ix, count, sum, min, max]`` of the finite values in each cube chunk of the
    tile, cube chunks in row-major order: the catalog's mean is then summed over the
    whole release in the same order as one pass over the cube would."""
    c = job.grid.chunk
    rows = []
    for y in range(win.row0, win.row1, c):
        for x in range(win.col0, win.col1, c):
            b = values[y - win.row0 : y - win.row0 + c, x - win.col0 : x - win.col0 + c]
            v = b[np.isfinite(b)]
            lo, hi = (float(v.min()), float(v.max())) if v.size else (np.inf, -np.inf)
            rows.append([y // c, x // c, v.size, float(v.sum(dtype=np.float64)), lo, hi])
    return rows


def base_task(job: PublishJob, win: ChunkWindow) -> TaskResult:
    t0 = time.perf_counter()
    codes = read_cube(job, win)
    valid = codes[0] != NODATA if job.n_species else np.zeros(win.shape, bool)
    r0, c0 = win.row0, win.col0
    _writer(job, layout.probability(0)).write((0, r0, c0), codes)
    _writer(job, layout.PIXELS).write((r0, c0, 0), codes.transpose(1, 2, 0))
    _writer(job, layout.TERRITORY).write((r0, c0), valid.astype(np.uint8))
    bsum, bmax, bcount = aggregates.reduce_codes(codes, valid, BLOCK)
    b0, b1 = r0 // BLOCK, c0 // BLOCK
    _writer(job, layout.aggregate(BLOCK, "sum")).write((b0, b1, 0), bsum)
    _writer(job, layout.aggregate(BLOCK, "max")).write((b0, b1, 0), bmax)
    _writer(job, layout.aggregate(BLOCK, "count")).write((b0, b1), bcount)
    stats: dict[str, list[list[float]]] = {}
    for name, ind in INDICATORS.items():
        if name != RARITY:
            values = ind(codes, job.species, valid)
            _writer(job, layout.level_array(0, name)).write((r0, c0), values)
            stats[name] = _chunk_stats(job, win, values)
    classes: dict[str, list[int]] = {}
    block_counts = []
    for name, layer in job.class_layers.items():
        cls = layer(codes, job.species, valid)
        _writer(job, layout.level_array(0, name)).write((r0, c0), cls)
        classes[name] = class_counts(cls, layer.scheme).tolist()
        block_counts.append(block_class_counts(cls, layer.scheme, BLOCK))
    if block_counts:
        _writer(job, layout.aggregate(BLOCK, layout.CLASS_COUNTS)).write(
            (b0, b1, 0), np.concatenate(block_counts, axis=2)
        )
    sstats = SpeciesStats(job.n_species, job.threshold_code)
    sstats.add(codes, win)
    code_sums = np.where(codes == NODATA, 0, codes).sum(axis=(1, 2), dtype=np.int64)
    job.workspace.save_partial(
        "base",
        win.key,
        {
            "histogram": sstats.histogram,
            "presence": sstats.presence,
            "extent": sstats.extent,
            "code_sums": code_sums,
        },
    )
    return _done(job, "base", win, t0, {"stats": stats, "classes": classes})


def rarity_task(job: PublishJob, item: tuple[ChunkWindow, bool]) -> TaskResult:
    """Rarity-weighted richness of a tile, and every indicator folded into its 8-pixel
    blocks. A tile with no territory (``occupied`` False) has nothing to read: its blocks
    still get their empty summary (count 0, sum 0, no min or max), which differs from
    the arrays' fill value."""
    t0 = time.perf_counter()
    win, occupied = item
    b0 = (win.row0 // BLOCK, win.col0 // BLOCK, 0, 0)
    if not occupied:
        nan = np.full((len(INDICATORS), *win.shape), np.nan, dtype=np.float32)
        bind = aggregates.reduce_indicators(nan, BLOCK)
        _writer(job, layout.aggregate(BLOCK, "indicators")).write(b0, bind)
        return _done(job, "rarity", win, t0, {"stats": []})
    codes = read_cube(job, win)
    valid = codes[0] != NODATA if job.n_species else np.zeros(win.shape, bool)
    rarity = INDICATORS[RARITY](codes, job.species, valid)
    del codes
    ys, xs = slice(win.row0, win.row1), slice(win.col0, win.col1)
    _writer(job, layout.level_array(0, RARITY)).write((win.row0, win.col0), rarity)
    values = np.stack(
        [
            rarity if n == RARITY else _read(job, layout.level_array(0, n), ys, xs)
            for n in INDICATORS
        ]
    )
    bind = aggregates.reduce_indicators(values, BLOCK)
    _writer(job, layout.aggregate(BLOCK, "indicators")).write(b0, bind)
    return _done(job, "rarity", win, t0, {"stats": _chunk_stats(job, win, rarity)})


def histogram_task(job: PublishJob, win: ChunkWindow) -> TaskResult:
    t0 = time.perf_counter()
    assert job.edges is not None
    ys, xs = slice(win.row0, win.row1), slice(win.col0, win.col1)
    counts = {}
    for name, edges in job.edges.items():
        b = _read(job, layout.level_array(0, name), ys, xs)
        counts[name] = np.histogram(b[np.isfinite(b)], bins=np.asarray(edges))[0].tolist()
    return _done(job, "hist", win, t0, {"counts": counts})


def _weights(job: PublishJob, level: int, rows: slice, cols: slice) -> npt.NDArray[np.int64]:
    """Level-0 pixel counts of the pixels ``rows, cols`` of ``level``: the territory at
    level 0, else assembled from the tiles the previous level's tasks saved."""
    if level == 0:
        return _read(job, layout.TERRITORY, rows, cols).astype(np.int64)
    t = job.tile
    out = np.zeros((rows.stop - rows.start, cols.stop - cols.start), dtype=np.int64)
    for y in range(rows.start, rows.stop, t):
        for x in range(cols.start, cols.stop, t):
            w = job.workspace.load_weights(level, f"{y // t}.{x // t}")
            if w is not None:  # None: a tile with no territory below, weights 0
                oy, ox = y - rows.start, x - cols.start
                out[oy : oy + w.shape[0], ox : ox + w.shape[1]] = w
    return out


def level_task(job: PublishJob, item: tuple[int, ChunkWindow]) -> TaskResult:
    """Tile ``win`` of pyramid level ``k`` from level ``k - 1``."""
    t0 = time.perf_counter()
    k, win = item
    prev = _reader(job, layout.probability(k - 1))
    s, ph, pw = prev.shape
    rows = slice(2 * win.row0, min(2 * win.row1, ph))
    cols = slice(2 * win.col0, min(2 * win.col1, pw))
    weights = _weights(job, k - 1, rows, cols)
    prob = _writer(job, layout.probability(k))
    for s0 in range(0, job.n_species, SHARD_SPECIES):
        block = prev.region((slice(s0, min(s0 + SHARD_SPECIES, s)), rows, cols))
        prob.write((s0, win.row0, win.col0), downsample_codes(block, weights))
    for name in INDICATORS:
        values = _read(job, layout.level_array(k - 1, name), rows, cols)
        _writer(job, layout.level_array(k, name)).write(
            (win.row0, win.col0), downsample_float(values, weights)
        )
    for name in job.class_layers:
        values = _read(job, layout.level_array(k - 1, name), rows, cols)
        _writer(job, layout.level_array(k, name)).write(
            (win.row0, win.col0), mode_downsample(values, weights)
        )
    job.workspace.save_weights(k, win.key, downsample_weights(weights))
    return _done(job, f"level{k}", win, t0, {})


def blocks_task(job: PublishJob, item: tuple[int, ChunkWindow]) -> TaskResult:
    """One chunk (8 x 8 blocks) of the aggregates of edge ``coarse`` from the finer edge
    (:func:`sdmatlas.publish.aggregates.coarsen_chunk`)."""
    t0 = time.perf_counter()
    coarse, win = item
    fine = coarse // aggregates.FANOUT
    f = aggregates.FANOUT
    region: dict[str, npt.NDArray[Any]] = {}
    for n in aggregates.NAMES:
        src = _reader(job, layout.aggregate(fine, n))
        fy = slice(win.row0 * f, min(win.row1 * f, src.shape[0]))
        fx = slice(win.col0 * f, min(win.col1 * f, src.shape[1]))
        region[n] = src.region((fy, fx, *(slice(0, d) for d in src.shape[2:])))
    out = aggregates.coarsen_chunk(region, win.row1 - win.row0, win.col1 - win.col0, coarse)
    for n in aggregates.NAMES:
        start = (win.row0, win.col0) + (0,) * (out[n].ndim - 2)
        _writer(job, layout.aggregate(coarse, n)).write(start, out[n])
    if job.class_layers:
        src = _reader(job, layout.aggregate(fine, layout.CLASS_COUNTS))
        fy = slice(win.row0 * f, min(win.row1 * f, src.shape[0]))
        fx = slice(win.col0 * f, min(win.col1 * f, src.shape[1]))
        counts = src.region((fy, fx, slice(0, src.shape[2])))
        rows, cols = win.row1 - win.row0, win.col1 - win.col0
        _writer(job, layout.aggregate(coarse, layout.CLASS_COUNTS)).write(
            (win.row0, win.col0, 0), aggregates.coarsen_classes(counts, rows, cols)
        )
    return _done(job, f"blocks{coarse}", win, t0, {})


def _done(
    job: PublishJob, stage: str, win: ChunkWindow, t0: float, info: dict[str, Any]
) -> TaskResult:
    seconds = time.perf_counter() - t0
    job.workspace.mark_done(stage, win.key, {**info, "seconds": round(seconds, 4)})
    return TaskResult(stage, win.key, seconds, info)
