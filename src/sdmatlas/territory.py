"""Territories as boolean masks on a reference grid.

A territory is given either as a mask raster (a GeoTIFF whose grid becomes the
release grid; pixels that are non-zero and not nodata are inside) or as a
GeoJSON polygon file rasterised onto a grid built from its bounds (a pixel is
inside when its centre is). GeoJSON is read as RFC 7946 WGS84 unless it names
another CRS in a legacy ``crs`` member.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import rasterio
from rasterio.features import rasterize
from rasterio.warp import transform_geom
from shapely.geometry import mapping, shape
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union
from shapely.validation import explain_validity

from sdmatlas.errors import NotFoundError, TerritoryError
from sdmatlas.grid import DEFAULT_CRS, Grid

MAX_VERTICES = 1_000_000


@dataclass(frozen=True)
class Territory:
    """A grid and the boolean mask of the pixels to predict."""

    grid: Grid
    mask: npt.NDArray[np.bool_]
    name: str = "territory"

    def __post_init__(self) -> None:
        if self.mask.shape != self.grid.shape:
            raise TerritoryError(f"mask shape {self.mask.shape} != grid shape {self.grid.shape}")
        if not self.mask.any():
            raise TerritoryError(f"territory {self.name!r} has no pixel on the grid")

    @property
    def n_pixels(self) -> int:
        return int(self.mask.sum())

    def digest(self) -> str:
        """SHA-256 of the grid and mask: identifies the territory in run fingerprints."""
        h = hashlib.sha256(self.grid.model_dump_json().encode())
        h.update(np.packbits(self.mask).tobytes())
        return h.hexdigest()


def load_territory(
    path: Path, res: float | None = None, crs: str = DEFAULT_CRS, chunk: int = 256
) -> Territory:
    """Read a territory from a mask raster (.tif) or a GeoJSON file."""
    path = Path(path)
    if not path.exists():
        raise NotFoundError(f"territory file {path} does not exist")
    if path.suffix.lower() in {".geojson", ".json"}:
        if res is None:
            raise TerritoryError("a vector territory needs a grid resolution (--res)")
        return territory_from_geojson(path, res=res, crs=crs, chunk=chunk)
    return territory_from_mask_raster(path, chunk=chunk)


def territory_from_mask_raster(path: Path, chunk: int = 256) -> Territory:
    with rasterio.open(path) as src:
        if src.crs is None:
            raise TerritoryError(f"{path} has no CRS")
        auth = src.crs.to_authority()
        crs = f"{auth[0]}:{auth[1]}" if auth else src.crs.to_wkt()
        grid = Grid.from_transform(src.transform, src.width, src.height, crs, chunk=chunk)
        band = src.read(1, masked=True)
    mask = np.asarray(band.filled(0) != 0)
    return Territory(grid=grid, mask=mask, name=path.stem)


def _read_geometry(path: Path) -> tuple[BaseGeometry, str]:
    try:
        doc: dict[str, Any] = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TerritoryError(f"{path} is not valid GeoJSON: {exc}") from exc
    src_crs = "EPSG:4326"
    legacy = doc.get("crs", {}).get("properties", {}).get("name")
    if legacy:
        src_crs = str(legacy)
    if doc.get("type") == "FeatureCollection":
        geoms = [f.get("geometry") for f in doc.get("features", [])]
    elif doc.get("type") == "Feature":
        geoms = [doc.get("geometry")]
    else:
        geoms = [doc]
    polys = []
    for i, g in enumerate(geoms):
        if not g:
            continue
        try:
            geom = shape(g)
        except Exception as exc:
            raise TerritoryError(f"feature {i} of {path}: unreadable geometry: {exc}") from exc
        if geom.geom_type not in {"Polygon", "MultiPolygon"}:
            raise TerritoryError(f"feature {i} of {path} is a {geom.geom_type}, not a polygon")
        if not geom.is_valid:
            raise TerritoryError(
                f"feature {i} of {path} is an invalid polygon ({explain_validity(geom)})"
            )
        polys.append(geom)
    if not polys:
        raise TerritoryError(f"{path} holds no polygon")
    merged = unary_union(polys)
    n_vertices = sum(len(p.exterior.coords) for p in getattr(merged, "geoms", [merged]))
    if n_vertices > MAX_VERTICES:
        raise TerritoryError(f"{path} has {n_vertices} vertices; the limit is {MAX_VERTICES}")
    return merged, src_crs


def territory_from_geojson(
    path: Path, res: float, crs: str = DEFAULT_CRS, chunk: int = 256
) -> Territory:
    geom, src_crs = _read_geometry(path)
    projected = shape(transform_geom(src_crs, crs, mapping(geom)))
    left, bottom, right, top = projected.bounds
    grid = Grid.from_bounds(left, bottom, right, top, res=res, crs=crs, chunk=chunk)
    return Territory(grid=grid, mask=mask_from_geometry(grid, projected), name=path.stem)


def mask_from_geometry(grid: Grid, geom: BaseGeometry) -> npt.NDArray[np.bool_]:
    """Pixels of ``grid`` whose centre lies in ``geom`` (given in the grid's CRS)."""
    burned = rasterize(
        [(mapping(geom), 1)],
        out_shape=grid.shape,
        transform=grid.transform,
        fill=0,
        dtype="uint8",
    )
    return np.asarray(burned.astype(bool))


def write_mask_raster(territory: Territory, path: Path) -> None:
    """Write a territory as a uint8 mask GeoTIFF (1 inside, 0 outside)."""
    g = territory.grid
    profile = {
        "driver": "GTiff",
        "width": g.width,
        "height": g.height,
        "count": 1,
        "dtype": "uint8",
        "crs": g.crs,
        "transform": g.transform,
        "compress": "deflate",
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(territory.mask.astype(np.uint8), 1)
