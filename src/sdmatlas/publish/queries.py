"""Cross-species queries on a published release: every species at a point, or in an area.

Neither reads one chunk per species. A point reads one ``pixels`` chunk
(8 x 8 pixels x all species). An area reads the ``blocks`` aggregates for
the 8 x 8 blocks whose territory pixels all lie inside the area, and
``pixels`` only for the blocks on its boundary. Its cost grows with the
polygon's perimeter times the species count, not with its area.

A pixel belongs to an area when its centre lies inside the polygon (GDAL's
rasterisation rule).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import zarr
from rasterio.features import rasterize
from shapely.geometry import mapping
from shapely.geometry.base import BaseGeometry

from sdmatlas import budget
from sdmatlas.errors import InvalidInputError
from sdmatlas.grid import Grid
from sdmatlas.quantize import NODATA, SCALE
from sdmatlas.zarr_access import array, sdmatlas_attrs

#: Default bounding-box budget of an area (pixels); the API's is SDMATLAS_MAX_REPORT_PIXELS.
MAX_AREA_PIXELS = 50_000_000


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
class AreaResult:
    n_pixels: int
    area_km2: float
    species_ids: npt.NDArray[np.int64]
    mean_probability: npt.NDArray[np.float64]
    expected_area_km2: npt.NDArray[np.float64]
    max_probability: npt.NDArray[np.float64]
    blocks_aggregated: int
    blocks_read: int

    def count_above(self, threshold: float) -> int:
        """Species whose probability reaches ``threshold`` on at least one pixel of the area."""
        return int((self.max_probability >= threshold - 1e-9).sum())


def _grid(release: zarr.Group) -> Grid:
    return Grid.model_validate(sdmatlas_attrs(release)["grid"])


def _ids(release: zarr.Group) -> npt.NDArray[np.int64]:
    return np.asarray(array(release, "species")[:], dtype=np.int64)


def point(release: zarr.Group, x: float, y: float) -> PointResult:
    """Every species' code at the pixel holding projected point (x, y)."""
    grid = _grid(release)
    r, c = (int(v) for v in grid.rowcol(x, y))
    ids = _ids(release)
    if not grid.contains(r, c):
        return PointResult(False, r, c, ids, np.full(len(ids), NODATA, np.uint8))
    codes = np.asarray(array(release, "pixels")[r, c, :], dtype=np.uint8)
    return PointResult(bool(codes.size and codes[0] != NODATA), r, c, ids, codes)


def area_mask(
    grid: Grid, geom: BaseGeometry, max_pixels: int = MAX_AREA_PIXELS
) -> tuple[npt.NDArray[np.bool_], int, int]:
    """Pixels of ``grid`` whose centre is in ``geom`` (grid CRS): a window mask and its
    origin. The window (the polygon's bounding box on the grid) is at most ``max_pixels``
    (the mask is held in memory). Vertex budgets are the caller's (sdmatlas.polygons)."""
    if geom.is_empty or not geom.is_valid or geom.geom_type not in {"Polygon", "MultiPolygon"}:
        raise InvalidInputError("the area must be a valid, non-empty Polygon or MultiPolygon")
    left, bottom, right, top = geom.bounds
    r0, c0 = (int(v) for v in grid.rowcol(left, top))
    r1, c1 = (int(v) + 1 for v in grid.rowcol(right, bottom))
    r0, c0 = max(r0, 0), max(c0, 0)
    r1, c1 = min(r1, grid.height), min(c1, grid.width)
    if r1 <= r0 or c1 <= c0:
        raise InvalidInputError("the polygon does not overlap the release grid")
    budget.check(
        "pixels of the area's bounding box",
        "max_report_pixels",
        (r1 - r0) * (c1 - c0),
        max_pixels,
        "split the area",
    )
    t = grid.transform * grid.transform.translation(c0, r0)
    mask = rasterize(
        [(mapping(geom), 1)], out_shape=(r1 - r0, c1 - c0), transform=t, fill=0, dtype="uint8"
    ).astype(bool)
    return mask, r0, c0


def boundary_blocks(mask: npt.NDArray[np.bool_], r0: int, c0: int, grid: Grid, block: int) -> int:
    """How many aggregate blocks the area covers only partly, from its mask alone (no
    data read): an upper bound on the blocks :func:`area` reads pixel by pixel."""
    br0, bc0 = r0 // block, c0 // block
    R0, C0 = br0 * block, bc0 * block
    h = -(-(r0 + mask.shape[0] - R0) // block) * block
    w = -(-(c0 + mask.shape[1] - C0) // block) * block
    inside = np.zeros((h, w), np.int32)
    inside[r0 - R0 : r0 - R0 + mask.shape[0], c0 - C0 : c0 - C0 + mask.shape[1]] = mask
    on_grid = np.zeros((h, w), np.int32)
    on_grid[: min(h, grid.height - R0), : min(w, grid.width - C0)] = 1
    n = inside.reshape(h // block, block, w // block, block).sum(axis=(1, 3))
    cells = on_grid.reshape(h // block, block, w // block, block).sum(axis=(1, 3))
    return int(((n > 0) & (n < cells)).sum())


def area(
    release: zarr.Group,
    geom: BaseGeometry,
    window: tuple[npt.NDArray[np.bool_], int, int] | None = None,
) -> AreaResult:
    """Per-species mean probability, expected occupied area and maximum within ``geom``.
    ``window`` is ``area_mask(grid, geom)`` when the caller already has it."""
    meta: dict[str, Any] = sdmatlas_attrs(release)
    grid, block = _grid(release), int(meta["block"])
    mask, r0, c0 = window if window is not None else area_mask(grid, geom)
    r1, c1 = r0 + mask.shape[0], c0 + mask.shape[1]
    ids = _ids(release)
    s = len(ids)
    # Block-aligned window around the polygon's bounding box.
    br0, bc0 = r0 // block, c0 // block
    br1, bc1 = -(-r1 // block), -(-c1 // block)
    R0, C0 = br0 * block, bc0 * block
    R1, C1 = min(br1 * block, grid.height), min(bc1 * block, grid.width)
    inside = np.zeros((br1 * block - R0, bc1 * block - C0), bool)
    inside[r0 - R0 : r1 - R0, c0 - C0 : c1 - C0] = mask
    valid = np.zeros_like(inside)
    valid[: R1 - R0, : C1 - C0] = np.asarray(array(release, "territory")[R0:R1, C0:C1]) == 1
    sel = inside & valid
    nb_y, nb_x = br1 - br0, bc1 - bc0
    sel_b = sel.reshape(nb_y, block, nb_x, block)
    val_b = valid.reshape(nb_y, block, nb_x, block)
    n_sel = sel_b.sum(axis=(1, 3))
    full = (n_sel > 0) & (n_sel == val_b.sum(axis=(1, 3)))
    partial = (n_sel > 0) & ~full

    total = np.zeros(s, np.float64)
    vmax = np.zeros(s, np.int64)
    if full.any():
        bsum = np.asarray(array(release, "blocks/sum")[br0:br1, bc0:bc1, :])
        bmax = np.asarray(array(release, "blocks/max")[br0:br1, bc0:bc1, :])
        total += bsum[full].sum(axis=0, dtype=np.float64)
        vmax = np.maximum(vmax, bmax[full].max(axis=0))
    pixels = array(release, "pixels")
    for by, bx in zip(*np.nonzero(partial), strict=True):
        budget.check_deadline()
        y0, x0 = R0 + by * block, C0 + bx * block
        y1, x1 = min(y0 + block, grid.height), min(x0 + block, grid.width)
        codes = np.asarray(pixels[y0:y1, x0:x1, :])
        m = sel_b[by, : y1 - y0, bx, : x1 - x0]
        picked = codes[m].astype(np.int64)  # [n, S]
        total += picked.sum(axis=0)
        vmax = np.maximum(vmax, picked.max(axis=0))
    n = int(n_sel.sum())
    pixel_km2 = (grid.res / 1000.0) ** 2
    p_sum = total * SCALE
    return AreaResult(
        n_pixels=n,
        area_km2=n * pixel_km2,
        species_ids=ids,
        mean_probability=p_sum / n if n else np.full(s, np.nan),
        expected_area_km2=p_sum * pixel_km2,
        max_probability=np.asarray(vmax * SCALE if n else np.full(s, np.nan), dtype=np.float64),
        blocks_aggregated=int(full.sum()),
        blocks_read=int(partial.sum()),
    )
