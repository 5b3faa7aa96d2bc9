"""The single-process publish as it was before publish ran as chunk tasks (commit e4c41bf),
kept verbatim as the reference that the task-based publish must reproduce byte for byte
(tests/test_publish_tasks.py). Not used by the package.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import numpy as np
import numpy.typing as npt
import zarr
from zarr.codecs import TransposeCodec, ZstdCodec

from sdmatlas.grid import Grid
from sdmatlas.predict.cube import SHARD_SPECIES, now, write_georef
from sdmatlas.publish import aggregates
from sdmatlas.publish.indicators import INDICATORS, SpeciesInfo, threshold_code
from sdmatlas.publish.levels import downsample_codes, downsample_weights, level_count
from sdmatlas.publish.stats import INDICATOR_BINS, SpeciesStats, _no_values
from sdmatlas.quantize import ENCODING, NODATA
from sdmatlas.zarr_access import array

FORMAT_VERSION = 2
BLOCK = 8
Progress = Any


def _zstd() -> ZstdCodec:
    return ZstdCodec(level=3)


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


def _read_chunk(src: zarr.Array[Any], win: Any) -> np.ndarray:
    return np.asarray(src[:, win.row0 : win.row1, win.col0 : win.col1])


def _write_release(
    src: zarr.Array[Any],
    grid: Grid,
    cube_meta: dict[str, Any],
    species: SpeciesInfo,
    names: list[str],
    options: Any,
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
    agg8 = {n: array(root, f"blocks/{BLOCK}/{n}") for n in aggregates.NAMES}
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


def float_summary(
    blocks: list[npt.NDArray[np.floating]], bins: int = INDICATOR_BINS
) -> dict[str, Any]:
    """min, max, mean and a histogram of the finite values of ``blocks`` (two passes)."""
    lo, hi, total, n = np.inf, -np.inf, 0.0, 0
    for b in blocks:
        v = b[np.isfinite(b)]
        if v.size:
            lo, hi = min(lo, float(v.min())), max(hi, float(v.max()))
            total += float(v.sum(dtype=np.float64))
            n += v.size
    if n == 0:
        return _no_values([], [])
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
    counts = np.zeros(bins, np.int64)
    for b in blocks:
        v = b[np.isfinite(b)]
        counts += np.histogram(v, bins=edges)[0]
    return {
        "count": n,
        "min": lo,
        "max": hi,
        "mean": total / n,
        "histogram": {"edges": edges.tolist(), "counts": counts.tolist()},
    }
