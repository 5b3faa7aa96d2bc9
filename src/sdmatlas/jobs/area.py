"""A job's area: from what a client sends (a bbox, a GeoJSON polygon or a territory code)
to a territory on a window of the model's reference grid.

The window is aligned on job chunks nested in the reference grid's chunks (64 pixels
when they divide them), so a job runs ``predict``'s chunk tasks over the chunks the area
touches, on the same pixels with the same covariates as a batch prediction of the whole
grid (a test checks the codes byte for byte), and its pixels are the pixels of the area
(centre inside) that the coverage mask holds. Pure functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from pyproj import Geod
from shapely.geometry import box, mapping, shape
from shapely.geometry.base import BaseGeometry

from sdmatlas import polygons
from sdmatlas.catalog.covariates import CovariateSet
from sdmatlas.errors import BudgetExceededError, InvalidInputError, TerritoryError
from sdmatlas.grid import Grid, transformer
from sdmatlas.territory import BothMasks, GeometryMask, RasterMask, Territory, WindowOf

_GEOD = Geod(ellps="WGS84")
JOB_CHUNK = 64
"""Chunk edge of a job's cube when the reference grid's chunks are a multiple of it: a job
costs in proportion to its area, not to the 256-pixel chunks of a continental grid
(a 20 x 20 km square at 500 m is 40 x 40 pixels; its 256 x 256 chunk would be 41 times
more to publish)."""


def job_chunk(reference_chunk: int) -> int:
    """The chunk edge of a job's cube: 64, nested in the reference grid's chunks, or the
    reference chunk itself when 64 does not divide it."""
    return JOB_CHUNK if reference_chunk % JOB_CHUNK == 0 else reference_chunk


@dataclass(frozen=True)
class JobArea:
    """The job's grid (a chunk-aligned window of the reference grid at ``row0, col0``)
    and its area in the grid's CRS."""

    grid: Grid
    row0: int
    col0: int
    geometry: BaseGeometry
    area_km2: float

    def to_json(self) -> dict[str, Any]:
        return {
            "grid": self.grid.model_dump(mode="json"),
            "row0": self.row0,
            "col0": self.col0,
            "geometry": mapping(self.geometry),
            "area_km2": self.area_km2,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> JobArea:
        return cls(
            Grid.model_validate(doc["grid"]),
            int(doc["row0"]),
            int(doc["col0"]),
            shape(doc["geometry"]),
            float(doc["area_km2"]),
        )

    def territory(self, cov: CovariateSet, name: str) -> Territory:
        """The pixels to predict: inside the area and inside the model's coverage."""
        if not cov.territory_path.exists():
            raise TerritoryError(f"the coverage mask {cov.territory_path} does not exist")
        coverage = WindowOf(RasterMask(cov.territory_path), cov.grid, self.row0, self.col0)
        inside = BothMasks(GeometryMask(self.geometry), coverage)
        return Territory(self.grid, name=name, source=inside)


def bbox_polygon(bbox: list[float]) -> BaseGeometry:
    """A lon/lat bbox ``[west, south, east, north]`` as a polygon, checked."""
    if len(bbox) != 4 or not all(math.isfinite(v) for v in bbox):
        raise InvalidInputError("bbox: give four finite numbers [west, south, east, north]")
    w, s, e, n = bbox
    if not (-180 <= w < e <= 180 and -90 <= s < n <= 90):
        raise InvalidInputError(
            f"bbox {bbox}: need -180 <= west < east <= 180 and -90 <= south < north <= 90 "
            "(longitude first)"
        )
    return box(w, s, e, n)


def client_geometry(
    area: dict[str, Any], territory_geometry: BaseGeometry | None, settings: Any
) -> BaseGeometry:
    """The area in lon/lat from the request's ``area`` member (exactly one of ``bbox``,
    ``geometry``, ``territory``; the caller looked the territory up)."""
    given = [k for k in ("bbox", "geometry", "territory") if area.get(k) is not None]
    if len(given) != 1:
        raise InvalidInputError(
            "area: give exactly one of bbox [w, s, e, n], geometry (a GeoJSON Polygon or "
            f"MultiPolygon in lon/lat) or territory (a catalog code); got {given or 'none'}"
        )
    if given[0] == "bbox":
        return polygons.densify(bbox_polygon(area["bbox"]))
    if given[0] == "geometry":
        geom = polygons.polygon_from_geojson(
            area["geometry"], settings.max_polygon_vertices, settings.max_polygon_parts
        )
        return polygons.densify(geom)
    assert territory_geometry is not None
    return territory_geometry


def job_area(geom_lonlat: BaseGeometry, cov: CovariateSet, max_km2: float) -> JobArea:
    """The job's window and area for a lon/lat polygon, refused (with the reason) when it
    is over the size limit or outside the model's coverage."""
    km2 = abs(_GEOD.geometry_area_perimeter(geom_lonlat)[0]) / 1e6
    if km2 > max_km2:
        raise BudgetExceededError(
            f"the area is {km2:,.0f} km²; a job may cover at most {max_km2:,.0f} km² "
            "(setting jobs_max_area_km2)"
        )
    ref = cov.grid
    t = transformer("EPSG:4326", ref.crs)
    projected = shapely.transform(geom_lonlat, lambda xy: _stack(t.transform(xy[:, 0], xy[:, 1])))
    left, bottom, right, top = ref.bounds
    clipped = projected.intersection(box(left, bottom, right, top))
    if clipped.is_empty:
        lon0, lat0, lon1, lat1 = _lonlat_bounds(ref)
        raise InvalidInputError(
            f"the area lies outside model {cov.model}'s covariate coverage for {cov.period} "
            f"(lon {lon0:.3f}..{lon1:.3f}, lat {lat0:.3f}..{lat1:.3f})"
        )
    minx, miny, maxx, maxy = clipped.bounds
    res, ch = ref.res, job_chunk(ref.chunk)
    col0 = max(0, math.floor((minx - ref.x0) / res))
    col1 = min(ref.width, math.ceil((maxx - ref.x0) / res))
    row0 = max(0, math.floor((ref.y0 - maxy) / res))
    row1 = min(ref.height, math.ceil((ref.y0 - miny) / res))
    # whole job chunks, each inside one chunk of the reference grid
    row0, col0 = row0 // ch * ch, col0 // ch * ch
    row1, col1 = min(ref.height, -(-row1 // ch) * ch), min(ref.width, -(-col1 // ch) * ch)
    grid = Grid(
        crs=ref.crs,
        res=res,
        x0=ref.x0 + col0 * res,
        y0=ref.y0 - row0 * res,
        width=col1 - col0,
        height=row1 - row0,
        chunk=ch,
    )
    return JobArea(grid, row0, col0, clipped, round(km2, 3))


def _stack(xy: tuple[Any, Any]) -> Any:
    return np.column_stack(xy)


def _lonlat_bounds(grid: Grid) -> tuple[float, float, float, float]:
    t = transformer(grid.crs, "EPSG:4326")
    return t.transform_bounds(*grid.bounds)
