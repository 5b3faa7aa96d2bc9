"""From a tile of a TileMatrixSet to the release pixels it shows (nearest neighbour).

A tile's pixels are mapped to the release grid once per (tile, grid, level), and the
map is reused for every species and every request of that tile (bounded LRU). The
mapping is exact nearest neighbour: each tile pixel shows the grid pixel that holds
its centre, as ``rasterio.warp.reproject(..., resampling=nearest)`` does.

Why not transform all 65,536 pixel centres with PROJ: that alone takes 8 to 14 ms per
tile (EPSG:3857 to EPSG:3035 on one core), more than everything else on the request.
Instead the centres of a lattice (every 16 pixels, plus the last row and column: 17 x
17 on a tile) are transformed exactly and the rest interpolated bilinearly, which is
exact to within the interpolation error. That error is measured on each tile at the
lattice's cell centres and edge midpoints, and every pixel whose position falls
within four times that error of a cell edge of the grid is transformed exactly. The
result equals the full transform (tested), at about 2 % of its PROJ calls.

Where a window is small on the grid (tiles zoomed in past the release's resolution,
most of the tiles of a seed), the lattice is coarser: every 64 or 32 pixels. The
interpolation error grows with the square of the spacing, so there it stays far below
a pixel, and the same measure and the same exact transform of the pixels near an edge
keep the map exact; it saves most of the PROJ work (a 5 x 5 lattice and its 9 x 9
check points instead of 17 x 17 and 33 x 33). The spacing is chosen per window from
the error measured on the coarsest lattice, to the least expected PROJ work (the check
points of a finer lattice against the near-edge pixels the coarser one leaves). The
pyramid level is always chosen from the 16-pixel lattice's centre cell, so the
spacing never changes which level a window reads.

The per-pixel part (interpolation, floors, masks, offsets) runs compiled
(:mod:`sdmatlas.serve.tiles.index_kernel`); the NumPy version here is its reference.
"""

from __future__ import annotations

import functools
import importlib
import logging
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import morecantile
import numpy as np
import numpy.typing as npt
from pyproj import CRS, Transformer

from sdmatlas.errors import InvalidInputError, NotFoundError
from sdmatlas.grid import Grid

log = logging.getLogger(__name__)

#: TileMatrixSets served (morecantile's definitions of the OGC TMS 2.0 registry).
TMS_NAMES: tuple[str, ...] = ("WebMercatorQuad", "WGS1984Quad", "EuropeanETRS89_LAEAQuad")
TILE_SIZE = 256
_STEP = 16  # lattice spacing of exactly transformed pixel centres (the finest; the level's)
_STEPS = (64, 32, _STEP)  # the spacings a window's lattice may take, coarsest first

I32 = npt.NDArray[np.int32]
F64 = npt.NDArray[np.float64]


@functools.cache
def get_tms(name: str) -> morecantile.TileMatrixSet:
    """A served TileMatrixSet by name; an unknown name is a 404 naming the accepted ones."""
    if name not in TMS_NAMES:
        raise NotFoundError(
            f"TileMatrixSet {name!r} is not served; use one of {', '.join(TMS_NAMES)}"
        )
    return morecantile.tms.get(name)


def check_tile(tms: morecantile.TileMatrixSet, z: int, x: int, y: int) -> None:
    """404 unless (z, x, y) is a tile of the matrix set."""
    if not tms.minzoom <= z <= tms.maxzoom:
        raise NotFoundError(f"zoom {z} is outside {tms.id} ({tms.minzoom} to {tms.maxzoom})")
    m = tms.matrix(z)
    if not (0 <= x < m.matrixWidth and 0 <= y < m.matrixHeight):
        raise NotFoundError(
            f"tile {z}/{x}/{y} is outside {tms.id}: at zoom {z}, x < {m.matrixWidth} "
            f"and y < {m.matrixHeight}"
        )


@functools.cache
def transformer(src: str, dst: str) -> Transformer:
    # One per CRS pair and process; pyproj transformers are safe to share between threads.
    return Transformer.from_crs(CRS.from_user_input(src), CRS.from_user_input(dst), always_xy=True)


def tms_crs(tms: morecantile.TileMatrixSet) -> str:
    return _epsg(tms.id)


@functools.cache
def _epsg(tms_id: str) -> str:
    # once per matrix set: pyproj's to_epsg() takes ~50 us, on every tile
    return f"EPSG:{morecantile.tms.get(tms_id).crs.to_epsg()}"


def tile_bounds(tms: morecantile.TileMatrixSet, z: int, x: int, y: int) -> tuple[float, ...]:
    """(left, bottom, right, top) of the tile in the TMS CRS, x = easting or longitude."""
    b = tms.xy_bounds(morecantile.Tile(x, y, z))
    return (b.left, b.bottom, b.right, b.top)


def _centres(
    bounds: tuple[Any, ...], i: F64, j: F64, width: int = TILE_SIZE, height: int = TILE_SIZE
) -> tuple[F64, F64]:
    left, bottom, right, top = bounds
    return (
        left + (i + 0.5) * (right - left) / width,
        top - (j + 0.5) * (top - bottom) / height,
    )


def exact_grid_xy(
    tms: morecantile.TileMatrixSet, z: int, x: int, y: int, grid_crs: str
) -> tuple[F64, F64]:
    """Every tile pixel centre in the grid's CRS, each transformed by PROJ (the reference)."""
    return _exact_xy(tms_crs(tms), tile_bounds(tms, z, x, y), TILE_SIZE, TILE_SIZE, grid_crs)


def _exact_xy(
    crs: str, bounds: tuple[float, ...], width: int, height: int, grid_crs: str
) -> tuple[F64, F64]:
    jj, ii = np.mgrid[0:height, 0:width].astype(np.float64)
    gx, gy = transformer(crs, grid_crs).transform(*_centres(bounds, ii, jj, width, height))
    return np.asarray(gx), np.asarray(gy)


@functools.cache
def _lattice(n: int, step: int = _STEP) -> F64:
    """Pixel positions transformed exactly along an axis of n pixels."""
    return np.unique(np.r_[np.arange(0, n, step), n - 1]).astype(np.float64)


@functools.cache
def _mid(n: int, step: int = _STEP) -> F64:
    """The lattice's points and the midpoints between them (the lattice's points are
    every other one, from the first)."""
    lat = _lattice(n, step)
    return np.union1d(lat, (lat[:-1] + lat[1:]) / 2)


@functools.cache
def _probe(height: int, width: int, step: int) -> tuple[F64, F64]:
    """(rows, columns) of a window's points transformed at once: the ``step`` lattice's
    cell centres and edge midpoints (its own points among them, every other one along
    each axis). Made once a size and spacing."""
    jj, ii = np.meshgrid(_mid(height, step), _mid(width, step), indexing="ij")
    jj.flags.writeable = ii.flags.writeable = False  # shared by every such window
    return jj, ii


@functools.cache
def _centre_cell(height: int, width: int) -> tuple[F64, F64, float]:
    """(rows, columns) of the two points of the 16-pixel lattice's centre cell, whose
    distance chooses the pyramid level, and their distance in window pixels."""
    lat_j, lat_i = _lattice(height), _lattice(width)
    cj, ci = len(lat_j) // 2, min(len(lat_i) // 2, len(lat_i) - 2)
    return lat_j[[cj, cj]], lat_i[[ci, ci + 1]], float(lat_i[ci + 1] - lat_i[ci])


@functools.cache
def _centre_and_probe(height: int, width: int, step: int | None) -> tuple[F64, F64]:
    """(rows, columns) of the centre cell's two points, then (``step``: not None) the
    ``step`` lattice's :func:`_probe` points, flattened: one PROJ call for both."""
    cj, ci, _ = _centre_cell(height, width)
    if step is None:
        return cj, ci
    pj, pi = _probe(height, width, step)
    rows, cols = np.r_[cj, pj.ravel()], np.r_[ci, pi.ravel()]
    rows.flags.writeable = cols.flags.writeable = False
    return rows, cols


def _centre_size(x: F64, y: F64, height: int, width: int) -> float:
    """The source pixel size at the window's centre, from the centre cell's two points
    in the grid's CRS (the first two of ``x``, ``y``): the one measure of
    :func:`window_index` and :func:`window_level`, so that they choose the same level."""
    return math.hypot(x[1] - x[0], y[1] - y[0]) / _centre_cell(height, width)[2]


@functools.cache
def _interp(n: int, at: str, step: int = _STEP) -> tuple[npt.NDArray[np.intp], F64]:
    lat = _lattice(n, step)
    positions = np.arange(n, dtype=np.float64) if at == "pos" else _mid(n, step)
    k = np.clip(np.searchsorted(lat, positions, side="right") - 1, 0, len(lat) - 2)
    return k, (positions - lat[k]) / (lat[k + 1] - lat[k])


@functools.cache
def _weights(n: int, at: str, step: int = _STEP) -> F64:
    """The interpolation matrix from an axis's lattice to its positions (2 weights a row)."""
    k, t = _interp(n, at, step)
    w = np.zeros((len(k), len(_lattice(n, step))))
    rows = np.arange(len(k))
    w[rows, k] = 1 - t
    w[rows, k + 1] += t
    return w


def _bilinear(v: F64, height: int, width: int, at: str, step: int = _STEP) -> F64:
    """Bilinear interpolation of values ``v`` known on the lattice, at the window's pixel
    positions (``"pos"``) or at the lattice's midpoints (``"mid"``): ``Wr v Wc^T``.
    The products take 0.05 ms for a tile against 0.6 ms for gathers, with one BLAS
    thread per process: ``sdmatlas serve`` and ``sdmatlas seed`` set it, because idle
    BLAS threads spinning in every worker cost far more under load than they save."""
    out: F64 = _weights(height, at, step) @ v @ _weights(width, at, step).T
    return out


@dataclass(frozen=True)
class TileIndex:
    """Which pixel of which level each tile pixel shows; -1 where outside the level.

    Also kept, for gathering: the window of the level the tile touches (``r0, c0, h,
    w``), the mask of tile pixels inside the level and their flat offsets in that window.
    """

    level: int
    rows: I32
    cols: I32
    inside: npt.NDArray[np.bool_]
    r0: int
    c0: int
    h: int
    w: int
    offsets: npt.NDArray[np.integer]

    @property
    def empty(self) -> bool:
        return self.h == 0

    @classmethod
    def build(
        cls, level: int, rows: I32, cols: I32, inside: npt.NDArray[np.bool_] | None = None
    ) -> TileIndex:
        inside = rows >= 0 if inside is None else inside
        full = bool(inside.all())
        if not full and not inside.any():
            z = np.zeros(0, np.int64)
            return cls(level, rows, cols, inside, 0, 0, 0, 0, z)
        r, c = (rows, cols) if full else (rows[inside], cols[inside])
        r0, c0 = int(r.min()), int(c.min())
        h, w = int(r.max()) - r0 + 1, int(c.max()) - c0 + 1
        # int64 where a window's footprint could pass 2**31 pixels (huge WMS maps)
        if h * w < 2**31:
            offsets = ((r - np.int32(r0)) * np.int32(w) + (c - np.int32(c0))).ravel()
        else:
            offsets = ((r - np.int64(r0)) * np.int64(w) + (c - np.int64(c0))).ravel()
        return cls(level, rows, cols, inside, r0, c0, h, w, offsets)

    @property
    def full(self) -> bool:
        """Every tile pixel is inside the level (then no mask is needed)."""
        return self.h > 0 and self.offsets.size == self.rows.size


def choose_level(grid: Grid, n_levels: int, tile_pixel_size: float) -> int:
    """The coarsest level whose pixels are no larger than the tile's (GDAL's overview rule)."""
    if tile_pixel_size <= grid.res:
        return 0
    k = math.floor(math.log2(tile_pixel_size / grid.res) + 1e-9)
    return max(0, min(k, n_levels - 1))


def level_grid(grid: Grid, k: int) -> Grid:
    f = 2**k
    return grid.model_copy(
        update={"res": grid.res * f, "width": -(-grid.width // f), "height": -(-grid.height // f)}
    )


def tile_index(
    tms: morecantile.TileMatrixSet, z: int, x: int, y: int, grid: Grid, n_levels: int
) -> TileIndex:
    """The tile's index map into the release (see the module's docstring)."""
    bounds = tile_bounds(tms, z, x, y)
    return window_index(tms_crs(tms), bounds, TILE_SIZE, TILE_SIZE, grid, n_levels)


@functools.cache
def _level_pixels(height: int, width: int) -> tuple[F64, F64]:
    cj, ci, _ = _centre_cell(height, width)
    lat_j, lat_i = _lattice(height), _lattice(width)
    rows = np.r_[cj, lat_j[[0, 0, -1, -1]]]
    cols = np.r_[ci, lat_i[[0, -1, 0, -1]]]
    rows.flags.writeable = cols.flags.writeable = False
    return rows, cols


def level_points(bounds: tuple[Any, ...], width: int, height: int) -> tuple[F64, F64]:
    """The six points (in the window's CRS) :func:`window_level` transforms: the 16-pixel
    lattice's centre cell (two), then the lattice's four corners. ``bounds``: floats, or
    columns of many windows' bounds (n x 1 arrays: n x 6 points)."""
    rows, cols = _level_pixels(height, width)
    return _centres(bounds, cols, rows, width, height)


def window_level(
    crs: str, bounds: tuple[float, ...], width: int, height: int, grid: Grid, n_levels: int,
    transformed: tuple[F64, F64] | None = None,
) -> int:  # fmt: skip
    """The pyramid level :func:`window_index` reads for this window, from two transformed
    points (the lattice cell at the window's centre, as there), so that a map drawn in
    strips reads every strip from the level of the whole map (no seams). ``transformed``:
    the :func:`level_points`, already in the grid's CRS (a caller transforming more
    points at once)."""
    if min(width, height) >= 2 * _STEP:
        if transformed is None:
            t = transformer(crs, grid.crs)
            transformed = t.transform(*level_points(bounds, width, height))
        x, y = (np.asarray(v) for v in transformed)
        if np.isfinite(x).all() and np.isfinite(y).all():
            return choose_level(grid, n_levels, _centre_size(x, y, height, width))
    return int(window_index(crs, bounds, width, height, grid, n_levels).level)  # rare: edges


def window_index(
    crs: str,
    bounds: tuple[float, ...],
    width: int,
    height: int,
    grid: Grid,
    n_levels: int,
    level: int | None = None,
) -> TileIndex:
    """The index map of any width x height window over ``bounds`` (x/y order, in ``crs``):
    tiles, WMS maps. Lattice-interpolated, exact (see the module's docstring). ``level``
    forces the pyramid level (else chosen from the pixel size at the centre)."""
    if min(width, height) < 2 * _STEP:  # a lattice would save nothing
        return _exact_index(crs, bounds, width, height, grid, n_levels, level)
    t = transformer(crs, grid.crs)
    # source pixel size at the window centre (the level that fits the zoom), with the
    # coarsest lattice's points in the same PROJ call where the window has room for it
    coarse = _STEPS[0] if min(width, height) >= 2 * _STEPS[0] else None
    cj, ci = _centre_and_probe(height, width, coarse)
    cx, cy = (np.asarray(v) for v in t.transform(*_centres(bounds, ci, cj, width, height)))
    size = _centre_size(cx, cy, height, width)
    # windows zoomed in past the grid's pixels start from the coarsest lattice
    steps = [s for s in _STEPS if min(width, height) >= 2 * s] if size <= grid.res / 2 else []
    if steps and steps[0] == coarse:
        shape = _probe(height, width, coarse)[0].shape
        probe = _Probe(coarse, height, width, cx[2:].reshape(shape), cy[2:].reshape(shape))
    else:
        probe = _Probe.of(t, bounds, width, height, steps[0] if steps else _STEP)
    if not (probe.lattice_finite and math.isfinite(size)):
        if probe.step == _STEP:  # a projection's edge
            return _exact_index(crs, bounds, width, height, grid, n_levels, level)
        probe = _Probe.of(t, bounds, width, height, _STEP)  # decided as on the fine lattice
        if not probe.lattice_finite:
            return _exact_index(crs, bounds, width, height, grid, n_levels, level)
    k = choose_level(grid, n_levels, size) if level is None else level
    g = level_grid(grid, k)
    err = probe.error(g)
    if probe.step > _STEP:
        finer = _finer_step(probe.step, err, steps, width, height)
        if finer != probe.step:
            probe = _Probe.of(t, bounds, width, height, finer)
            err = probe.error(g)
            if not probe.lattice_finite:
                return _exact_index(crs, bounds, width, height, grid, n_levels, k)
    step, lx, ly = probe.step, probe.lx, probe.ly
    # A window whose lattice lies wholly off the level (one pixel of margin) is empty.
    gx0, gx1 = (float(lx.min()) - g.x0) / g.res, (float(lx.max()) - g.x0) / g.res
    gy0, gy1 = (g.y0 - float(ly.max())) / g.res, (g.y0 - float(ly.min())) / g.res
    if gx1 < -1 or gx0 > g.width + 1 or gy1 < -1 or gy0 > g.height + 1:
        return TileIndex.build(k, *_outside(height, width))
    if not math.isfinite(err) or err > 0.25:
        return _exact_index(crs, bounds, width, height, grid, n_levels, k)
    tol = 4 * err + 1e-9
    if COMPILED and _kernels() is not None:
        return _compiled_index(t, bounds, width, height, lx, ly, g, k, tol, step)
    fx = _bilinear(lx, height, width, "pos", step)
    fx -= g.x0
    fx /= g.res
    fy = _bilinear(ly, height, width, "pos", step)
    np.subtract(g.y0, fy, out=fy)
    fy /= g.res
    cols, rows = np.floor(fx), np.floor(fy)
    fx -= cols  # now the fractions within the pixel
    fy -= rows
    near = (fx < tol) | (fx > 1 - tol) | (fy < tol) | (fy > 1 - tol)
    if near.any():
        j, i = np.nonzero(near)
        cols[j, i], rows[j, i] = _exact_floors(t, bounds, j, i, width, height, g)
    return _from_floors(cols, rows, g, k)


@dataclass(frozen=True)
class _Probe:
    """A window's points transformed at once for one lattice spacing (:func:`_probe`):
    the grid coordinates of the lattice and of its check points."""

    step: int
    height: int
    width: int
    mx: F64
    my: F64

    @classmethod
    def of(
        cls, t: Transformer, bounds: tuple[float, ...], width: int, height: int, step: int
    ) -> _Probe:
        pj, pi = _probe(height, width, step)
        x, y = t.transform(*_centres(bounds, pi, pj, width, height))
        return cls(step, height, width, np.asarray(x), np.asarray(y))

    @property
    def lx(self) -> F64:
        return self.mx[::2, ::2]

    @property
    def ly(self) -> F64:
        return self.my[::2, ::2]

    @property
    def lattice_finite(self) -> bool:
        """The lattice transformed (not off a projection's edge)."""
        return bool(np.isfinite(self.lx).all() and np.isfinite(self.ly).all())

    def error(self, g: Grid) -> float:
        """The interpolation error, in pixels of ``g``, measured at the lattice's cell
        centres and edge midpoints (centres alone miss it where the two curvatures
        cancel there); NaN where a check point did not transform."""
        h, w, s = self.height, self.width, self.step
        ax, ay = _bilinear(self.lx, h, w, "mid", s), _bilinear(self.ly, h, w, "mid", s)
        return max(float(np.abs(ax - self.mx).max()), float(np.abs(ay - self.my).max())) / g.res


def _finer_step(step: int, err: float, steps: list[int], width: int, height: int) -> int:
    """The spacing, ``step`` or finer, with the least expected PROJ work, from the error
    ``err`` measured at ``step``: a finer lattice costs its check points and shrinks the
    error with the square of the spacing; each pixel within 4 errors of a pixel edge
    (about 16 x error of the pixels) is transformed exactly."""
    if not math.isfinite(err) or err > 0.25:
        return _STEP
    best, cost = step, 16 * width * height * err
    for s in steps:
        if s < step:
            c = (
                len(_mid(height, s)) * len(_mid(width, s))
                + 16 * width * height * err * (s / step) ** 2
            )
            if c < cost:
                best, cost = s, c
    return best


def _exact_floors(
    t: Transformer, bounds: tuple[float, ...], j: npt.NDArray[np.integer],
    i: npt.NDArray[np.integer], width: int, height: int, g: Grid,
) -> tuple[F64, F64]:  # fmt: skip
    """The level pixel (column, row floors) under window pixels (j, i), by PROJ."""
    ex_x, ex_y = t.transform(
        *_centres(bounds, i.astype(np.float64), j.astype(np.float64), width, height)
    )
    with np.errstate(invalid="ignore"):
        cols = np.floor((np.asarray(ex_x) - g.x0) / g.res)
        rows = np.floor((g.y0 - np.asarray(ex_y)) / g.res)
    return cols, rows


COMPILED = True
"""Whether :func:`window_index` runs its per-pixel part compiled
(:mod:`sdmatlas.serve.tiles.index_kernel`) or in NumPy (the reference, kept for tests)."""


@functools.cache
def _kernels() -> Any:
    """The compiled kernels' module; None where numba cannot load them (not installed, or
    no writable cache directory: numba refuses to define a cached function then), and
    then the NumPy path draws the same maps, slower (a warning says so once)."""
    try:
        return importlib.import_module("sdmatlas.serve.tiles.index_kernel")
    except Exception as exc:  # any failure of numba's: the reference path still works
        log.warning("index-map kernels unavailable (%s); using the NumPy path", exc)
        return None


@functools.cache
def warm_kernels() -> None:
    """Load (or compile) the index-map kernels now: a window of one lattice cell."""
    g = Grid(crs="EPSG:3857", res=1.0, x0=0.0, y0=64.0, width=64, height=64, chunk=64)
    window_index("EPSG:3857", (0.0, 0.0, 64.0, 64.0), 2 * _STEP, 2 * _STEP, g, 1)


def _compiled_index(
    t: Transformer, bounds: tuple[float, ...], width: int, height: int, lx: F64, ly: F64,
    g: Grid, k: int, tol: float, step: int = _STEP,
) -> TileIndex:  # fmt: skip
    """The NumPy path's result (interpolated floors, near-edge pixels transformed
    exactly), from the compiled kernels."""
    index_kernel = _kernels()
    assert index_kernel is not None
    kj, tj = _interp(height, "pos", step)
    ki, ti = _interp(width, "pos", step)
    rows, cols, nj, ni = index_kernel.lattice_floors(
        np.ascontiguousarray(lx), np.ascontiguousarray(ly), kj, tj, ki, ti,
        float(g.x0), float(g.y0), float(g.res), float(tol), g.width, g.height,
    )  # fmt: skip
    fc, fr = _exact_floors(t, bounds, nj, ni, width, height, g) if len(nj) else (_NONE, _NONE)
    inside, r0, c0, h, w, off32, off64 = index_kernel.index_arrays(
        rows, cols, g.width, g.height, nj, ni, fc, fr
    )
    # as TileIndex.build: int32 offsets where they fit (the kernel filled one of the two)
    offsets = off32 if off32.size else off64
    return TileIndex(k, rows, cols, inside, int(r0), int(c0), int(h), int(w), offsets)


_NONE = np.zeros(0)


def _outside(height: int, width: int) -> tuple[I32, I32]:
    full = np.full((height, width), -1, np.int32)
    return full, full


def _exact_index(
    crs: str,
    bounds: tuple[float, ...],
    width: int,
    height: int,
    grid: Grid,
    n_levels: int,
    k: int | None = None,
) -> TileIndex:
    gx, gy = _exact_xy(crs, bounds, width, height, grid.crs)
    if k is None:
        ok = np.isfinite(gx) & np.isfinite(gy)
        size = _pixel_size(gx, gy, ok)
        k = choose_level(grid, n_levels, size) if size else 0
    return index_at(gx, gy, grid, k)


def index_at(gx: F64, gy: F64, grid: Grid, k: int) -> TileIndex:
    """The index map of positions (gx, gy), in the grid's CRS, into level ``k``: any
    window's pixel centres (tiles, WMS maps), exactly transformed by the caller."""
    g = level_grid(grid, k)
    return _to_index((gx - g.x0) / g.res, (g.y0 - gy) / g.res, g, k)


def _pixel_size(gx: F64, gy: F64, ok: npt.NDArray[np.bool_]) -> float:
    d = np.hypot(np.diff(gx, axis=1), np.diff(gy, axis=1))
    good = ok[:, 1:] & ok[:, :-1] & np.isfinite(d)
    return float(np.median(d[good])) if good.any() else 0.0


def _to_index(fx: F64, fy: F64, g: Grid, k: int) -> TileIndex:
    with np.errstate(invalid="ignore"):
        return _from_floors(np.floor(fx), np.floor(fy), g, k)


def _from_floors(cols: F64, rows: F64, g: Grid, k: int) -> TileIndex:
    with np.errstate(invalid="ignore"):
        inside = (cols >= 0) & (cols < g.width) & (rows >= 0) & (rows < g.height)
        r = rows.astype(np.int32)
        c = cols.astype(np.int32)
    r[~inside] = -1
    c[~inside] = -1
    return TileIndex.build(k, r, c, inside)


class IndexCache:
    """Bounded LRU of tile index maps, shared by every species, layer and request."""

    def __init__(self, max_items: int = 4096) -> None:
        self._items: OrderedDict[tuple[object, ...], TileIndex] = OrderedDict()
        self._lock = threading.Lock()
        self.max_items = max_items

    def get(
        self, tms: morecantile.TileMatrixSet, z: int, x: int, y: int, grid: Grid, n_levels: int
    ) -> TileIndex:
        key = (tms.id, z, x, y, grid.crs, grid.res, grid.x0, grid.y0, grid.width, grid.height)
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                return hit
        idx = tile_index(tms, z, x, y, grid, n_levels)
        with self._lock:
            self._items[key] = idx
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)
        return idx


def parse_tile_format(fmt: str, accepted: tuple[str, ...]) -> str:
    if fmt not in accepted:
        raise InvalidInputError(f"format {fmt!r} is not served; use one of {', '.join(accepted)}")
    return fmt
