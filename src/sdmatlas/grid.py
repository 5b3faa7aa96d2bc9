"""The reference grid of a release: CRS, resolution, aligned extent and chunking.

Every array of a release (cube, pyramids, indicators, exports) lives on one
grid. Pixel ``(row, col)`` covers ``[x0 + col*res, x0 + (col+1)*res)`` by
``(y0 - (row+1)*res, y0 - row*res]``; rows count downwards from the top edge
``y0``. Chunks are ``chunk x chunk`` squares counted from the top-left corner.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt
from affine import Affine
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pyproj import CRS, Transformer

from sdmatlas.errors import GridError

DEFAULT_CRS = "EPSG:3035"
"""ETRS89-LAEA Europe, the INSPIRE/EEA reference grid."""

_ALIGN_TOL = 1e-6  # in pixels: how far from a pixel edge still counts as aligned


@dataclass(frozen=True, slots=True)
class ChunkWindow:
    """One chunk of a grid: its index and pixel window (half-open)."""

    iy: int
    ix: int
    row0: int
    row1: int
    col0: int
    col1: int

    @property
    def key(self) -> str:
        return f"{self.iy}.{self.ix}"

    @property
    def shape(self) -> tuple[int, int]:
        return (self.row1 - self.row0, self.col1 - self.col0)


@functools.lru_cache(maxsize=64)
def transformer(src: str, dst: str) -> Transformer:
    """An always-xy transformer, made once per pair of CRS per process: making one costs
    10-50 ms, and grids are rebuilt often (from the catalog, per request)."""
    return Transformer.from_crs(src, dst, always_xy=True)


class Grid(BaseModel):
    """A north-up grid with square pixels, aligned to its resolution."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    crs: str = Field(default=DEFAULT_CRS, description="CRS as an authority string, e.g. EPSG:3035")
    res: float = Field(gt=0, description="Pixel size in CRS units")
    x0: float = Field(description="Left edge (CRS units)")
    y0: float = Field(description="Top edge (CRS units)")
    width: int = Field(gt=0, le=10_000_000)
    height: int = Field(gt=0, le=10_000_000)
    chunk: int = Field(default=256, ge=1, le=8192, description="Chunk edge in pixels")

    @field_validator("crs")
    @classmethod
    def _known_crs(cls, value: str) -> str:
        try:
            crs = CRS.from_user_input(value)
        except Exception as exc:
            raise ValueError(f"unknown CRS {value!r}: {exc}") from exc
        auth = crs.to_authority()
        return f"{auth[0]}:{auth[1]}" if auth else crs.to_wkt()

    # -- construction -----------------------------------------------------------------

    @classmethod
    def from_bounds(
        cls,
        left: float,
        bottom: float,
        right: float,
        top: float,
        res: float,
        crs: str = DEFAULT_CRS,
        chunk: int = 256,
    ) -> Grid:
        """The smallest grid aligned to ``res`` (edges on multiples of it) covering the bounds."""
        if not (right > left and top > bottom):
            raise GridError(
                f"bounds must have right > left and top > bottom, got {left, bottom, right, top}"
            )
        x0 = math.floor(left / res + _ALIGN_TOL) * res
        x1 = math.ceil(right / res - _ALIGN_TOL) * res
        y1 = math.floor(bottom / res + _ALIGN_TOL) * res
        y0 = math.ceil(top / res - _ALIGN_TOL) * res
        return cls(
            crs=crs,
            res=res,
            x0=x0,
            y0=y0,
            width=round((x1 - x0) / res),
            height=round((y0 - y1) / res),
            chunk=chunk,
        )

    @classmethod
    def from_transform(
        cls, transform: Affine, width: int, height: int, crs: str, chunk: int = 256
    ) -> Grid:
        """The grid of a north-up raster with square pixels."""
        if transform.b != 0 or transform.d != 0:
            raise GridError("rotated rasters are not supported: the transform must be north-up")
        if not math.isclose(transform.a, -transform.e, rel_tol=1e-9):
            raise GridError(f"pixels must be square, got {transform.a} x {-transform.e} CRS units")
        return cls(
            crs=crs,
            res=transform.a,
            x0=transform.c,
            y0=transform.f,
            width=width,
            height=height,
            chunk=chunk,
        )

    # -- geometry -----------------------------------------------------------------------

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def transform(self) -> Affine:
        return Affine(self.res, 0.0, self.x0, 0.0, -self.res, self.y0)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in grid CRS units."""
        return (
            self.x0,
            self.y0 - self.height * self.res,
            self.x0 + self.width * self.res,
            self.y0,
        )

    @property
    def chunk_shape(self) -> tuple[int, int]:
        """Number of chunks along (y, x)."""
        return (math.ceil(self.height / self.chunk), math.ceil(self.width / self.chunk))

    @cached_property
    def _to_lonlat(self) -> Transformer:
        return transformer(self.crs, "EPSG:4326")

    @cached_property
    def _from_lonlat(self) -> Transformer:
        return transformer("EPSG:4326", self.crs)

    def xy(
        self, rows: npt.ArrayLike, cols: npt.ArrayLike
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Projected coordinates of pixel centres."""
        r = np.asarray(rows, dtype=np.float64)
        c = np.asarray(cols, dtype=np.float64)
        return self.x0 + (c + 0.5) * self.res, self.y0 - (r + 0.5) * self.res

    def rowcol(
        self, xs: npt.ArrayLike, ys: npt.ArrayLike
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Pixel indices containing projected points (may fall outside the grid)."""
        x = np.asarray(xs, dtype=np.float64)
        y = np.asarray(ys, dtype=np.float64)
        cols = np.floor((x - self.x0) / self.res).astype(np.int64)
        rows = np.floor((self.y0 - y) / self.res).astype(np.int64)
        return rows, cols

    def contains(self, rows: npt.ArrayLike, cols: npt.ArrayLike) -> npt.NDArray[np.bool_]:
        r = np.asarray(rows)
        c = np.asarray(cols)
        return (r >= 0) & (r < self.height) & (c >= 0) & (c < self.width)

    def lonlat(
        self, rows: npt.ArrayLike, cols: npt.ArrayLike
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """WGS84 longitude and latitude of pixel centres."""
        x, y = self.xy(rows, cols)
        lon, lat = self._to_lonlat.transform(x, y)
        return np.asarray(lon), np.asarray(lat)

    def rowcol_from_lonlat(
        self, lon: npt.ArrayLike, lat: npt.ArrayLike
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        x, y = self._from_lonlat.transform(np.asarray(lon), np.asarray(lat))
        return self.rowcol(x, y)

    def pixel_centres(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """1-D x (columns) and y (rows) coordinates of pixel centres."""
        return self.xy(0, np.arange(self.width))[0], self.xy(np.arange(self.height), 0)[1]

    # -- chunks ---------------------------------------------------------------------------

    def chunk_window(self, iy: int, ix: int) -> ChunkWindow:
        ny, nx = self.chunk_shape
        if not (0 <= iy < ny and 0 <= ix < nx):
            raise GridError(f"chunk ({iy}, {ix}) is outside the {ny} x {nx} chunk grid")
        r0, c0 = iy * self.chunk, ix * self.chunk
        return ChunkWindow(
            iy, ix, r0, min(r0 + self.chunk, self.height), c0, min(c0 + self.chunk, self.width)
        )

    def chunks(self) -> Iterator[ChunkWindow]:
        ny, nx = self.chunk_shape
        for iy in range(ny):
            for ix in range(nx):
                yield self.chunk_window(iy, ix)

    # -- other rasters on this grid --------------------------------------------------------

    def same_crs(self, other: Any) -> bool:
        return bool(CRS.from_user_input(self.crs) == CRS.from_user_input(other))

    def offset_in(self, transform: Affine, what: str = "raster") -> tuple[int, int]:
        """(row, col) of this grid's top-left pixel inside a raster with ``transform``.

        Raises GridError when the raster is not on the same pixel lattice (other
        resolution, rotation, or an origin that is not a whole number of pixels away).
        """
        if transform.b != 0 or transform.d != 0:
            raise GridError(f"{what} is rotated; only north-up rasters are accepted")
        if not (
            math.isclose(transform.a, self.res, rel_tol=1e-9)
            and math.isclose(-transform.e, self.res, rel_tol=1e-9)
        ):
            raise GridError(
                f"{what} has resolution {transform.a} x {-transform.e}, "
                f"the grid has {self.res}: resample it onto the grid first"
            )
        col = (self.x0 - transform.c) / self.res
        row = (transform.f - self.y0) / self.res
        if abs(col - round(col)) > _ALIGN_TOL or abs(row - round(row)) > _ALIGN_TOL:
            raise GridError(
                f"{what} is not aligned with the grid: its origin ({transform.c}, {transform.f}) "
                f"is {col:.3f}, {row:.3f} pixels away from the grid's ({self.x0}, {self.y0})"
            )
        return round(row), round(col)
