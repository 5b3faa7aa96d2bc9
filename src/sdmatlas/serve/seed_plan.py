"""The seeding planner: which tiles of which layers are empty, uniform or dense, from the
release's block aggregates and territory counts, without reading a pixel or rendering.

For each tile, its footprint (the tile's outline, densified and transformed to the grid
CRS, widened by one pixel of the level it reads) gives a window of level-0 pixels; the
block aggregates of that window (edge 8, 64 or 512, the finest that keeps it within 16
blocks a side) are read once, **for all species at once** (an aggregate chunk holds
every species), and decide per layer:

- **empty**: no territory pixel in the window: the tile is the empty tile (every layer);
- **uniform**: the window lies inside the grid, every block is all territory, and the
  layer's value is the same on every pixel: for a species, ``sum == max * count`` in
  every block and the same ``max`` everywhere (then every code is that max, at every
  pyramid level, since a mean of equal codes is that code); for an indicator,
  ``min == max`` everywhere with every pixel counted (at coarser levels only when that
  value is 0, so that no float mean is relied on). The tile is then one colour: it is
  rendered once per layer style and value and reused (byte for byte what the renderer
  gives: the same constant array through the same palette and encoder);
- **dense**: anything else (rendered).

The decision is conservative: a block that reaches outside the window must be uniform
too, so a tile may be called dense that is uniform, never the reverse (tested against
rendered tiles).

Estimates: empty and uniform tile sizes are exact (their bytes are made, one per
value); dense tiles use the per-tile size and time measured by rendering a sample of
them (:func:`sample_dense`, ``seed --plan --sample N``: N tiles drawn in proportion to
each zoom's dense tiles, each zoom its own mean), or without a sample the constants
:data:`DENSE_BYTES` and :data:`DENSE_SECONDS` (bench/cache.py on this machine).
"""

from __future__ import annotations

import functools
import math
import time
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from sdmatlas.chunks import ChunkReader, assemble
from sdmatlas.classes import ClassScheme
from sdmatlas.grid import Grid
from sdmatlas.release import Release
from sdmatlas.release.layout import CLASS_COUNTS
from sdmatlas.serve.tiles.tiling import (
    TILE_SIZE,
    get_tms,
    level_points,
    tile_bounds,
    tms_crs,
    transformer,
    window_level,
)

EMPTY, UNIFORM, DENSE = "empty", "uniform", "dense"
EDGES = (8, 64, 512)
MAX_BLOCKS = 16
"""Blocks a side of a tile's window, at most (coarser edges beyond)."""
DENSE_BYTES = 9_000.0
"""Mean PNG bytes of a dense 256 x 256 species tile (bench/cache.py, 2026-12)."""
DENSE_SECONDS = 0.004
"""Seconds to render a dense tile in one worker process (bench/cache.py, 2026-12)."""
WRITE_SECONDS = 0.0003
"""Seconds to look a tile up in the disk cache and write it there, any tile (a profile of
bench/seed.py's seed, 2026-12-03: 0.32 ms; rendering excluded)."""


@dataclass(frozen=True)
class Window:
    """Level-0 pixels a tile samples (rows r0:r1, cols c0:c1; may reach outside the grid),
    and the level it reads."""

    r0: int
    r1: int
    c0: int
    c1: int
    level: int

    def inside(self, grid: Grid) -> bool:
        return self.r0 >= 0 and self.c0 >= 0 and self.r1 <= grid.height and self.c1 <= grid.width


_EDGE_T = np.linspace(0.0, 1.0, 17)
_POINTS = 6 + 4 * 17  # a tile's points: the level's six, 17 a side of its edge


def tile_window(tms_name: str, z: int, x: int, y: int, grid: Grid, n_levels: int) -> Window:
    """The window of level-0 pixels tile (z, x, y) can sample, with a margin."""
    return tile_windows(tms_name, [(z, x, y)], grid, n_levels)[0]


def tile_windows(
    tms_name: str, tiles: Sequence[tuple[int, int, int]], grid: Grid, n_levels: int
) -> list[Window]:
    """:func:`tile_window` of each tile (z, x, y), with one PROJ call for all of them: a
    planner's batch of 64 tiles made 64 calls, each costing more in pyproj's Python than
    in PROJ (the same points, the same arithmetic: the same windows)."""
    if not tiles:
        return []
    tms = get_tms(tms_name)
    crs = tms_crs(tms)
    bounds = [tile_bounds(tms, z, x, y) for z, x, y in tiles]
    w, s, e, n = (np.asarray(v)[:, None] for v in zip(*bounds, strict=True))
    # per tile: the level's six points, then 17 points a side of the tile's edge
    lx, ly = level_points((w, s, e, n), TILE_SIZE, TILE_SIZE)
    ones = np.ones(17)
    xs = np.concatenate([lx, w + (e - w) * _EDGE_T, e * ones, e - (e - w) * _EDGE_T, w * ones],
                        axis=1)  # fmt: skip
    ys = np.concatenate([ly, n * ones, n - (n - s) * _EDGE_T, s * ones, s + (n - s) * _EDGE_T],
                        axis=1)  # fmt: skip
    px, py = transformer(crs, grid.crs).transform(xs.ravel(), ys.ravel())
    px = np.asarray(px).reshape(len(tiles), _POINTS)
    py = np.asarray(py).reshape(len(tiles), _POINTS)
    out = []
    for k, b in enumerate(bounds):
        level = window_level(crs, b, TILE_SIZE, TILE_SIZE, grid, n_levels, (px[k, :6], py[k, :6]))
        gx, gy = px[k, 6:], py[k, 6:]
        if not (np.isfinite(gx).all() and np.isfinite(gy).all()):
            out.append(Window(-1, grid.height + 1, -1, grid.width + 1, level))  # undecidable
            continue
        f = 2**level
        res = grid.res * f
        rk0 = math.floor((grid.y0 - gy.max()) / res) - 1
        rk1 = math.floor((grid.y0 - gy.min()) / res) + 2
        ck0 = math.floor((gx.min() - grid.x0) / res) - 1
        ck1 = math.floor((gx.max() - grid.x0) / res) + 2
        out.append(Window(rk0 * f, rk1 * f, ck0 * f, ck1 * f, level))
    return out


def _edge(win: Window) -> int:
    side = max(win.r1 - win.r0, win.c1 - win.c0)
    return next((e for e in EDGES if side / e <= MAX_BLOCKS), EDGES[-1])


@dataclass
class TileAggregates:
    """The block aggregates under one tile's window (clipped to the grid). The per-species,
    per-indicator and per-class ones are read only for a window wholly in the territory
    (the only case where they decide anything), and only those the tile's layers need:
    the species rows ``first_row`` to ``first_row + vmax.shape[1]``."""

    edge: int
    count: npt.NDArray[np.int64]  # [blocks]
    full: npt.NDArray[np.int64]  # [blocks]: pixels of each block inside the grid
    vmax: npt.NDArray[Any] | None = None  # [blocks, species rows]
    vsum: npt.NDArray[Any] | None = None  # [blocks, species rows]
    ind: npt.NDArray[np.float64] | None = None  # [blocks, I, 4]
    classes: npt.NDArray[Any] | None = None  # [blocks, class columns]: pixels of each class
    first_row: int = 0

    @functools.cached_property
    def whole(self) -> bool:
        """Every block wholly territory (asked up to three times a tile: computed once)."""
        return bool((self.count == self.full).all())


class CachedChunks:
    """A chunk reader's decoded chunks kept for one plan: neighbouring tiles read the same
    aggregate chunks (an edge-8 chunk holds 8 x 8 blocks of every species: 1.3 MB at
    10,000 species), so each is decoded once, not once per tile. LRU, ``max_items``."""

    def __init__(self, reader: ChunkReader, max_items: int = 64) -> None:
        self.reader = reader
        self.shape, self.dtype, self.inner = reader.shape, reader.dtype, reader.inner
        self.max_items = max_items
        self._items: OrderedDict[tuple[int, ...], npt.NDArray[Any]] = OrderedDict()

    def chunk(self, coords: tuple[int, ...]) -> npt.NDArray[Any]:
        hit = self._items.get(coords)
        if hit is not None:
            self._items.move_to_end(coords)
            return hit
        data = self.reader.chunk(coords)
        data.flags.writeable = False  # shared by the regions below (views of it)
        self._items[coords] = data
        if len(self._items) > self.max_items:
            self._items.popitem(last=False)
        return data

    def region(self, region: tuple[slice, ...]) -> npt.NDArray[Any]:
        """``region`` of the array (read-only): a view of one chunk when the region lies
        in it (a small tile window, most of a seed's), else pasted together."""
        first = tuple(int(s.start) // n for s, n in zip(region, self.inner, strict=True))
        ends = ((int(s.stop) - 1) // n for s, n in zip(region, self.inner, strict=True))
        if all(e == f for e, f in zip(ends, first, strict=True)):
            local = tuple(
                slice(int(s.start) - f * n, int(s.stop) - f * n)
                for s, n, f in zip(region, self.inner, first, strict=True)
            )
            return self.chunk(first)[local]
        return assemble(self, region)


class AggregateReaders:
    """The aggregate arrays of one release, through :class:`CachedChunks` (one per plan)."""

    def __init__(self, rel: Release) -> None:
        self.rel = rel
        self._readers: dict[tuple[int, str], CachedChunks] = {}

    def __call__(self, edge: int, name: str) -> CachedChunks:
        key = (edge, name)
        if key not in self._readers:
            self._readers[key] = CachedChunks(self.rel.aggregate(edge, name))
        return self._readers[key]


def window_aggregates(
    rel: Release, win: Window, readers: AggregateReaders | None = None,
    rows: Sequence[int] | None = None, indicators: bool = True, classes: bool = True,
) -> TileAggregates | None:  # fmt: skip
    """The aggregates of the blocks the window touches; None when it misses the grid.
    ``rows``: the species rows wanted (None: all); ``indicators``, ``classes``: whether
    those are wanted. Only the span of species rows asked for is read: one layer's
    column lies in one chunk, a view of it, where all 10,000 species' would be pasted
    together from several for every tile."""
    g = rel.grid
    r0, r1 = max(win.r0, 0), min(win.r1, g.height)
    c0, c1 = max(win.c0, 0), min(win.c1, g.width)
    if r1 <= r0 or c1 <= c0:
        return None
    agg = readers or AggregateReaders(rel)
    e = _edge(win)
    by, bx = slice(r0 // e, (r1 - 1) // e + 1), slice(c0 // e, (c1 - 1) // e + 1)
    count = agg(e, "count").region((by, bx)).astype(np.int64)
    heights = np.minimum(e, g.height - np.arange(by.start, by.stop) * e)
    widths = np.minimum(e, g.width - np.arange(bx.start, bx.stop) * e)
    full = np.outer(heights, widths).astype(np.int64)
    n = count.size
    out = TileAggregates(e, count.reshape(n), full.reshape(n))
    if not (win.inside(g) and out.whole):
        return out  # empty or partly outside: no per-layer aggregate decides anything
    lo, hi = (
        (0, len(rel.species_ids))
        if rows is None
        else (min(rows, default=0), max(rows, default=-1) + 1)
    )
    if hi > lo:
        out.first_row = lo
        out.vmax = agg(e, "max").region((by, bx, slice(lo, hi))).reshape(n, hi - lo)
        out.vsum = agg(e, "sum").region((by, bx, slice(lo, hi))).reshape(n, hi - lo)
    if indicators:
        ind = agg(e, "indicators")
        out.ind = ind.region((by, bx, slice(0, ind.shape[2]), slice(0, 4))).reshape(n, -1, 4)
    if classes and rel.manifest.class_layers:
        cls = agg(e, CLASS_COUNTS)
        out.classes = cls.region((by, bx, slice(0, cls.shape[2]))).reshape(n, -1)
    return out


@dataclass(frozen=True)
class Verdict:
    """One tile of one layer: its class, and for a uniform tile its value (a code for a
    species, a float for an indicator)."""

    kind: str
    value: float | None = None
    level: int | None = None
    """The pyramid level the tile reads (known from its window: not computed again)."""


def classify_classes(
    rel: Release, win: Window, agg: TileAggregates | None, names: list[str]
) -> list[Verdict]:
    """Verdicts for class layers of one tile: empty without territory; uniform when every
    pixel of every block (all territory) has one class, whatever the level (the mode of
    equal classes is that class); else dense."""
    if agg is None or int(agg.count.sum()) == 0:
        return [Verdict(EMPTY, level=win.level)] * len(names)
    dense = Verdict(DENSE, level=win.level)
    if not (win.inside(rel.grid) and agg.whole) or agg.classes is None:
        return [dense] * len(names)
    out = []
    for name in names:
        cols = agg.classes[:, rel.manifest.class_columns(name)].astype(np.int64)
        full = cols == agg.count[:, None]  # [blocks, classes]: the block is all this class
        hit = np.flatnonzero(full.all(axis=0))
        if len(hit):
            value = rel.manifest.class_layers[name].scheme.classes[int(hit[0])].value
            out.append(Verdict(UNIFORM, float(value), win.level))
        else:
            out.append(dense)
    return out


def classify(
    rel: Release, win: Window, agg: TileAggregates | None, species_rows: list[int],
    indicators: list[str],
) -> tuple[list[Verdict], list[Verdict]]:  # fmt: skip
    """Verdicts for the given species rows and indicators of one tile."""
    if agg is None or int(agg.count.sum()) == 0:
        e = Verdict(EMPTY, level=win.level)
        return [e] * len(species_rows), [e] * len(indicators)
    dense = Verdict(DENSE, level=win.level)
    if not (win.inside(rel.grid) and agg.whole):
        return [dense] * len(species_rows), [dense] * len(indicators)
    sp: list[Verdict] = []
    if species_rows:
        assert agg.vmax is not None and agg.vsum is not None  # read for these rows
        rows = np.asarray(species_rows) - agg.first_row
        mx = agg.vmax[:, rows].astype(np.int64)
        sm = agg.vsum[:, rows].astype(np.int64)
        same = (mx.min(axis=0) == mx.max(axis=0)) & (sm == mx * agg.count[:, None]).all(axis=0)
        sp = [
            Verdict(UNIFORM, float(mx[0, i]), win.level) if same[i] else dense
            for i in range(len(rows))
        ]
    order = rel.manifest.indicator_order
    ind: list[Verdict] = []
    for name in indicators:
        assert agg.ind is not None  # read for these indicators
        i = order.index(name)
        cnt, lo, hi = agg.ind[:, i, 0], agg.ind[:, i, 2], agg.ind[:, i, 3]
        v = float(lo[0])
        ok = bool((cnt == agg.full).all() and (lo == hi).all() and (lo == v).all())
        ind.append(Verdict(UNIFORM, v, win.level) if ok and (win.level == 0 or v == 0.0) else dense)
    return sp, ind


@dataclass
class PlanRow:
    tiles: int = 0
    empty: int = 0
    uniform: int = 0
    dense: int = 0
    bytes: float = 0.0
    seconds: float = 0.0

    def add(self, kind: str, nbytes: float, seconds: float) -> None:
        self.tiles += 1
        setattr(self, kind, getattr(self, kind) + 1)
        self.bytes += nbytes
        self.seconds += seconds


@dataclass
class Plan:
    """Per layer and zoom, and in total; and each job's verdict (for the seeder).

    ``seconds`` (per row and in total) is rendering work, summed over tiles; the wall
    time of a seed is ``overhead`` (what a seed does before its first tile: the process
    start, imports, the catalog, the tile list, the workers' start) plus that work and
    ``plan_seconds`` (this plan's own time: a seed plans batch by batch while its
    workers render) spread over ``processes`` workers."""

    rows: dict[tuple[str, int], PlanRow] = field(default_factory=lambda: defaultdict(PlanRow))
    verdicts: dict[tuple[str, str, int, int, int], Verdict] = field(default_factory=dict)
    overhead: float = 0.0
    processes: int = 1
    plan_seconds: float = 0.0

    @property
    def wall_seconds(self) -> float:
        return self.overhead + (self.total.seconds + self.plan_seconds) / max(1, self.processes)

    @property
    def total(self) -> PlanRow:
        t = PlanRow()
        for r in self.rows.values():
            t.tiles += r.tiles
            t.empty += r.empty
            t.uniform += r.uniform
            t.dense += r.dense
            t.bytes += r.bytes
            t.seconds += r.seconds
        return t

    def as_json(self) -> dict[str, Any]:
        def row(r: PlanRow) -> dict[str, Any]:
            return {"tiles": r.tiles, "empty": r.empty, "uniform": r.uniform, "dense": r.dense,
                    "bytes": round(r.bytes), "seconds": round(r.seconds, 2)}  # fmt: skip

        return {
            "total": row(self.total),
            "overhead_seconds": round(self.overhead, 2),
            "plan_seconds": round(self.plan_seconds, 2),
            "processes": self.processes,
            "wall_seconds": round(self.wall_seconds, 2),
            "layers": [
                {"layer": lid, "zoom": z, **row(r)} for (lid, z), r in sorted(self.rows.items())
            ],
        }


def group_by_tile(
    jobs: Iterable[tuple[str, str, int, int, int]],
) -> dict[tuple[str, int, int, int], list[str]]:
    """The layers of each tile (tiles share their window and aggregates)."""
    out: dict[tuple[str, int, int, int], list[str]] = defaultdict(list)
    for layer, tms, z, x, y in jobs:
        out[(tms, z, x, y)].append(layer)
    return out


def constant_tile(
    kind: str, style: Any, fmt: str, value: float, scheme: ClassScheme | None = None
) -> bytes:
    """The tile of a layer that holds ``value`` on every pixel, as the renderer makes it
    (:func:`sdmatlas.serve.tiles.core.render_tile`): the same constant array through the
    same palette and encoder (a class layer's: its ``scheme``'s colours)."""
    from sdmatlas.serve.tiles import render

    shape = (TILE_SIZE, TILE_SIZE)
    if fmt == "npy":
        dtype = np.uint8 if kind in ("species", "classes") else np.float32
        return render.encode_array(np.full(shape, value, dtype))
    if kind == "classes":
        assert scheme is not None
        return render.encode_indexed(np.full(shape, int(value), np.uint8),
                                     render.class_palette(scheme), fmt)  # fmt: skip
    if kind == "species":
        return render.encode_indexed(np.full(shape, int(value), np.uint8),
                                     render.code_palette(style), fmt)  # fmt: skip
    indices = render.palette_indices(np.full(shape, value, np.float32), style)
    return render.encode_indexed(indices, render.index_palette(style), fmt)


@dataclass
class PlanCaches:
    """What a planner keeps between calls in one process: the aggregate readers of each
    release (their decoded chunks) and the sizes of the constant tiles made. A seed that
    plans batch by batch (in the seeding process, or in each Dask worker) keeps one for
    all its batches."""

    readers: dict[str, AggregateReaders] = field(default_factory=dict)
    made: dict[tuple[Any, ...], int] = field(default_factory=dict)


def build_plan(
    svc: Any,
    jobs: list[tuple[str, str, int, int, int]],
    fmt: str,
    colormap: str | None,
    dense_bytes: float = DENSE_BYTES,
    dense_seconds: float = DENSE_SECONDS,
    caches: PlanCaches | None = None,
) -> Plan:
    """Classify every job (layer, tms, z, x, y) and estimate bytes and time."""
    from sdmatlas.serve.tiles import render
    from sdmatlas.serve.tiles.core import layer_style

    plan = Plan()
    refs = {lid: svc.layers.resolve(lid) for lid in {j[0] for j in jobs}}
    # a class layer is drawn in its classes' colours whatever the seed's colormap
    styles = {lid: layer_style(r, None if r.kind == "classes" else colormap, None)
              for lid, r in refs.items()}  # fmt: skip
    caches = caches or PlanCaches()
    made, readers = caches.made, caches.readers
    tiles = group_by_tile(jobs)
    windows = _windows(svc, refs, tiles)
    for (tms, z, x, y), lids in tiles.items():
        by_release: dict[str, list[str]] = defaultdict(list)
        for lid in lids:
            by_release[refs[lid].release].append(lid)
        for release_lids in by_release.values():
            opened = svc.open(refs[release_lids[0]])
            rel: Release = opened.release
            win = windows[(rel.id, tms, z, x, y)]
            sp = [lid for lid in release_lids if refs[lid].kind == "species"]
            ind = [lid for lid in release_lids if refs[lid].kind == "indicator"]
            cl = [lid for lid in release_lids if refs[lid].kind == "classes"]
            rows = [opened.species_row(int(refs[lid].species_id)) for lid in sp]
            reader = readers.setdefault(rel.id, AggregateReaders(rel))
            agg = window_aggregates(rel, win, reader, rows, bool(ind), bool(cl))
            vs, vi = classify(rel, win, agg, rows, [str(refs[lid].indicator) for lid in ind])
            verdicts = dict(zip(sp + ind, vs + vi, strict=True))
            vc = classify_classes(rel, win, agg, [str(refs[lid].indicator) for lid in cl])
            verdicts.update(zip(cl, vc, strict=True))
            for lid in release_lids:
                v = verdicts.get(lid, Verdict(DENSE))  # group layers: dense
                ref = refs[lid]
                if v.kind == EMPTY:
                    nbytes: float = len(render.empty_tile(fmt, ref.dtype))
                elif v.kind == UNIFORM:
                    scheme = opened.scheme(str(ref.indicator)) if ref.kind == "classes" else None
                    key = (ref.kind, styles[lid].key(), fmt, v.value, scheme)
                    if key not in made:
                        made[key] = len(
                            constant_tile(ref.kind, styles[lid], fmt, float(v.value or 0), scheme)
                        )
                    nbytes = made[key]
                else:
                    nbytes = dense_bytes
                plan.verdicts[(lid, tms, z, x, y)] = v
                work = WRITE_SECONDS + (dense_seconds if v.kind == DENSE else 0.0)
                plan.rows[(lid, z)].add(v.kind, nbytes, work)
    return plan


def _windows(
    svc: Any, refs: dict[str, Any], tiles: dict[tuple[str, int, int, int], list[str]]
) -> dict[tuple[str, str, int, int, int], Window]:
    """The window of every tile over each release of its layers, keyed (release id, tms,
    z, x, y): one :func:`tile_windows` call per release and matrix set."""
    wanted: dict[tuple[str, str], tuple[Release, list[tuple[int, int, int]]]] = {}
    for (tms, z, x, y), lids in tiles.items():
        for ref in {refs[lid].release: refs[lid] for lid in lids}.values():
            rel: Release = svc.open(ref).release
            wanted.setdefault((rel.id, tms), (rel, []))[1].append((z, x, y))
    out: dict[tuple[str, str, int, int, int], Window] = {}
    for (rid, tms), (rel, zxy) in wanted.items():
        for t, win in zip(zxy, tile_windows(tms, zxy, rel.grid, rel.n_levels), strict=True):
            out[(rid, tms, *t)] = win
    return out


def batch_verdicts(
    svc: Any, batch: list[tuple[str, str, int, int, int]], fmt: str, colormap: str | None,
    caches: PlanCaches,
) -> list[Verdict | None]:  # fmt: skip
    """The verdicts of a seed's batch of jobs, in its order (a seed planning as it goes)."""
    planned = build_plan(svc, batch, fmt, colormap, caches=caches).verdicts
    return [planned.get(j) for j in batch]


SAMPLE = 32
"""Dense tiles the planner renders to measure their size and time (``seed --sample``)."""


@dataclass(frozen=True)
class Sample:
    """What rendering a sample of the plan's dense tiles measured, per zoom: a tile's
    bytes, its own seconds (reading, colouring, encoding) and the seconds of a tile's
    index map, which a seed builds once for all the layers of a tile."""

    tiles: int
    tile_bytes: dict[int, float]
    seconds: dict[int, float]
    index_seconds: dict[int, float] = field(default_factory=dict)


def sample_dense(
    svc: Any, plan: Plan, fmt: str, colormap: str | None, n: int = SAMPLE, seed: int = 0
) -> Sample | None:
    """Render up to ``n`` of the plan's dense tiles, drawn at random in proportion to each
    zoom's dense tiles (at least one a zoom while ``n`` allows), through the renderer with
    no tile cache (the chunk cache starts as a seed worker's would): the mean bytes and
    seconds of a dense tile at each zoom. Group layers (computed on request) are left
    out. None when there is nothing to sample."""
    import random

    from sdmatlas.serve.tiles.core import TileRequest, layer_style, render_tile
    from sdmatlas.serve.tiles.versions import Timer

    by_zoom: dict[int, list[tuple[str, str, int, int, int]]] = defaultdict(list)
    for key, v in plan.verdicts.items():
        if v.kind == DENSE and ":group:" not in key[0]:
            by_zoom[key[2]].append(key)
    total = sum(len(v) for v in by_zoom.values())
    if not total or n <= 0:
        return None
    rng = random.Random(seed)
    picks: list[tuple[str, str, int, int, int]] = []
    for _z, keys in sorted(by_zoom.items()):
        k = max(1, round(n * len(keys) / total)) if len(picks) < n else 0
        picks += rng.sample(keys, min(k, len(keys)))
    sizes: dict[int, list[float]] = defaultdict(list)
    times: dict[int, list[float]] = defaultdict(list)
    index: dict[int, list[float]] = defaultdict(list)
    seen: set[tuple[str, int, int, int]] = set()
    for lid, tms, z, x, y in picks:
        ref = svc.layers.resolve(lid)
        style = layer_style(ref, None if ref.kind == "classes" else colormap, None)
        req = TileRequest.of(lid, tms, z, x, y, fmt)
        timer = Timer()
        t0 = time.perf_counter()
        body, _ = render_tile(svc, ref, None, req, style, timer)
        took = time.perf_counter() - t0
        built = sum(ms for name, ms in timer.spans if name == "index") / 1000
        if (tms, z, x, y) not in seen:  # built here, not taken from the index cache
            index[z].append(built)
            seen.add((tms, z, x, y))
        times[z].append(took - built)
        sizes[z].append(float(len(body)))
    return Sample(len(picks), _means(sizes), _means(times), _means(index))


def _means(values: dict[int, list[float]]) -> dict[int, float]:
    return {z: sum(v) / len(v) for z, v in values.items() if v}


def calibrate(plan: Plan, sample: Sample, dense_bytes: float = DENSE_BYTES,
              dense_seconds: float = DENSE_SECONDS) -> Plan:  # fmt: skip
    """The plan's dense estimates at the sample's measured size and time (each zoom its
    own; a zoom without a sample tile takes the mean of all of them). A tile's index map
    is counted once per tile position, shared among the dense layers there (a seed goes
    tile by tile, every layer of a tile on one map)."""
    all_b = sum(sample.tile_bytes.values()) / len(sample.tile_bytes)
    all_s = sum(sample.seconds.values()) / len(sample.seconds)
    idx = sample.index_seconds
    all_i = sum(idx.values()) / len(idx) if idx else 0.0
    for (_, z), row in plan.rows.items():
        row.bytes += row.dense * (sample.tile_bytes.get(z, all_b) - dense_bytes)
        row.seconds += row.dense * (sample.seconds.get(z, all_s) - dense_seconds)
    dense = [key for key, v in plan.verdicts.items() if v.kind == DENSE]
    sharing = Counter(key[1:] for key in dense)  # dense layers at each tile position
    for lid, tms, z, x, y in dense:
        plan.rows[(lid, z)].seconds += idx.get(z, all_i) / sharing[(tms, z, x, y)]
    return plan


def process_elapsed() -> float:
    """Seconds since this process started (its start-up and imports included)."""
    import psutil  # type: ignore[import-untyped]

    return max(0.0, time.time() - float(psutil.Process().create_time()))
