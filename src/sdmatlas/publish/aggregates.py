"""Block aggregates of a release at several edges: what area queries read instead of pixels.

At edge 8, for every 8 x 8 block of the grid: per species, the sum and the maximum of
the codes over the block's territory pixels; the number of territory pixels; and per
indicator the count, sum, minimum and maximum of its finite values. Edges 64 and 512
are built from the edge below, each block from its 8 x 8 children (sums and counts add,
maxima and minima fold), chunk by chunk: a tree, so memory stays at one chunk of the
finer level whatever the extent.

Every aggregate array is chunked 8 x 8 blocks (x all species), so one chunk of edge
``e`` covers exactly one block of edge ``8 e``: a query that refines a boundary block
of edge ``8 e`` reads one chunk of edge ``e``. The layout (paths below a release) is::

    blocks/<edge>/sum          uint16 (edge 8: at most 64 x 254) or uint32 [by, bx, species]
    blocks/<edge>/max          uint8  [by, bx, species]
    blocks/<edge>/count        uint16 or uint32 [by, bx]: territory pixels
    blocks/<edge>/indicators   float64 [by, bx, indicator, 4]: count, sum, min, max
                               of the finite values (min and max NaN when count is 0)

Cost: edge 8 adds 3 bytes per 64 pixels and species (about 4.7 % of the raw codes);
each coarser edge adds 1/64 of the one below (about 0.08 % and 0.001 %).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
import zarr
from zarr.codecs import ZstdCodec

from sdmatlas.quantize import NODATA
from sdmatlas.release import layout
from sdmatlas.zarr_access import array

EDGES: tuple[int, ...] = (8, 64, 512)
"""Block edges (pixels), finest first. Each is FANOUT times the one before."""
FANOUT = 8
CHUNK_BLOCKS = 8
"""Blocks per chunk side of every aggregate array (one chunk = one parent block)."""
IND_FIELDS = ("count", "sum", "min", "max")


def sum_dtype(edge: int) -> np.dtype[Any]:
    return np.dtype(np.uint16 if edge * edge * 254 < 2**16 else np.uint32)


def count_dtype(edge: int) -> np.dtype[Any]:
    return np.dtype(np.uint16 if edge * edge < 2**16 else np.uint32)


def block_shape(height: int, width: int, edge: int) -> tuple[int, int]:
    return -(-height // edge), -(-width // edge)


def _pad(a: npt.NDArray[Any], edge: int, fill: Any, axes: tuple[int, int]) -> npt.NDArray[Any]:
    """``a`` padded with ``fill`` on ``axes`` (y, x) to multiples of ``edge``."""
    pad = [(0, 0)] * a.ndim
    for ax in axes:
        pad[ax] = (0, (-a.shape[ax]) % edge)
    return np.pad(a, pad, constant_values=fill) if any(p[1] for p in pad) else a


def block_counts(mask: npt.NDArray[np.bool_], edge: int) -> npt.NDArray[np.int64]:
    """``[by, bx]``: the True pixels of ``mask[y, x]`` in each block of ``edge`` pixels
    (a partial last row or column of blocks counts what it has)."""
    m = _pad(mask, edge, False, (0, 1))
    h, w = m.shape
    out: npt.NDArray[np.int64] = m.reshape(h // edge, edge, w // edge, edge).sum(
        axis=(1, 3), dtype=np.int64
    )
    return out


def reduce_codes(
    codes: npt.NDArray[np.uint8], valid: npt.NDArray[np.bool_], edge: int = EDGES[0]
) -> tuple[npt.NDArray[Any], npt.NDArray[np.uint8], npt.NDArray[Any]]:
    """Block sums ``[by, bx, species]``, maxima and territory-pixel counts ``[by, bx]`` of
    ``codes[species, y, x]`` (NODATA off the territory), over blocks of ``edge`` pixels."""
    s = codes.shape[0]
    c = np.where(codes == NODATA, np.uint8(0), codes)
    c = _pad(c, edge, 0, (1, 2))
    _, ph, pw = c.shape
    blocks = c.reshape(s, ph // edge, edge, pw // edge, edge)
    bsum = blocks.sum(axis=(2, 4), dtype=np.uint32).astype(sum_dtype(edge)).transpose(1, 2, 0)
    bmax = blocks.max(axis=(2, 4)).transpose(1, 2, 0)
    count = block_counts(valid, edge)
    return (
        np.ascontiguousarray(bsum),
        np.ascontiguousarray(bmax),
        count.astype(count_dtype(edge)),
    )


def reduce_indicators(
    values: npt.NDArray[np.float32], edge: int = EDGES[0]
) -> npt.NDArray[np.float64]:
    """``[by, bx, indicator, 4]``: count, sum, min and max of the finite values of
    ``values[indicator, y, x]`` over blocks of ``edge`` pixels (min, max NaN if none)."""
    n = values.shape[0]
    v = _pad(values.astype(np.float64), edge, np.nan, (1, 2))
    _, ph, pw = v.shape
    b = v.reshape(n, ph // edge, edge, pw // edge, edge).transpose(1, 3, 0, 2, 4)
    return summarize(b.reshape(ph // edge, pw // edge, n, edge * edge))


def summarize(values: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    """``[..., 4]``: count, sum, min, max of the finite values along the last axis."""
    fin = np.isfinite(values)
    out = np.empty((*values.shape[:-1], 4))
    out[..., 0] = fin.sum(axis=-1)
    out[..., 1] = np.where(fin, values, 0.0).sum(axis=-1, dtype=np.float64)
    out[..., 2] = np.where(fin, values, np.inf).min(axis=-1, initial=np.inf)
    out[..., 3] = np.where(fin, values, -np.inf).max(axis=-1, initial=-np.inf)
    empty = out[..., 0] == 0
    out[..., 2][empty] = np.nan
    out[..., 3][empty] = np.nan
    return out


def merge_indicators(parts: npt.NDArray[np.float64], axis: int) -> npt.NDArray[np.float64]:
    """Fold indicator aggregates ``[..., indicator, 4]`` along ``axis`` (NaN-aware)."""
    out = np.empty(np.delete(parts.shape, axis).tolist())
    out[..., 0] = parts[..., 0].sum(axis=axis)
    out[..., 1] = parts[..., 1].sum(axis=axis)
    with warnings.catch_warnings():  # an all-NaN fold is NaN, as meant
        warnings.simplefilter("ignore", RuntimeWarning)
        out[..., 2] = np.nanmin(parts[..., 2], axis=axis)
        out[..., 3] = np.nanmax(parts[..., 3], axis=axis)
    return out


def coarsen(
    bsum: npt.NDArray[Any],
    bmax: npt.NDArray[np.uint8],
    count: npt.NDArray[Any],
    ind: npt.NDArray[np.float64],
    edge: int,
) -> tuple[npt.NDArray[Any], npt.NDArray[np.uint8], npt.NDArray[Any], npt.NDArray[np.float64]]:
    """Aggregates of edge ``edge`` from those of edge ``edge / FANOUT`` (children
    ``[8 BY : 8 BY + 8, 8 BX : 8 BX + 8]``; a partial last row or column is padded)."""
    f = FANOUT
    s = bsum.shape[2]
    bs = _pad(bsum.astype(np.uint32), f, 0, (0, 1))
    h, w = bs.shape[0] // f, bs.shape[1] // f
    csum = bs.reshape(h, f, w, f, s).sum(axis=(1, 3), dtype=np.uint32).astype(sum_dtype(edge))
    cmax = _pad(bmax, f, 0, (0, 1)).reshape(h, f, w, f, s).max(axis=(1, 3))
    cnt = _pad(count.astype(np.uint32), f, 0, (0, 1)).reshape(h, f, w, f).sum(axis=(1, 3))
    n = ind.shape[2]
    ip = _pad(ind, f, np.nan, (0, 1))
    ip[..., 0] = np.nan_to_num(ip[..., 0])
    ip[..., 1] = np.nan_to_num(ip[..., 1])
    parts = ip.reshape(h, f, w, f, n, 4).transpose(0, 2, 4, 5, 1, 3).reshape(h, w, n, 4, f * f)
    folded = merge_indicators(np.moveaxis(parts, -1, 0), axis=0)
    return csum, cmax, cnt.astype(count_dtype(edge)), folded


def create(
    root: zarr.Group,
    height: int,
    width: int,
    n_species: int,
    n_indicators: int,
    edges: tuple[int, ...] = EDGES,
    shard: int | None = None,
    n_classes: int = 0,
) -> None:
    """Empty aggregate arrays of ``edges`` (by default every edge) in ``root``; with
    ``shard`` (pixels, a multiple of 64), the finest edge is stored in shards of that
    many pixels a side (one publish task's tile). ``n_classes``: the columns of the class
    counts (every class of every class layer; none: no such array)."""
    for edge in edges:
        bh, bw = block_shape(height, width, edge)
        sb = shard // edge if shard and edge == EDGES[0] else None
        if n_classes:
            root.create_array(
                layout.aggregate(edge, layout.CLASS_COUNTS),
                shape=(bh, bw, n_classes),
                chunks=(CHUNK_BLOCKS, CHUNK_BLOCKS, n_classes),
                shards=(sb, sb, n_classes) if sb else None,
                dtype="uint32",
                fill_value=0,
                compressors=ZstdCodec(level=3),
                dimension_names=("by", "bx", "class"),
            )
        for name, dtype in (("sum", sum_dtype(edge)), ("max", np.dtype(np.uint8))):
            root.create_array(
                layout.aggregate(edge, name),
                shape=(bh, bw, n_species),
                chunks=(CHUNK_BLOCKS, CHUNK_BLOCKS, max(n_species, 1)),
                shards=(sb, sb, max(n_species, 1)) if sb else None,
                dtype=dtype,
                fill_value=0,
                compressors=ZstdCodec(level=3),
                dimension_names=("by", "bx", "species"),
                attributes={"edge": edge},
            )
        root.create_array(
            layout.aggregate(edge, "count"),
            shape=(bh, bw),
            chunks=(CHUNK_BLOCKS, CHUNK_BLOCKS),
            shards=(sb, sb) if sb else None,
            dtype=count_dtype(edge),
            fill_value=0,
            compressors=ZstdCodec(level=3),
            dimension_names=("by", "bx"),
        )
        root.create_array(
            layout.aggregate(edge, "indicators"),
            shape=(bh, bw, n_indicators, 4),
            chunks=(CHUNK_BLOCKS, CHUNK_BLOCKS, max(n_indicators, 1), 4),
            shards=(sb, sb, max(n_indicators, 1), 4) if sb else None,
            dtype="float64",
            fill_value=np.nan,
            compressors=ZstdCodec(level=3),
            dimension_names=("by", "bx", "indicator", "field"),
        )


def _chunks(bh: int, bw: int, step: int) -> Iterator[tuple[slice, slice]]:
    for y in range(0, bh, step):
        for x in range(0, bw, step):
            yield slice(y, min(y + step, bh)), slice(x, min(x + step, bw))


NAMES = ("sum", "max", "count", "indicators")


def coarsen_chunk(
    fine: dict[str, npt.NDArray[Any]], rows: int, cols: int, coarse: int
) -> dict[str, npt.NDArray[Any]]:
    """``rows`` x ``cols`` blocks of edge ``coarse`` (one chunk of it) from the finer
    aggregates below them (``fine``, by name; a partial last row or column is shorter),
    each block from its own 8 x 8 fine blocks by :func:`coarsen`."""
    out: dict[str, npt.NDArray[Any]] = {}
    for by in range(rows):
        for bx in range(cols):
            sy, sx = slice(by * FANOUT, (by + 1) * FANOUT), slice(bx * FANOUT, (bx + 1) * FANOUT)
            # contiguous copies: numpy's float sums follow the memory layout, and the last
            # bits must not depend on how the fine blocks were read
            parts = [np.ascontiguousarray(fine[n][sy, sx]) for n in NAMES]
            one: tuple[npt.NDArray[Any], ...] = coarsen(
                parts[0], parts[1], parts[2], parts[3], coarse
            )
            for n, v in zip(NAMES, one, strict=True):
                if n not in out:
                    out[n] = np.empty((rows, cols, *v.shape[2:]), v.dtype)
                out[n][by, bx] = v[0, 0]
    return out


def coarsen_classes(counts: npt.NDArray[np.uint32], rows: int, cols: int) -> npt.NDArray[np.uint32]:
    """``[rows, cols, class]`` class counts of the coarser edge from the finer ones below
    (``counts[8 rows, 8 cols, class]``, a partial last row or column shorter): sums."""
    c = _pad(np.asarray(counts, np.uint32), FANOUT, 0, (0, 1))
    n = c.shape[2]
    out: npt.NDArray[np.uint32] = c.reshape(
        c.shape[0] // FANOUT, FANOUT, c.shape[1] // FANOUT, FANOUT, n
    ).sum(axis=(1, 3), dtype=np.uint32)[:rows, :cols]
    return out


def build_tree(root: zarr.Group, height: int, width: int) -> None:
    """Edges 64, 512, ... from the finest in one process, one coarse chunk at a time
    (``publish`` runs the same per chunk as tasks: ``sdmatlas.publish.tasks``)."""
    for fine, coarse in itertools.pairwise(EDGES):
        src = {n: array(root, layout.aggregate(fine, n)) for n in NAMES}
        dst = {n: array(root, layout.aggregate(coarse, n)) for n in NAMES}
        ch, cw = block_shape(height, width, coarse)
        for cys, cxs in _chunks(ch, cw, CHUNK_BLOCKS):
            fy = slice(cys.start * FANOUT, cys.stop * FANOUT)
            fx = slice(cxs.start * FANOUT, cxs.stop * FANOUT)
            region = {n: np.asarray(a[fy, fx]) for n, a in src.items()}
            acc = coarsen_chunk(region, cys.stop - cys.start, cxs.stop - cxs.start, coarse)
            for n in NAMES:
                dst[n][cys, cxs] = acc[n]
