"""The species cube of a release: a Zarr v3 group on the release grid.

Layout (``<cube>/``)::

    zarr.json                 group; attrs["sdmatlas"] holds the run metadata
    probability/              uint8 [species, y, x], chunks [1, chunk, chunk] stored in
                              shards [SHARD_SPECIES, chunk, chunk] (one file per spatial
                              chunk and species group), fill 255 (nodata),
                              q = rint(p * 254)
    species/ x/ y/            coordinates (species ids, pixel-centre x and y)
    spatial_ref/              0-d; CF grid mapping (crs_wkt, GeoTransform) for xarray/GDAL
    _sdmatlas/                an empty Zarr group holding the bookkeeping:
    _sdmatlas/done/<iy>.<ix>  one marker per finished spatial chunk (JSON)

A chunk task writes its whole region, then its marker (atomically). The
group's ``status`` turns from ``running`` to ``complete`` only after every
chunk has a marker, so a reader that checks it never sees half a release.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import numpy.typing as npt
import zarr
from pyproj import CRS
from zarr.codecs import ZstdCodec

from sdmatlas import quantize
from sdmatlas.chunk_writer import ChunkWriter, remove_partials
from sdmatlas.errors import IncompleteReleaseError, NotFoundError, ReleaseExistsError
from sdmatlas.grid import ChunkWindow, Grid
from sdmatlas.zarr_access import sdmatlas_attrs

FORMAT_VERSION = 1
SHARD_SPECIES = 256
"""Species per shard. A chunk task writes whole shards only (no read-modify-write), and
one map tile reads one inner chunk of one shard (a byte range). Measured on the demo:
sharded writes take half the time of one file per chunk (bench/predict.py, docs/prediction.md).
"""
PROBABILITY = "probability"
MARKERS = "_sdmatlas/done"
Status = Literal["running", "complete"]


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def fingerprint(parts: dict[str, Any]) -> str:
    """A stable digest of everything that determines a cube's content."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


class Cube:
    """A species cube on disk (opened, never held open: safe to pickle to workers)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    # -- metadata ----------------------------------------------------------------------

    @property
    def meta(self) -> dict[str, Any]:
        try:
            return sdmatlas_attrs(zarr.open_group(self.path, mode="r"))
        except NotFoundError:
            raise NotFoundError(f"{self.path} is a Zarr group but not an sdmatlas cube") from None

    @property
    def status(self) -> Status:
        status: Status = self.meta["status"]
        return status

    @property
    def is_complete(self) -> bool:
        return self.status == "complete"

    @property
    def grid(self) -> Grid:
        return Grid.model_validate(self.meta["grid"])

    @property
    def species_ids(self) -> list[int]:
        return [int(s) for s in self.meta["species_ids"]]

    @property
    def species_names(self) -> list[str]:
        names = zarr.open_array(self.path / "species", mode="r").attrs.get("names", [])
        return [str(n) for n in cast(list[Any], names)]

    def _update_meta(self, **changes: Any) -> None:
        group = zarr.open_group(self.path, mode="r+")
        meta = dict(cast(dict[str, Any], group.attrs["sdmatlas"]))
        meta.update(changes)
        group.attrs["sdmatlas"] = meta

    # -- markers ---------------------------------------------------------------------------

    @property
    def _marker_dir(self) -> Path:
        return self.path / MARKERS

    def done_chunks(self) -> set[str]:
        if not self._marker_dir.exists():
            return set()
        return {p.name for p in self._marker_dir.iterdir() if not p.name.startswith(".")}

    def mark_done(self, window: ChunkWindow, info: dict[str, Any]) -> None:
        """Record a finished chunk (write-then-rename: the marker appears whole or not at all)."""
        self._marker_dir.mkdir(parents=True, exist_ok=True)
        tmp = self._marker_dir / f".{window.key}.{uuid.uuid4().hex}"
        tmp.write_text(json.dumps(info))
        os.replace(tmp, self._marker_dir / window.key)

    # -- data ----------------------------------------------------------------------------------

    def array(self, mode: Literal["r", "r+"] = "r") -> zarr.Array[Any]:
        return zarr.open_array(self.path / PROBABILITY, mode=mode)

    def write_region(self, window: ChunkWindow, codes: npt.NDArray[np.uint8]) -> None:
        """Write all species of one spatial chunk (aligned: no other task touches it), one
        whole shard file at a time (:mod:`sdmatlas.chunk_writer`; zarr-python's own write
        took 87 ms for a 64 x 64 x 200 chunk, most of an on-demand job's write time)."""
        ChunkWriter.of(self.array("r+")).write((0, window.row0, window.col0), codes)

    def read(self, require_complete: bool = True) -> npt.NDArray[np.uint8]:
        """The whole cube as uint8 codes (small cubes and tests only)."""
        if require_complete and not self.is_complete:
            raise IncompleteReleaseError(
                f"cube {self.path} is {self.status}: resume its prediction run first"
            )
        return np.asarray(self.array()[...])

    # -- lifecycle ---------------------------------------------------------------------------------

    def remove_partials(self) -> int:
        """Delete temporary files left by writes that a killed run interrupted.

        The chunk writer writes ``<shard>.<hex>.partial`` and renames it into place; a
        SIGKILL between the two leaves the temporary file behind. Readers never see it,
        but it wastes space. Returns how many were removed.
        """
        removed = remove_partials(self.path / PROBABILITY)
        for p in self._marker_dir.glob(".*") if self._marker_dir.exists() else []:
            p.unlink(missing_ok=True)
            removed += 1
        return removed

    def add_run(self, run: dict[str, Any], complete: bool) -> None:
        meta = self.meta
        self._update_meta(
            runs=[*meta.get("runs", []), run], status="complete" if complete else "running"
        )


def write_georef(group: zarr.Group, grid: Grid) -> None:
    """Pixel-centre ``x``/``y`` coordinates and a CF ``spatial_ref`` grid mapping in ``group``,
    so that xarray/rioxarray and GDAL open its arrays with the right georeferencing."""
    xs, ys = grid.pixel_centres()
    for name, values in (("x", xs), ("y", ys)):
        a = group.create_array(
            name,
            shape=values.shape,
            dtype="float64",
            dimension_names=(name,),
            attributes={"units": "m", "standard_name": f"projection_{name}_coordinate"},
        )
        a[:] = values
    crs = CRS.from_user_input(grid.crs)
    t = grid.transform
    group.create_array(
        "spatial_ref",
        shape=(),
        dtype="int64",
        attributes={
            "crs_wkt": crs.to_wkt(),
            "spatial_ref": crs.to_wkt(),
            "GeoTransform": f"{t.c} {t.a} {t.b} {t.f} {t.d} {t.e}",
        },
    )


def create_cube(
    path: Path,
    grid: Grid,
    species_ids: list[int],
    species_names: list[str],
    meta: dict[str, Any],
) -> Cube:
    """Create an empty cube at ``path`` (built beside it, then renamed into place)."""
    path = Path(path)
    if path.exists():
        raise ReleaseExistsError(f"{path} already exists")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.creating-{uuid.uuid4().hex[:8]}")
    try:
        group = zarr.open_group(tmp, mode="w", zarr_format=3)
        s = len(species_ids)
        prob = group.create_array(
            PROBABILITY,
            shape=(s, grid.height, grid.width),
            chunks=(1, grid.chunk, grid.chunk),
            shards=(min(s, SHARD_SPECIES), grid.chunk, grid.chunk),
            dtype="uint8",
            fill_value=quantize.NODATA,
            compressors=ZstdCodec(level=3),
            dimension_names=("species", "y", "x"),
            attributes={
                "long_name": "probability of presence",
                "units": "1",
                "scale_factor": quantize.SCALE,
                "add_offset": 0.0,
                "grid_mapping": "spatial_ref",
                "encoding": quantize.ENCODING,
            },
        )
        del prob
        write_georef(group, grid)
        sp = group.create_array(
            "species",
            shape=(s,),
            dtype="int64",
            dimension_names=("species",),
            attributes={"names": species_names},
        )
        sp[:] = np.asarray(species_ids, dtype=np.int64)
        # A real (empty) subgroup, so that Zarr and xarray list it without warnings;
        # the done markers are plain files below it.
        group.create_group(
            MARKERS.split("/")[0],
            attributes={
                "description": "prediction bookkeeping: done/<iy>.<ix> marks a finished chunk"
            },
        )
        group.attrs["sdmatlas"] = {
            "format_version": FORMAT_VERSION,
            "status": "running",
            "created": now(),
            "grid": grid.model_dump(),
            "encoding": quantize.ENCODING,
            "species_ids": list(species_ids),
            "runs": [],
            **meta,
        }
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Cube(path)


def open_cube(path: Path) -> Cube:
    path = Path(path)
    if not (path / "zarr.json").exists():
        raise NotFoundError(f"no sdmatlas cube at {path}")
    cube = Cube(path)
    _ = cube.meta  # validates
    return cube


def is_cube(path: Path) -> bool:
    with contextlib.suppress(Exception):
        open_cube(path)
        return True
    return False
