"""Benchmark: cross-species queries and publishing at 10,000 species.

    .venv/bin/python bench/queries.py [--species 10000] [--size 512] [--n 50]

Builds (once, cached under data/bench/) a synthetic cube of 10,000 species
on 512 x 512 pixels with realistic sparsity (sdmatlas.testing.synthetic),
publishes it (timed), then measures, for the same random points and
polygons:

* point query, every species at one pixel: sdmatlas (one chunk of the
  pixel-major copy) against the naive read of the species-major cube
  (``probability[:, row, col]``, one inner chunk per species);
* area query over a 40,000-pixel polygon (a disc of radius 113 px): sdmatlas
  (block aggregates inside, pixels on the boundary) against the naive read of
  the polygon's bounding box from the species-major cube.

Reports p50/p90 per query, the ratio naive/sdmatlas, publish throughput and
the size of the cross-species layout relative to the cube. Results go to
bench/results/queries-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from shapely.geometry import Point

from sdmatlas.predict.cube import is_cube, open_cube
from sdmatlas.publish import queries
from sdmatlas.publish.release import publish
from sdmatlas.publish.species_csv import species_info_from_csv
from sdmatlas.quantize import NODATA, SCALE
from sdmatlas.territory import mask_from_geometry
from sdmatlas.testing.releases import release_group
from sdmatlas.testing.synthetic import write_synthetic_cube

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

ROOT = Path(__file__).resolve().parents[1]


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def build_parser() -> argparse.ArgumentParser:
    ap = common.parser(__doc__)
    ap.add_argument("--species", type=int, default=10_000)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--n", type=int, default=50, help="queries of each kind")
    return ap


def output_path(args: argparse.Namespace) -> Path:
    return common.results_file(args.results, "queries")


def main() -> None:
    args = build_parser().parse_args()
    out = output_path(args)
    work = ROOT / "data" / "bench" / f"synthetic-{args.species}x{args.size}"
    cube_path = work / "cube.zarr"
    t0 = time.perf_counter()
    if not is_cube(cube_path):
        shutil.rmtree(cube_path, ignore_errors=True)
        write_synthetic_cube(cube_path, n_species=args.species, size=args.size)
    gen_s = time.perf_counter() - t0
    cube = open_cube(cube_path)
    shutil.rmtree(work / "releases", ignore_errors=True)
    t0 = time.perf_counter()
    rel_path = Path(
        publish(
            cube_path, work / "releases", "bench", species_info_from_csv(None, cube.species_ids)
        )
    )
    publish_s = time.perf_counter() - t0
    rel = release_group(rel_path)
    grid = cube.grid
    arr = cube.array()
    mask = np.asarray(release_group(rel_path)["territory"][:]) == 1
    rng = np.random.default_rng(1)
    rows, cols = np.nonzero(mask)

    point_s, naive_point_s = [], []
    for k in rng.choice(len(rows), size=args.n, replace=False):
        x, y = grid.xy(rows[k], cols[k])
        t = time.perf_counter()
        res = queries.point(rel, float(x), float(y))
        point_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        naive = np.asarray(arr[:, rows[k], cols[k]])
        naive_point_s.append(time.perf_counter() - t)
        assert np.array_equal(res.codes, naive)

    area_s, naive_area_s = [], []
    radius = grid.res * np.sqrt(40_000 / np.pi)
    inner = np.argwhere(mask[130:-130, 130:-130]) + 130  # discs inside the grid
    for k in rng.choice(len(inner), size=max(5, args.n // 5), replace=False):
        cx, cy = grid.xy(*inner[k])
        disc = Point(float(cx), float(cy)).buffer(radius, quad_segs=32)
        t = time.perf_counter()
        res_a = queries.area(rel, disc)
        area_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        m = mask_from_geometry(grid, disc)
        r, c = np.nonzero(m)
        window = np.asarray(arr[:, r.min() : r.max() + 1, c.min() : c.max() + 1])
        sel = m[r.min() : r.max() + 1, c.min() : c.max() + 1] & (window[0] != NODATA)
        naive_mean = window[:, sel].astype(np.float64).sum(axis=1) * SCALE / sel.sum()
        naive_area_s.append(time.perf_counter() - t)
        np.testing.assert_allclose(res_a.mean_probability, naive_mean, rtol=1e-9)

    sizes = {name: du(rel_path / name) for name in ("levels/0", "pixels", "blocks", "territory")}
    result = {
        "date": dt.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "species": args.species,
        "pixels": int(mask.sum()),
        "grid": f"{args.size} x {args.size}",
        "generate_s": round(gen_s, 1),
        "publish_s": round(publish_s, 1),
        "publish_pixel_species_per_s": round(mask.sum() * args.species / publish_s),
        "point_ms": {"p50": pct(point_s, 50) * 1e3, "p90": pct(point_s, 90) * 1e3},
        "naive_point_ms": {
            "p50": pct(naive_point_s, 50) * 1e3,
            "p90": pct(naive_point_s, 90) * 1e3,
        },
        "area_ms": {"p50": pct(area_s, 50) * 1e3, "p90": pct(area_s, 90) * 1e3},
        "naive_area_ms": {"p50": pct(naive_area_s, 50) * 1e3, "p90": pct(naive_area_s, 90) * 1e3},
        "area_pixels": int(res_a.n_pixels),
        "sizes_mb": {k: round(v / 1e6, 1) for k, v in sizes.items()},
        "cross_species_overhead": round((sizes["pixels"] + sizes["blocks"]) / sizes["levels/0"], 2),
    }
    result["point_speedup"] = round(
        statistics.median(naive_point_s) / statistics.median(point_s), 1
    )
    result["area_speedup"] = round(statistics.median(naive_area_s) / statistics.median(area_s), 1)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
