"""The demo territory: the Northern Adriatic (Alps, Istria, Po plain edge, sea)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from global_land_mask import globe

from sdmatlas.grid import Grid
from sdmatlas.territory import Territory

NAME = "northern-adriatic"
TITLE = "Northern Adriatic (demo)"
# EPSG:3035 bounds (left, bottom, right, top): 400 km x 300 km around Trieste, at 500 m.
BOUNDS = (4_433_000.0, 2_357_000.0, 4_833_000.0, 2_657_000.0)
RESOLUTION = 500.0
CRS = "EPSG:3035"


def demo_grid(
    res: float = RESOLUTION,
    bounds: tuple[float, float, float, float] = BOUNDS,
    chunk: int = 256,
) -> Grid:
    return Grid.from_bounds(*bounds, res=res, crs=CRS, chunk=chunk)


def land_mask(grid: Grid) -> npt.NDArray[np.bool_]:
    """Real land/sea mask at the pixel centres (global-land-mask, 1 km, GLOBE-derived)."""
    rows, cols = np.meshgrid(np.arange(grid.height), np.arange(grid.width), indexing="ij")
    lon, lat = grid.lonlat(rows, cols)
    return np.asarray(globe.is_land(lat, lon), dtype=bool)


def demo_territory(grid: Grid | None = None) -> Territory:
    grid = grid or demo_grid()
    return Territory(grid=grid, mask=land_mask(grid), name=NAME)
