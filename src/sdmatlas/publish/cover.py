"""Which blocks of a release an area covers whole, and which pixels along its boundary.

Pure geometry: nothing here reads data, so an area's cost is known before any read.

A pixel belongs to an area when its centre is inside the polygon (GDAL's rasterisation
rule, as everywhere in sdmatlas). The cover keeps that rule exact while reading as little
as possible:

1. Blocks of the coarsest edge (512 px) that meet the polygon's bounding box are tested
   against the polygon with the rectangle spanned by their pixel centres (clipped to the
   grid, widened by a millionth of a pixel). *Whole* when the polygon contains that
   rectangle properly, so every centre is strictly inside; *outside* when they do not
   meet, so every centre is strictly outside. Either way no centre lies on the outline,
   where the two rules could differ.
2. The remaining (boundary) blocks are split into their 8 x 8 children of the next edge
   (64 px) and tested the same way.
3. Each boundary block of the last tested edge is rasterised on its own (GDAL, with the
   polygon clipped to the block plus a pixel of margin, which cannot move a centre inside
   it across the outline): its pixel mask.

The query then reads aggregates for whole blocks, and for each boundary block of step 3
the aggregates of its whole 8 x 8 blocks and the pixels of the others
(:func:`sdmatlas.publish.queries.area`). The work grows with the outline's length, not
the area: about ``perimeter / 64`` rasterised blocks of 4,096 pixels, and at most
``perimeter / 8`` pixel chunks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import shapely
from affine import Affine
from rasterio.features import rasterize
from shapely.geometry import mapping
from shapely.geometry.base import BaseGeometry

from sdmatlas import budget
from sdmatlas.errors import InvalidInputError
from sdmatlas.grid import Grid
from sdmatlas.publish.aggregates import EDGES, FANOUT, block_counts

_EPS = 1e-6  # of a pixel: the widening of a block's centre rectangle


@dataclass(frozen=True)
class Cover:
    """An area on a grid: whole blocks per edge, and pixel masks of boundary blocks."""

    grid: Grid
    whole: dict[int, npt.NDArray[np.intp]]
    """edge -> ``[n, 2]`` (block row, block column) of blocks with every centre inside"""
    edge: int
    """edge of the boundary blocks (64)"""
    boundary: npt.NDArray[np.intp]
    """``[m, 2]`` boundary blocks of ``edge``"""
    masks: list[npt.NDArray[np.bool_]]
    """per boundary block, its pixels whose centre is inside (clipped to the grid)"""

    def fine_counts(self) -> tuple[int, int]:
        """(whole, partial) 8 x 8 blocks inside the boundary blocks, from geometry alone:
        partial ones are an upper bound on the pixel chunks a query reads."""
        fine = self.edge // FANOUT
        whole = partial = 0
        for m in self.masks:
            n = block_counts(m, fine)
            c = block_counts(np.ones_like(m), fine)
            whole += int(((n > 0) & (n == c)).sum())
            partial += int(((n > 0) & (n < c)).sum())
        return whole, partial

    def values_read(self, n_species: int) -> int:
        """An upper bound on the values a query reads, from geometry alone: per boundary
        block one aggregate chunk of 8 x 8 blocks, per cut 8 x 8 block one pixel chunk,
        per chunk of whole blocks one aggregate chunk (each x species)."""
        _, partial = self.fine_counts()
        k = FANOUT * FANOUT
        chunks = sum(
            len({(int(y) // FANOUT, int(x) // FANOUT) for y, x in v}) for v in self.whole.values()
        )
        return n_species * k * (partial + len(self.boundary) + chunks)

    def window(self, i: int) -> tuple[slice, slice]:
        """Grid rows and columns of boundary block ``i``."""
        by, bx = (int(v) for v in self.boundary[i])
        e = self.edge
        return (
            slice(by * e, min((by + 1) * e, self.grid.height)),
            slice(bx * e, min((bx + 1) * e, self.grid.width)),
        )


def _boxes(grid: Grid, idx: npt.NDArray[np.intp], edge: int) -> npt.NDArray[np.object_]:
    """Rectangles spanned by the pixel centres of blocks ``idx`` (clipped to the grid)."""
    r0 = idx[:, 0] * edge
    c0 = idx[:, 1] * edge
    r1 = np.minimum(r0 + edge, grid.height) - 1
    c1 = np.minimum(c0 + edge, grid.width) - 1
    e = _EPS * grid.res
    xmin = grid.x0 + (c0 + 0.5) * grid.res - e
    xmax = grid.x0 + (c1 + 0.5) * grid.res + e
    ymax = grid.y0 - (r0 + 0.5) * grid.res + e
    ymin = grid.y0 - (r1 + 0.5) * grid.res - e
    return shapely.box(xmin, ymin, xmax, ymax)


def _children(idx: npt.NDArray[np.intp], shape: tuple[int, int]) -> npt.NDArray[np.intp]:
    """The FANOUT x FANOUT children of blocks ``idx``, within a block grid of ``shape``."""
    if not len(idx):
        return idx
    dy, dx = np.mgrid[0:FANOUT, 0:FANOUT]
    ys = (idx[:, 0, None] * FANOUT + dy.ravel()[None, :]).ravel()
    xs = (idx[:, 1, None] * FANOUT + dx.ravel()[None, :]).ravel()
    keep = (ys < shape[0]) & (xs < shape[1])
    return np.column_stack([ys[keep], xs[keep]]).astype(np.intp)


def validate(geom: BaseGeometry) -> None:
    if geom.is_empty or not geom.is_valid or geom.geom_type not in {"Polygon", "MultiPolygon"}:
        raise InvalidInputError("the area must be a valid, non-empty Polygon or MultiPolygon")


def _window(grid: Grid, geom: BaseGeometry) -> tuple[int, int, int, int]:
    """Rows ``r0:r1`` and columns ``c0:c1`` of the polygon's bounding box on the grid."""
    validate(geom)
    left, bottom, right, top = geom.bounds
    r0, c0 = (int(v) for v in grid.rowcol(left, top))
    r1, c1 = (int(v) + 1 for v in grid.rowcol(right, bottom))
    r0, c0 = max(r0, 0), max(c0, 0)
    r1, c1 = min(r1, grid.height), min(c1, grid.width)
    if r1 <= r0 or c1 <= c0:
        raise InvalidInputError("the polygon does not overlap the release grid")
    return r0, c0, r1, c1


def cover(
    grid: Grid,
    geom: BaseGeometry,
    max_boundary_pixels: int | None = None,
    edges: tuple[int, ...] = EDGES,
) -> Cover:
    """The cover of ``geom`` (in the grid's CRS) by the blocks of ``edges`` (finest first).
    ``max_boundary_pixels`` bounds the pixels rasterised along the outline (checked before
    rasterising, SDMATLAS_MAX_REPORT_BOUNDARY_PIXELS in the API)."""
    r0, c0, r1, c1 = _window(grid, geom)
    shapely.prepare(geom)
    tested = edges[1:][::-1]  # coarsest first, down to the boundary edge (64)
    top_edge = tested[0]
    ys, xs = np.mgrid[r0 // top_edge : -(-r1 // top_edge), c0 // top_edge : -(-c1 // top_edge)]
    candidates = np.column_stack([ys.ravel(), xs.ravel()]).astype(np.intp)
    whole: dict[int, npt.NDArray[np.intp]] = {}
    boundary = candidates
    for i, edge in enumerate(tested):
        boxes = _boxes(grid, candidates, edge)
        inside = shapely.contains_properly(geom, boxes)
        meets = shapely.intersects(geom, boxes)
        whole[edge] = candidates[inside]
        boundary = candidates[meets & ~inside]
        if i + 1 < len(tested):
            nxt = tested[i + 1]
            candidates = _children(boundary, (-(-grid.height // nxt), -(-grid.width // nxt)))
    edge = tested[-1]
    if max_boundary_pixels is not None:
        budget.check(
            "pixels along the area's outline (blocks of 64 x 64 pixels it crosses)",
            "max_report_boundary_pixels",
            len(boundary) * edge * edge,
            max_boundary_pixels,
            "simplify the outline (a long, detailed boundary costs the most), split the "
            "area, or ask for a territory of the catalog (GET /report?territory=)",
        )
    masks = [_rasterise(grid, geom, by, bx, edge) for by, bx in boundary]
    return Cover(grid=grid, whole=whole, edge=edge, boundary=boundary, masks=masks)


def _rasterise(
    grid: Grid, geom: BaseGeometry, by: int, bx: int, edge: int
) -> npt.NDArray[np.bool_]:
    r0, c0 = by * edge, bx * edge
    h, w = min(edge, grid.height - r0), min(edge, grid.width - c0)
    res = grid.res
    x0, y0 = grid.x0 + c0 * res, grid.y0 - r0 * res
    # Clipped to the block and a pixel of margin: GDAL's scanline cost grows with the
    # polygon's edges, and outside the margin no edge can decide a centre of this block.
    part = shapely.clip_by_rect(geom, x0 - res, y0 - (h + 1) * res, x0 + (w + 1) * res, y0 + res)
    if part.is_empty:
        return np.zeros((h, w), bool)
    mask = rasterize(
        [(mapping(part), 1)],
        out_shape=(h, w),
        transform=Affine(res, 0, x0, 0, -res, y0),
        fill=0,
        dtype="uint8",
    )
    return np.asarray(mask, dtype=bool)


def pixel_mask(grid: Grid, geom: BaseGeometry) -> tuple[npt.NDArray[np.bool_], int, int]:
    """The reference: every pixel of the polygon's bounding box whose centre is inside
    (one GDAL rasterisation), with the window's origin. Memory grows with the box; the
    queries use :func:`cover`, which equals it (tested)."""
    r0, c0, r1, c1 = _window(grid, geom)
    t = Affine(grid.res, 0, grid.x0 + c0 * grid.res, 0, -grid.res, grid.y0 - r0 * grid.res)
    mask = rasterize(
        [(mapping(geom), 1)], out_shape=(r1 - r0, c1 - c0), transform=t, fill=0, dtype="uint8"
    ).astype(bool)
    return mask, r0, c0


def cover_mask(c: Cover) -> npt.NDArray[np.bool_]:
    """The cover as a full-grid pixel mask (for tests and small grids)."""
    out = np.zeros((c.grid.height, c.grid.width), bool)
    for edge, idx in c.whole.items():
        for by, bx in idx:
            out[by * edge : (by + 1) * edge, bx * edge : (bx + 1) * edge] = True
    for i, m in enumerate(c.masks):
        out[c.window(i)] = m
    return out
