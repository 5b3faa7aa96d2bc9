"""The per-pixel loops of a window's index map, compiled with numba.

:func:`sdmatlas.serve.tiles.tiling.window_index` transforms a lattice of pixel centres
exactly (PROJ) and interpolates the rest. In NumPy the per-pixel part (bilinear
interpolation, floors, the near-an-edge test, the inside mask, the window bounds and
the flat offsets) takes a dozen passes over the window's 65,536 pixels and temporary
arrays: ~1.1 ms a tile, most of a seed's time when each tile is drawn for one layer.
Here it is two passes, written out by hand for that reason (~0.2 ms). The NumPy code
stays in ``tiling.py`` as the reference: tests compare the two, and both with the
exact transform of every pixel.

Compiled on first use and cached on disk (numba's ``cache=True``: ``__pycache__``
beside this file, or ``NUMBA_CACHE_DIR``), so a new process loads it instead of
compiling it again.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]


@numba.njit(cache=True, nogil=True)
def lattice_floors(
    lx: F64, ly: F64, kj: Any, tj: F64, ki: Any, ti: F64,
    x0: float, y0: float, res: float, tol: float, width: int, height: int,
) -> tuple[Any, Any, Any, Any]:  # fmt: skip
    """The level pixel (row, column) under each window pixel, from the bilinear
    interpolation of the lattice's grid coordinates (``lx``, ``ly``): window row ``j``
    lies between lattice rows ``kj[j]`` and ``kj[j] + 1`` at fraction ``tj[j]``, columns
    alike. Rows and columns are clamped to [-1, height] and [-1, width] (both ends
    outside the level). Also the pixels within ``tol`` of a pixel edge,
    for the caller to transform exactly.

    The interpolation goes along the lattice's rows first, then along each window row
    (the order of ``tiling._bilinear``); positions are multiplied by ``1 / res`` rather
    than divided: the last-bit differences either way are far below ``tol``, whose
    pixels are transformed exactly."""
    h, w, m = kj.shape[0], ki.shape[0], lx.shape[1]
    rows = np.empty((h, w), np.int32)
    cols = np.empty((h, w), np.int32)
    near = np.empty((h, w), np.uint8)
    rx, ry = np.empty(m), np.empty(m)
    fx, fy = np.empty(w), np.empty(w)
    inv, hi = 1.0 / res, 1 - tol
    wl, hl = width + 0.5, height + 0.5
    total = 0
    for j in range(h):
        a, t = kj[j], tj[j]
        for q in range(m):  # this window row's lattice values, interpolated across rows
            rx[q] = (1 - t) * lx[a, q] + t * lx[a + 1, q]
            ry[q] = (1 - t) * ly[a, q] + t * ly[a + 1, q]
        for i in range(w):
            b, s = ki[i], ti[i]
            fx[i] = ((1 - s) * rx[b] + s * rx[b + 1] - x0) * inv
            fy[i] = (y0 - ((1 - s) * ry[b] + s * ry[b + 1])) * inv
        # branch-free, so that LLVM vectorises it (3x faster than with branches)
        for i in range(w):
            # clamped to the middle of the outside pixels -1 and width (height): int32-safe,
            # never near an edge, still outside
            x = min(max(fx[i], -0.5), wl)
            y = min(max(fy[i], -0.5), hl)
            c, r = np.floor(x), np.floor(y)
            dx, dy = x - c, y - r
            f = (dx < tol) | (dx > hi) | (dy < tol) | (dy > hi)
            near[j, i] = f
            total += f
            cols[j, i] = np.int32(c)
            rows[j, i] = np.int32(r)
    near_j, near_i = np.empty(total, np.int64), np.empty(total, np.int64)
    if total:
        k = 0
        for j in range(h):
            for i in range(w):
                if near[j, i]:
                    near_j[k], near_i[k] = j, i
                    k += 1
    return rows, cols, near_j, near_i


@numba.njit(cache=True, nogil=True)
def index_arrays(
    rows: Any, cols: Any, width: int, height: int, near_j: Any, near_i: Any, fc: F64, fr: F64
) -> tuple[Any, int, int, int, int, Any, Any]:
    """Completes :class:`TileIndex`'s arrays in place from clamped rows and columns:
    first the near-edge pixels (``near_j``, ``near_i``) get their exact floors ``fc``,
    ``fr`` (NaN or inf: outside); then -1 in both where a pixel is outside the level
    (``width`` x ``height`` pixels). Returns the inside mask, the window of the level
    touched (r0, c0, h, w: h = 0 when nothing is inside) and the flat offsets of the
    inside pixels, in C order, in that window: int32 where the window has fewer than
    2**31 pixels (the second array then empty), else int64 (the first empty).

    The main pass is branch-free (selects: LLVM vectorises it); a window wholly inside
    the level (most tiles) then takes no compaction."""
    for k in range(near_j.shape[0]):
        c, r = fc[k], fr[k]
        cols[near_j[k], near_i[k]] = np.int32(min(max(c, -1.0), width)) if np.isfinite(c) else -1
        rows[near_j[k], near_i[k]] = np.int32(min(max(r, -1.0), height)) if np.isfinite(r) else -1
    ht, wt = rows.shape
    inside = np.empty((ht, wt), np.bool_)
    r0, c0, r1, c1, n = height, width, -1, -1, 0
    for j in range(ht):
        for i in range(wt):
            r, c = rows[j, i], cols[j, i]
            ok = (c >= 0) & (c < width) & (r >= 0) & (r < height)
            inside[j, i] = ok
            n += ok
            r0 = min(r0, r if ok else height)
            r1 = max(r1, r if ok else -1)
            c0 = min(c0, c if ok else width)
            c1 = max(c1, c if ok else -1)
    if n == 0:
        rows[:] = -1
        cols[:] = -1
        return inside, 0, 0, 0, 0, np.zeros(0, np.int32), np.zeros(0, np.int64)
    h, w = r1 - r0 + 1, c1 - c0 + 1
    narrow = np.int64(h) * w < 2**31
    off32 = np.empty(n if narrow else 0, np.int32)
    off64 = np.empty(0 if narrow else n, np.int64)
    if n == ht * wt and narrow:  # every pixel inside: no compaction (vectorised)
        for j in range(ht):
            for i in range(wt):
                off32[j * wt + i] = np.int32((rows[j, i] - r0) * w + (cols[j, i] - c0))
        return inside, r0, c0, h, w, off32, off64
    k = 0
    for j in range(ht):
        for i in range(wt):
            if not inside[j, i]:
                rows[j, i] = -1
                cols[j, i] = -1
                continue
            o = (np.int64(rows[j, i]) - r0) * w + (cols[j, i] - c0)
            if narrow:
                off32[k] = np.int32(o)
            else:
                off64[k] = o
            k += 1
    return inside, r0, c0, h, w, off32, off64
