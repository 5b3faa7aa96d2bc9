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
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import rasterio
from affine import Affine
from rasterio.features import rasterize
from rasterio.warp import transform_geom
from rasterio.windows import Window
from shapely.geometry import mapping, shape
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union
from shapely.validation import explain_validity

from sdmatlas.errors import NotFoundError, TerritoryError
from sdmatlas.grid import DEFAULT_CRS, ChunkWindow, Grid

MAX_VERTICES = 1_000_000


class MaskSource(ABC):
    """Where a territory's mask comes from, read one window at a time."""

    @abstractmethod
    def read(self, grid: Grid, rows: slice, cols: slice) -> npt.NDArray[np.bool_]: ...


@dataclass(frozen=True)
class InMemoryMask(MaskSource):
    mask: npt.NDArray[np.bool_]

    def read(self, grid: Grid, rows: slice, cols: slice) -> npt.NDArray[np.bool_]:
        return self.mask[rows, cols]


@dataclass(frozen=True)
class RasterMask(MaskSource):
    """A mask GeoTIFF on the grid (non-zero, non-nodata pixels are inside), read by
    windows: its tiles are read as the windows need them, never the whole raster."""

    path: Path

    def read(self, grid: Grid, rows: slice, cols: slice) -> npt.NDArray[np.bool_]:
        window = Window(cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start)
        with rasterio.open(self.path) as src:
            band = src.read(1, window=window, masked=True)
        return np.asarray(band.filled(0) != 0)


@dataclass(frozen=True)
class GeometryMask(MaskSource):
    """A polygon in the grid's CRS, rasterised window by window (a pixel is inside when
    its centre is)."""

    geometry: BaseGeometry

    def read(self, grid: Grid, rows: slice, cols: slice) -> npt.NDArray[np.bool_]:
        transform = grid.transform @ Affine.translation(cols.start, rows.start)
        shape = (rows.stop - rows.start, cols.stop - cols.start)
        burned = rasterize(
            [(mapping(self.geometry), 1)], out_shape=shape, transform=transform, dtype="uint8"
        )
        return np.asarray(burned.astype(bool))


@dataclass(frozen=True)
class WindowOf(MaskSource):
    """The mask of ``source`` on ``parent`` (a larger grid), seen from a window of it that
    starts at ``(row0, col0)``: an on-demand job's territory within the model's coverage."""

    source: MaskSource
    parent: Grid
    row0: int
    col0: int

    def read(self, grid: Grid, rows: slice, cols: slice) -> npt.NDArray[np.bool_]:
        r, c = self.row0, self.col0
        return self.source.read(
            self.parent, slice(rows.start + r, rows.stop + r), slice(cols.start + c, cols.stop + c)
        )


@dataclass(frozen=True)
class BothMasks(MaskSource):
    """Pixels inside both masks."""

    a: MaskSource
    b: MaskSource

    def read(self, grid: Grid, rows: slice, cols: slice) -> npt.NDArray[np.bool_]:
        return self.a.read(grid, rows, cols) & self.b.read(grid, rows, cols)


class Territory:
    """A grid and the pixels to predict on it.

    The mask is read window by window from its source (:meth:`chunk_mask`, :meth:`bands`):
    prediction never holds the whole mask of a large territory (Europe at 50 m is about
    8 GB as booleans). :attr:`mask` reads it whole, for small territories only.
    """

    def __init__(
        self,
        grid: Grid,
        mask: npt.NDArray[np.bool_] | None = None,
        name: str = "territory",
        *,
        source: MaskSource | None = None,
    ) -> None:
        self.grid = grid
        self.name = name
        if mask is not None:
            if mask.shape != grid.shape:
                raise TerritoryError(f"mask shape {mask.shape} != grid shape {grid.shape}")
            if not mask.any():
                raise TerritoryError(f"territory {name!r} has no pixel on the grid")
            source = InMemoryMask(np.asarray(mask, dtype=bool))
        if source is None:
            raise TerritoryError("a territory needs a mask or a mask source")
        self.source = source

    def chunk_mask(self, window: ChunkWindow) -> npt.NDArray[np.bool_]:
        return self.source.read(
            self.grid, slice(window.row0, window.row1), slice(window.col0, window.col1)
        )

    def bands(self) -> Iterator[tuple[int, npt.NDArray[np.bool_]]]:
        """``(row0, mask rows)`` for each row of chunks, top to bottom."""
        g = self.grid
        for row0 in range(0, g.height, g.chunk):
            rows = slice(row0, min(row0 + g.chunk, g.height))
            yield row0, self.source.read(g, rows, slice(0, g.width))

    @property
    def mask(self) -> npt.NDArray[np.bool_]:
        """The whole mask (small territories: demo, tests)."""
        if isinstance(self.source, InMemoryMask):
            return self.source.mask
        return np.concatenate([band for _, band in self.bands()])

    @property
    def n_pixels(self) -> int:
        return sum(int(band.sum()) for _, band in self.bands())

    def digest(self) -> str:
        """SHA-256 of the grid and the mask (the mask's bits in row-major order, packed as
        ``np.packbits`` of the whole mask would be): identifies the territory in run
        fingerprints. Computed band by band."""
        h = hashlib.sha256(self.grid.model_dump_json().encode())
        carry = np.zeros(0, dtype=bool)
        for _, band in self.bands():
            bits = np.concatenate([carry, band.ravel()])
            whole = bits.size - bits.size % 8
            h.update(np.packbits(bits[:whole]).tobytes())
            carry = bits[whole:]
        if carry.size:
            h.update(np.packbits(carry).tobytes())
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
    """A territory read from a mask raster window by window, as prediction needs it."""
    with rasterio.open(path) as src:
        if src.crs is None:
            raise TerritoryError(f"{path} has no CRS")
        auth = src.crs.to_authority()
        crs = f"{auth[0]}:{auth[1]}" if auth else src.crs.to_wkt()
        grid = Grid.from_transform(src.transform, src.width, src.height, crs, chunk=chunk)
    return Territory(grid, name=path.stem, source=RasterMask(Path(path).resolve()))


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
    return Territory(grid, name=path.stem, source=GeometryMask(projected))


def mask_from_geometry(grid: Grid, geom: BaseGeometry) -> npt.NDArray[np.bool_]:
    """Pixels of ``grid`` whose centre lies in ``geom`` (given in the grid's CRS)."""
    return GeometryMask(geom).read(grid, slice(0, grid.height), slice(0, grid.width))


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
        for row0, band in territory.bands():
            window = Window(0, row0, g.width, band.shape[0])
            dst.write(band.astype(np.uint8), 1, window=window)
