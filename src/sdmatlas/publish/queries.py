"""Cross-species queries on a published release: every species at a point, or in an area.

Neither reads one chunk per species. A point reads one ``pixels`` chunk
(8 x 8 pixels x all species). An area is covered hierarchically
(:mod:`sdmatlas.publish.cover`): the aggregates of the coarsest blocks that lie
whole inside it (512, then 64, then 8 pixels), and ``pixels`` only for the 8 x 8
blocks its outline cuts. Its cost grows with the polygon's perimeter times the
species count, not with its area.

A pixel belongs to an area when its centre lies inside the polygon (GDAL's
rasterisation rule); the result equals a pixel-by-pixel computation (tested).
"""

from __future__ import annotations

import contextvars
import os
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from shapely.geometry.base import BaseGeometry

from sdmatlas import budget
from sdmatlas.chunks import ChunkReader
from sdmatlas.classes import class_counts
from sdmatlas.publish import aggregates
from sdmatlas.publish.cover import Cover, cover
from sdmatlas.quantize import NODATA, SCALE
from sdmatlas.release import Release, layout


@dataclass(frozen=True)
class PointResult:
    inside: bool
    row: int
    col: int
    species_ids: npt.NDArray[np.int64]
    codes: npt.NDArray[np.uint8]  # NODATA outside the territory

    @property
    def probabilities(self) -> npt.NDArray[np.float32]:
        return np.where(self.codes == NODATA, np.nan, self.codes * np.float32(SCALE)).astype(
            np.float32
        )


@dataclass(frozen=True)
class IndicatorSummary:
    """An indicator over an area's pixels with a value. On an equal-area grid (EPSG:3035)
    every pixel has the same area, so the mean is the area-weighted mean."""

    pixels: int
    mean: float
    min: float
    max: float


@dataclass(frozen=True)
class AreaResult:
    n_pixels: int
    area_km2: float
    species_ids: npt.NDArray[np.int64]
    mean_probability: npt.NDArray[np.float64]
    expected_area_km2: npt.NDArray[np.float64]
    max_probability: npt.NDArray[np.float64]
    blocks_aggregated: dict[int, int]
    """edge -> whole blocks of that edge answered from their aggregates"""
    blocks_read: int
    """8 x 8 pixel chunks read (blocks the outline cuts)"""
    pixels_exact: int
    """pixels counted one by one (in the chunks read); the others came from aggregates"""
    indicators: dict[str, IndicatorSummary | None]
    classes: dict[str, npt.NDArray[np.int64]] = field(default_factory=dict)
    """Pixels of each class of each class layer (in its scheme's order)."""

    def count_above(self, threshold: float) -> int:
        """Species whose probability reaches ``threshold`` on at least one pixel of the area."""
        return int((self.max_probability >= threshold - 1e-9).sum())


def point(release: Release, x: float, y: float) -> PointResult:
    """Every species' code at the pixel holding projected point (x, y): one chunk read."""
    grid = release.grid
    r, c = (int(v) for v in grid.rowcol(x, y))
    ids = release.species_ids
    if not grid.contains(r, c):
        return PointResult(False, r, c, ids, np.full(len(ids), NODATA, np.uint8))
    pixels = release.pixels()
    bh, bw, _ = pixels.inner
    codes = np.array(pixels.chunk((r // bh, c // bw, 0))[r % bh, c % bw, :], dtype=np.uint8)
    return PointResult(bool(codes.size and codes[0] != NODATA), r, c, ids, codes)


class _Sums:
    """Running totals of an area query (one per worker, merged at the end)."""

    def __init__(self, n_species: int, n_indicators: int, n_classes: int = 0) -> None:
        self.classes = np.zeros(n_classes, np.int64)
        self.total = np.zeros(n_species, np.int64)
        self.vmax = np.zeros(n_species, np.int64)
        self.pixels = 0
        self.exact = 0
        self.read = 0
        self.fine_whole = 0
        self.ind = np.zeros((n_indicators, 4))
        self.ind[:, 2], self.ind[:, 3] = np.inf, -np.inf

    def add_blocks(self, bsum: Any, bmax: Any, count: Any, ind: Any) -> None:
        """Whole blocks: ``bsum[k, S]``, ``bmax[k, S]``, ``count[k]``, ``ind[k, I, 4]``."""
        if not len(count):
            return
        self.total += bsum.sum(axis=0, dtype=np.int64)
        self.vmax = np.maximum(self.vmax, bmax.max(axis=0))
        self.pixels += int(count.sum())
        self.fold(aggregates.merge_indicators(ind, axis=0))

    def fold(self, ind: npt.NDArray[np.float64]) -> None:
        self.ind[:, :2] += ind[:, :2]
        self.ind[:, 2] = np.fmin(self.ind[:, 2], ind[:, 2])
        self.ind[:, 3] = np.fmax(self.ind[:, 3], ind[:, 3])

    def merge(self, other: _Sums) -> None:
        self.classes += other.classes
        self.total += other.total
        self.vmax = np.maximum(self.vmax, other.vmax)
        self.pixels += other.pixels
        self.exact += other.exact
        self.read += other.read
        self.fine_whole += other.fine_whole
        self.fold(other.ind)


class _Source:
    """The arrays an area query reads, as chunk readers, with the last decoded chunks of
    the per-pixel 2-D arrays (territory, indicators) kept: boundary blocks come in
    spatial order (the children of one coarse block together), so neighbours share them.
    At most ``KEEP`` chunks (64 MB of float32 256 x 256 chunks), whatever the outline."""

    KEEP = 256

    def __init__(self, release: Release, indicators: list[str]) -> None:
        self.release = release
        self.indicators = indicators
        self.class_layers = list(release.manifest.class_layers.items())
        self._decoded: OrderedDict[tuple[int, int, int], npt.NDArray[Any]] = OrderedDict()
        self._lock = threading.Lock()

    def window(self, r: ChunkReader, ys: slice, xs: slice) -> npt.NDArray[Any]:
        """Rows ``ys`` and columns ``xs`` of a 2-D array, from cached decoded chunks."""
        rid = id(r)  # the release keeps one reader per array
        ch, cw = r.inner
        out = np.empty((ys.stop - ys.start, xs.stop - xs.start), r.dtype)
        for cy in range(ys.start // ch, (ys.stop - 1) // ch + 1):
            for cx in range(xs.start // cw, (xs.stop - 1) // cw + 1):
                key = (rid, cy, cx)
                with self._lock:
                    chunk = self._decoded.get(key)
                    if chunk is not None:
                        self._decoded.move_to_end(key)
                if chunk is None:
                    chunk = r.chunk((cy, cx))
                    with self._lock:
                        self._decoded[key] = chunk
                        if len(self._decoded) > self.KEEP:
                            self._decoded.popitem(last=False)
                y0, x0 = max(ys.start, cy * ch), max(xs.start, cx * cw)
                y1, x1 = min(ys.stop, (cy + 1) * ch), min(xs.stop, (cx + 1) * cw)
                out[y0 - ys.start : y1 - ys.start, x0 - xs.start : x1 - xs.start] = chunk[
                    y0 - cy * ch : y1 - cy * ch, x0 - cx * cw : x1 - cx * cw
                ]
        return out

    def blocks(self, edge: int, cy: int, cx: int) -> tuple[Any, Any, Any, Any]:
        """One chunk (8 x 8 blocks) of each aggregate of ``edge``."""
        agg = self.release.aggregate
        return (
            agg(edge, "sum").chunk((cy, cx, 0)),
            agg(edge, "max").chunk((cy, cx, 0)),
            agg(edge, "count").chunk((cy, cx)),
            agg(edge, "indicators").chunk((cy, cx, 0, 0)),
        )

    def class_blocks(self, edge: int, cy: int, cx: int) -> npt.NDArray[Any] | None:
        """One chunk (8 x 8 blocks) of the class counts of ``edge`` (None: no class layer)."""
        if not self.class_layers:
            return None
        return self.release.aggregate(edge, layout.CLASS_COUNTS).chunk((cy, cx, 0))

    def count_classes(self, ys: slice, xs: slice, pick: npt.NDArray[np.bool_]) -> npt.NDArray[Any]:
        """The class counts of the picked pixels of a window, every class layer's."""
        parts = []
        for name, entry in self.class_layers:
            values = self.window(self.release.level(0, name), ys, xs)[pick]
            parts.append(class_counts(values, entry.scheme))
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def _whole_blocks(src: _Source, sums: _Sums, edge: int, idx: npt.NDArray[np.intp]) -> None:
    """Add whole blocks of ``edge``, reading each aggregate chunk once."""
    if not len(idx):
        return
    k = aggregates.CHUNK_BLOCKS
    order = np.lexsort((idx[:, 1] // k, idx[:, 0] // k))
    idx = idx[order]
    keys = idx // k
    starts = np.flatnonzero(np.r_[True, np.any(keys[1:] != keys[:-1], axis=1)])
    for a, b in zip(starts, np.r_[starts[1:], len(idx)], strict=True):
        budget.check_deadline()
        bsum, bmax, count, ind = src.blocks(edge, int(keys[a, 0]), int(keys[a, 1]))
        ys, xs = idx[a:b, 0] % k, idx[a:b, 1] % k
        sums.add_blocks(bsum[ys, xs], bmax[ys, xs], count[ys, xs], ind[ys, xs])
        cls = src.class_blocks(edge, int(keys[a, 0]), int(keys[a, 1]))
        if cls is not None:
            sums.classes += cls[ys, xs].sum(axis=0, dtype=np.int64)


def _boundary_block(src: _Source, c: Cover, i: int, sums: _Sums) -> None:
    """One boundary block: territory and mask decide, per 8 x 8 block inside it, between
    its aggregates (every territory pixel selected) and its pixels (some)."""
    budget.check_deadline()
    ys, xs = c.window(i)
    terr = src.window(src.release.territory(), ys, xs) == 1
    sel = c.masks[i] & terr
    if not sel.any():
        return
    f = c.edge // aggregates.FANOUT  # the finest edge, = the pixel chunk's edge
    h, w = sel.shape
    ph, pw = -(-h // f) * f, -(-w // f) * f
    sp = np.zeros((ph, pw), bool)
    sp[:h, :w] = sel
    n_sel, n_val = aggregates.block_counts(sel, f), aggregates.block_counts(terr, f)
    whole = (n_sel > 0) & (n_sel == n_val)
    part = (n_sel > 0) & ~whole
    if whole.any():
        by, bx = (int(v) for v in c.boundary[i])
        bsum, bmax, count, ind = src.blocks(f, by, bx)
        pick = np.zeros(count.shape, bool)
        pick[: whole.shape[0], : whole.shape[1]] = whole
        sums.add_blocks(bsum[pick], bmax[pick], count[pick], ind[pick])
        cls = src.class_blocks(f, by, bx)
        if cls is not None:
            sums.classes += cls[pick].sum(axis=0, dtype=np.int64)
        sums.fine_whole += int(whole.sum())
    if not part.any():
        return
    pixels = src.release.pixels()
    exact = np.zeros((ph, pw), bool)
    cells = list(zip(*np.nonzero(part), strict=True))
    # the block's pixel chunks in one batch (one round of ranged GETs on an object store)
    chunks = pixels.chunks(
        [(ys.start // f + int(fy), xs.start // f + int(fx), 0) for fy, fx in cells]
    )
    for (fy, fx), chunk in zip(cells, chunks, strict=True):
        m = sp[fy * f : (fy + 1) * f, fx * f : (fx + 1) * f]
        exact[fy * f : (fy + 1) * f, fx * f : (fx + 1) * f] = m
        # rows [n, S] of the picked pixels: contiguous over species, so that the sum and
        # the maximum run along S (uint32 holds 64 x 254)
        picked = chunk[m]
        sums.total += np.add.reduce(picked, axis=0, dtype=np.uint32)
        np.maximum(sums.vmax, np.maximum.reduce(picked, axis=0), out=sums.vmax)
        sums.read += 1
    n = int(exact.sum())
    sums.pixels += n
    sums.exact += n
    ex = exact[:h, :w]
    values = np.stack(
        [src.window(src.release.level(0, name), ys, xs)[ex] for name in src.indicators]
    )
    sums.fold(aggregates.summarize(values))
    if src.class_layers:
        sums.classes += src.count_classes(ys, xs, ex)


def area(
    release: Release,
    geom: BaseGeometry,
    plan: Cover | None = None,
    workers: int | None = None,
) -> AreaResult:
    """Per-species mean probability, expected occupied area and maximum within ``geom``
    (grid CRS), and each indicator's summary. ``plan`` is ``cover(grid, geom)`` when the
    caller already has it (to check its cost first)."""
    grid = release.grid
    ids = release.species_ids
    s = len(ids)
    names = list(release.manifest.indicator_order)
    c = plan if plan is not None else cover(grid, geom)
    src = _Source(release, names)
    n_classes = sum(len(e.scheme.classes) for _, e in src.class_layers)
    total = _Sums(s, len(names), n_classes)
    for edge, idx in c.whole.items():
        _whole_blocks(src, total, edge, idx)
    n = len(c.boundary)
    workers = workers or min(4, os.cpu_count() or 1)
    parts = [_Sums(s, len(names), n_classes) for _ in range(max(1, min(workers, n)))]
    if len(parts) == 1:
        _run_slice(src, c, 0, 1, parts[0])
    elif n:
        # zstd and numpy release the GIL: boundary blocks run on a few threads
        with ThreadPoolExecutor(len(parts)) as pool:
            futures = [
                pool.submit(contextvars.copy_context().run, _run_slice, src, c, k, len(parts), p)
                for k, p in enumerate(parts)
            ]
            for fut in futures:
                fut.result()
    for p in parts:
        total.merge(p)
    npx = total.pixels
    pixel_km2 = (grid.res / 1000.0) ** 2
    p_sum = np.asarray(total.total * SCALE, np.float64)
    return AreaResult(
        n_pixels=npx,
        area_km2=npx * pixel_km2,
        species_ids=ids,
        mean_probability=p_sum / npx if npx else np.full(s, np.nan),
        expected_area_km2=p_sum * pixel_km2,
        max_probability=np.asarray(total.vmax * SCALE if npx else np.full(s, np.nan), np.float64),
        blocks_aggregated={
            **{e: len(v) for e, v in c.whole.items()},
            c.edge // aggregates.FANOUT: total.fine_whole,
        },
        blocks_read=total.read,
        pixels_exact=total.exact,
        indicators={
            name: IndicatorSummary(int(row[0]), row[1] / row[0], row[2], row[3])
            if row[0] > 0
            else None
            for name, row in zip(names, total.ind.tolist(), strict=True)
        },
        classes=_split(total.classes, src.class_layers),
    )


def _split(counts: npt.NDArray[np.int64], layers: list[tuple[str, Any]]) -> dict[str, Any]:
    """The concatenated class counts, per class layer."""
    out, start = {}, 0
    for name, entry in layers:
        k = len(entry.scheme.classes)
        out[name] = counts[start : start + k]
        start += k
    return out


def _run_slice(src: _Source, c: Cover, k: int, step: int, sums: _Sums) -> None:
    for i in range(k, len(c.boundary), step):
        _boundary_block(src, c, i, sums)
