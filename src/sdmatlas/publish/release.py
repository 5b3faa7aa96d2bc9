"""``publish``: a complete cube becomes a release, written beside and renamed into place.

Release layout (``<root>/<release_id>/``, one Zarr v3 group)::

    zarr.json                    attrs: "sdmatlas" (manifest), "multiscales" (GeoZarr-style)
    levels/<k>/probability       uint8 [species, y, x] at 2^k times the grid resolution
    levels/<k>/<indicator>       float32 [y, x], NaN outside the territory
    levels/<k>/x, y, spatial_ref georeferencing of the level
    pixels                       uint8 [y, x, species], chunks [8, 8, S]: one chunk read
                                 answers "every species at this point"
    blocks/<edge>/...            block aggregates at edges 8, 64 and 512: per species the
                                 sum and maximum of codes, territory pixels, and per
                                 indicator count, sum, min, max (sdmatlas.publish.aggregates)
    territory                    uint8 [y, x]: 1 on territory pixels
    species                      int64 [species] ids, in cube order

Area queries read ``blocks/<edge>/*`` for the coarsest blocks a polygon covers entirely
and ``pixels`` only for the 8 x 8 blocks on its boundary (see
:mod:`sdmatlas.publish.queries`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import zarr
from zarr.codecs import TransposeCodec, ZstdCodec

from sdmatlas.errors import (
    CorruptDataError,
    IncompleteReleaseError,
    InvalidInputError,
    NotFoundError,
    ReleaseExistsError,
)
from sdmatlas.grid import ChunkWindow, Grid
from sdmatlas.predict.cube import SHARD_SPECIES, now, open_cube, write_georef
from sdmatlas.publish import aggregates
from sdmatlas.publish.indicators import INDICATORS, SpeciesInfo, threshold_code
from sdmatlas.publish.levels import downsample_codes, downsample_weights, level_count
from sdmatlas.publish.stats import SpeciesStats, float_summary
from sdmatlas.quantize import ENCODING, NODATA
from sdmatlas.storage import ReleaseStore, release_store
from sdmatlas.zarr_access import array, sdmatlas_attrs

FORMAT_VERSION = 2
BLOCK = 8
"""Edge of the pixel-major chunks and of the area-query blocks (pixels)."""
RELEASE_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class PublishOptions:
    threshold: float = 0.5
    min_level_size: int = 256


def _zstd() -> ZstdCodec:
    return ZstdCodec(level=3)


def validate_release_id(release_id: str) -> str:
    if not RELEASE_ID.match(release_id):
        raise InvalidInputError(
            f"release id {release_id!r} must be 1-100 characters of a-z, 0-9, '.', '_', '-' "
            "and start with a letter or digit"
        )
    return release_id


def _level_grid(grid: Grid, k: int) -> Grid:
    f = 2**k
    return Grid(
        crs=grid.crs,
        res=grid.res * f,
        x0=grid.x0,
        y0=grid.y0,
        width=-(-grid.width // f),
        height=-(-grid.height // f),
        chunk=grid.chunk,
    )


def publish(
    cube_path: Path,
    root: ReleaseStore | Path | str,
    release_id: str,
    species: SpeciesInfo,
    options: PublishOptions | None = None,
    progress: Progress | None = None,
) -> str:
    """Publish a complete cube as ``release_id`` in ``root`` (a directory, an fsspec URL or
    a :class:`~sdmatlas.storage.ReleaseStore`); returns the release's location.

    Nothing is visible under ``release_id`` until everything is written: the
    release is built in the store's staging location and committed in one step
    (a rename, or one pointer object). A failure leaves no release, and removes
    the partial data.
    """
    options = options or PublishOptions()
    validate_release_id(release_id)
    if not 0.0 < options.threshold <= 1.0:
        raise InvalidInputError(f"threshold must be in (0, 1], got {options.threshold}")
    cube = open_cube(cube_path)
    if not cube.is_complete:
        raise IncompleteReleaseError(
            f"cube {cube_path} is {cube.status}: finish its prediction (--resume) before publishing"
        )
    meta = cube.meta
    ids = np.asarray(cube.species_ids, dtype=np.int64)
    if not np.array_equal(species.ids, ids):
        raise InvalidInputError(
            "the species information does not list the cube's species in the cube's order"
        )
    grid = cube.grid
    if grid.chunk % BLOCK:
        raise InvalidInputError(f"the cube's chunk ({grid.chunk}) must be a multiple of {BLOCK}")
    store = release_store(root)
    if store.exists(release_id):
        raise ReleaseExistsError(
            f"release {release_id!r} already exists at {store.location(release_id)}"
        )
    staging = store.begin(release_id)
    try:
        _write_release(
            cube.array(),
            grid,
            meta,
            species,
            cube.species_names,
            options,
            staging.group,
            release_id,
            progress,
        )
        store.commit(staging)
    except BaseException:
        store.abort(staging)
        raise
    return store.location(release_id)


def _read_chunk(src: zarr.Array[Any], win: ChunkWindow) -> np.ndarray:
    """All species of one spatial chunk of the cube; a chunk that cannot be decoded is
    named in a :class:`CorruptDataError` (the publish is then aborted, leaving nothing)."""
    try:
        return np.asarray(src[:, win.row0 : win.row1, win.col0 : win.col1])
    except Exception as exc:  # zarr/numcodecs raise several unrelated types on bad bytes
        raise CorruptDataError(
            f"cube chunk rows {win.row0}:{win.row1}, cols {win.col0}:{win.col1} cannot be "
            f"decoded ({type(exc).__name__}: {exc}); re-run the prediction of that chunk"
        ) from exc


def _write_release(
    src: zarr.Array[Any],
    grid: Grid,
    cube_meta: dict[str, Any],
    species: SpeciesInfo,
    names: list[str],
    options: PublishOptions,
    root: zarr.Group,
    release_id: str,
    progress: Progress | None,
) -> None:
    t_start = time.perf_counter()
    s, h, w = src.shape
    n_levels = level_count(h, w, options.min_level_size)
    sp = root.create_array(
        "species",
        shape=(s,),
        dtype="int64",
        dimension_names=("species",),
        attributes={"names": names},
    )
    sp[:] = species.ids
    levels = [root.require_group(f"levels/{k}") for k in range(n_levels)]
    for k, g in enumerate(levels):
        lg = _level_grid(grid, k)
        write_georef(g, lg)
        g.create_array(
            "probability",
            shape=(s, lg.height, lg.width),
            chunks=(1, grid.chunk, grid.chunk),
            shards=(min(s, SHARD_SPECIES), grid.chunk, grid.chunk),
            dtype="uint8",
            fill_value=NODATA,
            compressors=_zstd(),
            dimension_names=("species", "y", "x"),
            attributes={
                "grid_mapping": "spatial_ref",
                "scale_factor": ENCODING["scale_factor"],
                "add_offset": 0.0,
                "encoding": ENCODING,
            },
        )
        for name, ind in INDICATORS.items():
            g.create_array(
                name,
                shape=(lg.height, lg.width),
                chunks=(grid.chunk, grid.chunk),
                dtype="float32",
                fill_value=np.nan,
                compressors=_zstd(),
                dimension_names=("y", "x"),
                attributes={
                    "grid_mapping": "spatial_ref",
                    "long_name": ind.title,
                    "units": ind.units,
                },
            )
    pixels = root.create_array(
        "pixels",
        shape=(h, w, s),
        chunks=(BLOCK, BLOCK, s),
        dtype="uint8",
        fill_value=NODATA,
        # Bytes stored species-major inside each chunk: neighbouring pixels of one species
        # compress far better than neighbouring species of one pixel (210 MB -> 86 MB on the
        # synthetic 10,000-species release, with faster point reads; docs/publish.md).
        filters=[TransposeCodec(order=(2, 0, 1))],
        compressors=_zstd(),
        dimension_names=("y", "x", "species"),
    )
    aggregates.create(root, h, w, s, len(INDICATORS))
    agg8 = {n: array(root, aggregates.path(BLOCK, n)) for n in aggregates.NAMES}
    terr = root.create_array(
        "territory",
        shape=(h, w),
        chunks=(grid.chunk, grid.chunk),
        dtype="uint8",
        fill_value=0,
        compressors=_zstd(),
        dimension_names=("y", "x"),
    )

    # Pass 1 over the species-major cube, one spatial chunk (all species) at a time:
    # level 0, the pixel-major copy, block aggregates, range sizes, and the indicators
    # that need no range size.
    species = replace(species, threshold=options.threshold)  # the release's threshold rules
    valid0 = np.zeros((h, w), dtype=bool)
    sstats = SpeciesStats(s, threshold_code(options.threshold))
    code_sums = np.zeros(s, dtype=np.float64)
    windows = list(grid.chunks())
    for i, win in enumerate(windows):
        codes = _read_chunk(src, win)
        valid = codes[0] != NODATA if s else np.zeros(win.shape, bool)
        valid0[win.row0 : win.row1, win.col0 : win.col1] = valid
        sstats.add(codes, win)
        terr[win.row0 : win.row1, win.col0 : win.col1] = valid
        array(levels[0], "probability")[:, win.row0 : win.row1, win.col0 : win.col1] = codes
        pixels[win.row0 : win.row1, win.col0 : win.col1, :] = codes.transpose(1, 2, 0)
        code_sums += np.where(codes == NODATA, 0, codes).sum(axis=(1, 2), dtype=np.float64)
        b0, b1 = win.row0 // BLOCK, win.col0 // BLOCK
        bsum, bmax, bcount = aggregates.reduce_codes(codes, valid, BLOCK)
        bsl = (slice(b0, b0 + bsum.shape[0]), slice(b1, b1 + bsum.shape[1]))
        agg8["sum"][bsl] = bsum
        agg8["max"][bsl] = bmax
        agg8["count"][bsl] = bcount
        for name, ind in INDICATORS.items():
            if name != "rarity_weighted_richness":
                array(levels[0], name)[win.row0 : win.row1, win.col0 : win.col1] = ind(
                    codes, species, valid
                )
        if progress:
            progress("level 0, pixel index, indicators", i + 1, len(windows))

    pixel_km2 = (grid.res / 1000.0) ** 2
    range_km2 = code_sums / 254.0 * pixel_km2
    info = replace(species, range_km2=range_km2)
    # Rarity needs every species' range size: a second, cheap pass over the pixel-major copy.
    rarity = INDICATORS["rarity_weighted_richness"]
    # The same pass folds every indicator into the finest block aggregates.
    for win in windows:
        ys, xs = slice(win.row0, win.row1), slice(win.col0, win.col1)
        codes = np.asarray(pixels[ys, xs, :]).transpose(2, 0, 1)
        array(levels[0], rarity.name)[ys, xs] = rarity(codes, info, valid0[ys, xs])
        values = np.stack([np.asarray(array(levels[0], n)[ys, xs]) for n in INDICATORS])
        bind = aggregates.reduce_indicators(values, BLOCK)
        b0, b1 = win.row0 // BLOCK, win.col0 // BLOCK
        agg8["indicators"][b0 : b0 + bind.shape[0], b1 : b1 + bind.shape[1]] = bind
    aggregates.build_tree(root, h, w)

    stats = root.require_group("stats")
    stats.create_array("histogram", shape=(s, 256), dtype="int64", fill_value=0)[:] = (
        sstats.histogram
    )
    stats.create_array("presence", shape=(s, 4), dtype="int64", fill_value=-1)[:] = sstats.presence
    stats.create_array("extent", shape=(s, 4), dtype="int64", fill_value=-1)[:] = sstats.extent
    indicator_stats = {
        name: float_summary(
            [
                np.asarray(array(levels[0], name)[win.row0 : win.row1, win.col0 : win.col1])
                for win in windows
            ]
        )
        for name in INDICATORS
    }

    # Pyramids: probability by the weighted cascade, indicators by a weighted mean.
    weights = valid0.astype(np.int64)
    for k in range(1, n_levels):
        prev, cur = levels[k - 1], levels[k]
        for s0 in range(0, s, SHARD_SPECIES):
            block = np.asarray(array(prev, "probability")[s0 : s0 + SHARD_SPECIES])
            array(cur, "probability")[s0 : s0 + SHARD_SPECIES] = downsample_codes(block, weights)
        for name in INDICATORS:
            array(cur, name)[:] = _downsample_float(np.asarray(array(prev, name)[:]), weights)
        weights = downsample_weights(weights)
        if progress:
            progress("pyramid levels", k, n_levels - 1)

    grid_levels = [_level_grid(grid, k) for k in range(n_levels)]
    root.attrs["multiscales"] = [
        {
            "name": release_id,
            "type": "mean over valid pixels (weighted by level-0 territory pixels)",
            "datasets": [
                {"path": f"levels/{k}", "resolution": g.res} for k, g in enumerate(grid_levels)
            ],
        }
    ]
    root.attrs["sdmatlas"] = {
        "format_version": FORMAT_VERSION,
        "kind": "release",
        "release_id": release_id,
        "status": "published",
        "published": now(),
        "seconds": round(time.perf_counter() - t_start, 3),
        "grid": grid.model_dump(),
        "levels": n_levels,
        "encoding": ENCODING,
        "threshold": options.threshold,
        "block": BLOCK,
        "aggregates": list(aggregates.EDGES),
        "indicator_order": list(INDICATORS),
        "indicators": {
            n: {"title": i.title, "units": i.units, "stats": indicator_stats[n]}
            for n, i in INDICATORS.items()
        },
        "species": {
            "ids": species.ids.tolist(),
            "protected": species.protected.tolist(),
            "invasive": species.invasive.tolist(),
            "endemic": species.endemic.tolist(),
            "range_km2": [round(float(r), 4) for r in range_km2],
            "genus": [str(g) for g in species.genus] if len(species.genus) else None,
            "family": [str(f) for f in species.family] if len(species.family) else None,
        },
        "source": {
            "model": cube_meta.get("model", {}),
            "inputs": cube_meta.get("inputs", {}),
            "territory": cube_meta.get("territory"),
        },
    }


def _downsample_float(
    values: npt.NDArray[np.float32], weights: npt.NDArray[np.integer]
) -> npt.NDArray[np.float32]:
    h, w = values.shape
    hp, wp = h + h % 2, w + w % 2
    v = np.zeros((hp, wp))
    wt = np.zeros((hp, wp))
    v[:h, :w] = np.nan_to_num(values)
    wt[:h, :w] = weights
    num = (v * wt).reshape(hp // 2, 2, wp // 2, 2).sum(axis=(1, 3))
    den = wt.reshape(hp // 2, 2, wp // 2, 2).sum(axis=(1, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan).astype(np.float32)


def open_release(path: Path) -> zarr.Group:
    path = Path(path)
    if not (path / "zarr.json").exists():
        raise NotFoundError(f"no release at {path}")
    group = zarr.open_group(path, mode="r")
    try:
        kind = sdmatlas_attrs(group).get("kind")
    except NotFoundError:
        kind = None
    if kind != "release":
        raise NotFoundError(f"{path} is not an sdmatlas release")
    version = sdmatlas_attrs(group).get("format_version")
    if version != FORMAT_VERSION:
        raise IncompleteReleaseError(
            f"release {path} is in format version {version}; this sdmatlas reads version "
            f"{FORMAT_VERSION} only: publish it again from its cube"
        )
    return group
