"""Covariate rasters: opened once, checked against a model card and grid, read by window."""

from __future__ import annotations

import hashlib
import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from affine import Affine

from sdmatlas.errors import CovariateError, GridError, ModelMismatchError, NotFoundError
from sdmatlas.grid import Grid
from sdmatlas.models.card import CategoricalInput, ModelCard

CATEGORICAL_MISSING = -1
"""Code of a missing categorical value (nodata, or outside the raster)."""


@dataclass(frozen=True)
class CovariateInfo:
    name: str
    path: Path
    crs: str
    transform: Affine
    width: int
    height: int
    nodata: float | None
    dtype: str


def _describe(name: str, path: Path) -> CovariateInfo:
    import rasterio  # here, not at import: rasterio takes 0.3 s to import, and the API and
    # seed workers import this module whether or not they predict

    if not path.exists():
        raise NotFoundError(f"covariate {name!r}: file {path} does not exist")
    try:
        with rasterio.open(path) as src:
            if src.crs is None:
                raise CovariateError(f"covariate {name!r} ({path}) has no CRS")
            auth = src.crs.to_authority()
            return CovariateInfo(
                name=name,
                path=path,
                crs=f"{auth[0]}:{auth[1]}" if auth else src.crs.to_wkt(),
                transform=src.transform,
                width=src.width,
                height=src.height,
                nodata=src.nodata,
                dtype=src.dtypes[0],
            )
    except rasterio.errors.RasterioIOError as exc:
        raise CovariateError(f"covariate {name!r}: cannot read {path}: {exc}") from exc


class CovariateStack:
    """Named covariate rasters.

    Picklable: open file handles stay in the process that opened them. Handles
    are per thread (a GDAL dataset must not be read from two threads at once),
    so one stack serves Dask workers that run several tasks concurrently.
    """

    def __init__(self, paths: Mapping[str, Path | str]) -> None:
        self.infos = {name: _describe(name, Path(p)) for name, p in paths.items()}
        self._local = threading.local()

    @property
    def _handles(self) -> dict[str, Any]:
        handles: dict[str, Any] | None = getattr(self._local, "handles", None)
        if handles is None:
            handles = self._local.handles = {}
        return handles

    @classmethod
    def from_directory(cls, directory: Path, names: list[str]) -> CovariateStack:
        """``<directory>/<name>.tif`` for each name."""
        return cls({n: Path(directory) / f"{n}.tif" for n in names})

    def __getstate__(self) -> dict[str, Any]:
        return {"infos": self.infos}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.infos = state["infos"]
        self._local = threading.local()

    def close(self) -> None:
        for h in self._handles.values():
            h.close()
        self._handles.clear()

    def checksums(self) -> dict[str, str]:
        """SHA-256 of each covariate file (recorded in the run metadata)."""
        out = {}
        for name, info in sorted(self.infos.items()):
            h = hashlib.sha256()
            with info.path.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
            out[name] = h.hexdigest()
        return out

    def check(self, card: ModelCard, grid: Grid) -> None:
        """Refuse covariates that do not match the card or do not cover the grid."""
        names = [i.name for i in card.inputs]
        missing = [n for n in names if n not in self.infos]
        if missing:
            raise ModelMismatchError(
                f"the model card needs covariates {missing} that were not given "
                f"(given: {sorted(self.infos)})"
            )
        if not grid.same_crs(card.grid.crs):
            raise ModelMismatchError(
                f"the model was trained in {card.grid.crs} but the grid is in {grid.crs}"
            )
        if not math.isclose(grid.res, card.grid.resolution, rel_tol=1e-9):
            raise ModelMismatchError(
                f"the model was trained at {card.grid.resolution} m resolution "
                f"but the grid is at {grid.res}"
            )
        for spec in card.inputs:
            info = self.infos[spec.name]
            if not grid.same_crs(info.crs):
                raise ModelMismatchError(
                    f"covariate {spec.name!r} is in {info.crs}, the model card and grid "
                    f"are in {card.grid.crs}: reproject it first"
                )
            try:
                row, col = grid.offset_in(info.transform, what=f"covariate {spec.name!r}")
            except GridError as exc:
                raise ModelMismatchError(str(exc)) from exc
            if (
                row < 0
                or col < 0
                or row + grid.height > info.height
                or col + grid.width > info.width
            ):
                raise CovariateError(
                    f"covariate {spec.name!r} does not cover the territory: the grid needs "
                    f"rows {row}..{row + grid.height} and columns {col}..{col + grid.width} of "
                    f"a {info.height} x {info.width} raster"
                )
            if isinstance(spec, CategoricalInput) and not np.issubdtype(
                np.dtype(info.dtype), np.integer
            ):
                raise ModelMismatchError(
                    f"covariate {spec.name!r} is categorical in the card but stored as {info.dtype}"
                )

    def read(
        self, name: str, grid: Grid, row0: int, row1: int, col0: int, col1: int
    ) -> npt.NDArray[np.float64] | npt.NDArray[np.int64]:
        """Grid window ``[row0:row1, col0:col1]`` of a covariate (may reach past the grid).

        Continuous rasters come back as float64 with NaN where the raster has
        nodata or no pixel; integer rasters as int64 with ``CATEGORICAL_MISSING``.
        """
        info = self.infos[name]
        r_off, c_off = grid.offset_in(info.transform, what=f"covariate {name!r}")
        r0, r1, c0, c1 = row0 + r_off, row1 + r_off, col0 + c_off, col1 + c_off
        integer = np.issubdtype(np.dtype(info.dtype), np.integer)
        out: npt.NDArray[Any] = np.full(
            (row1 - row0, col1 - col0),
            CATEGORICAL_MISSING if integer else np.nan,
            dtype=np.int64 if integer else np.float64,
        )
        # Read only the part inside the raster; pad by hand (cheaper than a boundless VRT read).
        rr0, rr1 = max(r0, 0), min(r1, info.height)
        cc0, cc1 = max(c0, 0), min(c1, info.width)
        if rr1 <= rr0 or cc1 <= cc0:
            return out
        src = self._handles.get(name)
        if src is None:
            import rasterio  # (see _describe)

            src = self._handles[name] = rasterio.open(info.path)
        data = src.read(1, window=((rr0, rr1), (cc0, cc1)))
        block = data.astype(out.dtype)
        if info.nodata is not None:
            nd = data == info.nodata if not np.isnan(info.nodata) else np.isnan(data)
            block[nd] = CATEGORICAL_MISSING if integer else np.nan
        out[rr0 - r0 : rr1 - r0, cc0 - c0 : cc1 - c0] = block
        return out
