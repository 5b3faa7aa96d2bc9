"""Build the demo inputs: covariate COGs, the territory mask, species and surveys.

Everything is generated from seeds and is reproducible; only the land/sea mask
is real data (see :mod:`sdmatlas.demo.region`).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import rasterio

from sdmatlas.demo import region, world
from sdmatlas.demo.virtual_species import (
    VirtualSpecies,
    probability,
    read_species_csv,
    simulate_species,
    write_species_csv,
)
from sdmatlas.demo.world import Fields
from sdmatlas.grid import Grid
from sdmatlas.territory import Territory, write_mask_raster

COVARIATE_MARGIN = 16
"""Covariates extend this many pixels beyond the territory grid, as real products do."""
FLOAT_NODATA = -9999.0
CLASS_NODATA = 0


@dataclass(frozen=True)
class DemoPaths:
    root: Path

    @property
    def covariates(self) -> Path:
        return self.root / "covariates"

    @property
    def territory(self) -> Path:
        return self.root / "territory.tif"

    @property
    def species(self) -> Path:
        return self.root / "species.csv"

    @property
    def surveys(self) -> Path:
        return self.root / "surveys.csv"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    def covariate_paths(self) -> dict[str, Path]:
        return {name: self.covariates / f"{name}.tif" for name in world.COVARIATES}

    def exists(self) -> bool:
        return self.manifest.exists()


def grid_fields(
    grid: Grid,
) -> tuple[
    npt.NDArray[np.float64],
    npt.NDArray[np.float64],
    Fields,
]:
    xs, ys = grid.pixel_centres()
    x, y = np.meshgrid(xs, ys)
    return x, y, world.covariate_fields(x, y)


def write_covariates(
    grid: Grid, directory: Path, margin: int = COVARIATE_MARGIN
) -> dict[str, Path]:
    """Write the four covariates as COGs on ``grid`` grown by ``margin`` pixels; sea is nodata."""
    big = Grid(
        crs=grid.crs,
        res=grid.res,
        x0=grid.x0 - margin * grid.res,
        y0=grid.y0 + margin * grid.res,
        width=grid.width + 2 * margin,
        height=grid.height + 2 * margin,
        chunk=grid.chunk,
    )
    _, _, fields = grid_fields(big)
    land = region.land_mask(big)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, meta in world.COVARIATES.items():
        categorical = meta["kind"] == "categorical"
        data = np.asarray(fields[name])
        if categorical:
            arr = np.where(land, data, CLASS_NODATA).astype(np.uint8)
        else:
            arr = np.where(land, data, FLOAT_NODATA).astype(np.float32)
        path = directory / f"{name}.tif"
        profile = {
            "driver": "COG",
            "width": big.width,
            "height": big.height,
            "count": 1,
            "dtype": arr.dtype.name,
            "crs": big.crs,
            "transform": big.transform,
            "nodata": CLASS_NODATA if categorical else FLOAT_NODATA,
            "compress": "deflate",
            "blocksize": 256,
            "resampling": "mode" if categorical else "average",
        }
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(arr, 1)
            dst.update_tags(1, units=meta["units"], source="synthetic (sdmatlas.demo.world)")
            if categorical:
                dst.update_tags(1, classes=json.dumps(world.LANDCOVER_CLASSES))
        paths[name] = path
    return paths


def true_probabilities(
    species: list[VirtualSpecies], territory: Territory
) -> npt.NDArray[np.float32]:
    """The known probability of every species on every territory pixel: ``[S, N_land]``."""
    x, y, fields = grid_fields(territory.grid)
    m = territory.mask
    land_fields = {k: np.asarray(v)[m] for k, v in fields.items()}
    return np.stack([probability(sp, x[m], y[m], land_fields) for sp in species])


def sample_surveys(
    species: list[VirtualSpecies],
    territory: Territory,
    n_sites: int,
    seed: int,
    test_fraction: float = 0.2,
) -> tuple[
    npt.NDArray[np.intp], npt.NDArray[np.intp], npt.NDArray[np.uint8], npt.NDArray[np.bool_]
]:
    """Presence/absence surveys at random territory pixels: rows, cols, [sites, S], is_test."""
    rng = np.random.default_rng(seed)
    rr, cc = np.nonzero(territory.mask)
    pick = rng.choice(len(rr), size=min(n_sites, len(rr)), replace=False)
    rows, cols = rr[pick], cc[pick]
    x, y = territory.grid.xy(rows, cols)
    fields = world.covariate_fields(x, y)
    p = np.stack([probability(sp, x, y, fields) for sp in species], axis=1)
    presence = (rng.random(p.shape) < p).astype(np.uint8)
    is_test = rng.random(len(rows)) < test_fraction
    return rows, cols, presence, is_test


def write_surveys(
    path: Path,
    grid: Grid,
    species: list[VirtualSpecies],
    rows: npt.NDArray[np.intp],
    cols: npt.NDArray[np.intp],
    presence: npt.NDArray[np.uint8],
    is_test: npt.NDArray[np.bool_],
) -> None:
    x, y = grid.xy(rows, cols)
    lon, lat = grid.lonlat(rows, cols)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["site_id", "x", "y", "lon", "lat", "split", *(f"sp{sp.id}" for sp in species)])
        for i in range(len(rows)):
            w.writerow(
                [
                    i + 1,
                    f"{x[i]:.1f}",
                    f"{y[i]:.1f}",
                    f"{lon[i]:.5f}",
                    f"{lat[i]:.5f}",
                    "test" if is_test[i] else "train",
                    *presence[i].tolist(),
                ]
            )


def read_surveys(
    path: Path, grid: Grid
) -> tuple[
    npt.NDArray[np.intp],
    npt.NDArray[np.intp],
    npt.NDArray[np.uint8],
    npt.NDArray[np.bool_],
    list[int],
]:
    """rows, cols, presence [sites, S], is_test, species ids."""
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        body = list(reader)
    species_ids = [int(h[2:]) for h in header[6:]]
    x = np.array([float(r[1]) for r in body])
    y = np.array([float(r[2]) for r in body])
    rows, cols = grid.rowcol(x, y)
    presence = np.array([[int(v) for v in r[6:]] for r in body], dtype=np.uint8)
    is_test = np.array([r[5] == "test" for r in body])
    return rows, cols, presence, is_test, species_ids


def build_demo(
    root: Path,
    res: float = region.RESOLUTION,
    n_species: int = 200,
    n_sites: int = 8000,
    seed: int = 42,
) -> DemoPaths:
    """Write every demo input under ``root`` (overwriting files of a previous build)."""
    paths = DemoPaths(Path(root))
    paths.root.mkdir(parents=True, exist_ok=True)
    grid = region.demo_grid(res=res)
    territory = region.demo_territory(grid)
    write_covariates(grid, paths.covariates)
    write_mask_raster(territory, paths.territory)
    x, y, fields = grid_fields(grid)
    m = territory.mask
    species = simulate_species(
        n_species, x[m], y[m], {k: np.asarray(v)[m] for k, v in fields.items()}, seed=seed
    )
    write_species_csv(species, paths.species)
    rows, cols, presence, is_test = sample_surveys(species, territory, n_sites, seed + 1)
    write_surveys(paths.surveys, grid, species, rows, cols, presence, is_test)
    manifest = {
        "name": region.NAME,
        "title": region.TITLE,
        "grid": grid.model_dump(),
        "n_species": n_species,
        "n_sites": len(rows),
        "seed": seed,
        "real": ["land/sea mask: global-land-mask 1.0.0 (GLOBE-derived, 30 arc-seconds)"],
        "simulated": [
            "elevation, temperature, precipitation, land cover (sdmatlas.demo.world)",
            "species: virtual species with known response curves (sdmatlas.demo.virtual_species)",
            "surveys: presence/absence drawn from the true probabilities",
        ],
    }
    paths.manifest.write_text(json.dumps(manifest, indent=2))
    return paths


def load_species(paths: DemoPaths) -> list[VirtualSpecies]:
    return read_species_csv(paths.species)
