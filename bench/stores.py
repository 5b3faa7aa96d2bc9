"""Benchmark: one synthetic release on each storage engine, side by side in one run.

    .venv/bin/python bench/stores.py [--species 10000] [--tiles 200] [--concurrency 8]

* Data: the synthetic cube of bench/tiles.py (512 x 512 px at 1 km, EPSG:3035, 10,000
  species by default; ``--species N`` writes and uses a cube of N species instead).
* Engines: Zarr in a local directory; Zarr in a bucket of an S3-compatible server on
  loopback (moto's standalone server, :mod:`sdmatlas.testing.locals3`), read with ranged
  GETs by the API (no local copy); TileDB in a local directory (dense arrays, tiles equal
  to the Zarr chunks, zstd).
* For each engine: publish time and stored size; then ``sdmatlas serve`` (2 workers, no
  tile cache) over a SQLite catalog holding that release: uncached PNG tiles of the 10
  widest species at zooms 5 to 11 (each tile requested once, concurrency 8, by
  bench/loadgen.py in its own process), /point p50 and the 40,000-pixel area report p50.

Everything shares the machine's 2 cores, the S3 server included: moto is a Python test
server, far slower per request than S3 or MinIO, so the bucket figures are a lower bound
of what a real object store gives. Results go to bench/results/stores-<date>.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
import tiles

ROOT = Path(__file__).resolve().parents[1]
WORK = tiles.WORK / "stores"
KEY = "bench-stores"


def build_parser() -> argparse.ArgumentParser:
    ap = common.parser(__doc__)
    ap.add_argument("--species", type=int, default=10_000)
    ap.add_argument("--tiles", type=int, default=200, help="tiles per species (10 species)")
    ap.add_argument("--concurrency", type=int, default=8)
    return ap


def output_path(args: argparse.Namespace) -> Path:
    return common.results_file(args.results, "stores")


def cube_of(n_species: int) -> Path:
    from sdmatlas.predict.cube import is_cube
    from sdmatlas.testing.synthetic import write_synthetic_cube

    cube = tiles.WORK / f"synthetic-{n_species}x512" / "cube.zarr"
    if not is_cube(cube):
        shutil.rmtree(cube, ignore_errors=True)
        write_synthetic_cube(cube, n_species=n_species, size=512)
    return cube


def publish_to(cube: Path, at: str, opts: dict[str, Any]) -> tuple[str, float]:
    from sdmatlas.predict.cube import open_cube
    from sdmatlas.publish.release import publish
    from sdmatlas.publish.species_csv import species_info_from_csv
    from sdmatlas.storage import release_store

    info = species_info_from_csv(None, open_cube(cube).species_ids)
    t = time.perf_counter()
    location = publish(cube, release_store(at, opts), KEY, info)
    return location, round(time.perf_counter() - t, 1)


def catalog(name: str, location: str, opts: dict[str, Any]) -> str:
    from sdmatlas.catalog.db import Catalog
    from sdmatlas.catalog.register import register_release
    from sdmatlas.storage import open_release

    db = WORK / f"{name}.sqlite"
    db.unlink(missing_ok=True)
    url = f"sqlite:///{db}"
    c = Catalog(url)
    c.upgrade()
    register_release(c, open_release(location, opts), location, "2020")
    c.dispose()
    return url


def serve_and_load(
    db: str, opts: dict[str, Any], jobs: list[tiles.Job], warmups: list[tiles.Job], conc: int,
    port: int, local_release: Path,
) -> dict[str, Any]:  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    env = {"SDMATLAS_DATABASE_URL": db, "SDMATLAS_DATA_DIR": str(WORK),
           "SDMATLAS_TILE_CACHE": "[]", "SDMATLAS_STORAGE_OPTIONS": json.dumps(opts)}  # fmt: skip
    srv = tiles.Server([str(tiles.BIN / "sdmatlas"), "serve", "--port", str(port),
                        "--workers", "2"], env, f"{base}/health", ROOT)  # fmt: skip
    try:
        path = f"/tiles/{KEY}:species:{{s}}/WebMercatorQuad/{{z}}/{{x}}/{{y}}.png?colormap=viridis"
        # warm-up outside the list: the server process, its release opening, its index maps
        tiles.warm(base, [path.format(s=s, z=t.z, x=t.x, y=t.y) for s, t in warmups])
        urls = [base + path.format(s=s, z=t.z, x=t.x, y=t.y) for s, t in jobs]
        out: dict[str, Any] = {"uncached": tiles.run_load(urls, conc)}
        # queries_over_http reads the grid and territory from the local copy (same data)
        out["point_p50_ms"], out["report_p50_ms"] = tiles.queries_over_http(base, local_release)
        return out
    finally:
        srv.stop()


def main() -> None:
    args = build_parser().parse_args()
    out_file = output_path(args)
    from sdmatlas.testing.locals3 import LocalS3

    cube = cube_of(args.species)
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    results: dict[str, Any] = {
        "machine": {"cpus": __import__("os").cpu_count(), "platform": platform.platform()},
        "species": args.species,
        "engines": {},
    }
    with LocalS3() as s3:
        bucket = s3.bucket("bench")
        engines = {
            "zarr-local": (str(WORK / "releases"), {}),
            "zarr-s3": (f"{bucket}/releases", s3.storage_options(timeout=30)),
            "tiledb-local": (f"tiledb+{WORK / 'tiledb'}", {}),
        }
        locations = {}
        for name, (at, opts) in engines.items():
            location, seconds = publish_to(cube, at, opts)
            locations[name] = location
            if name != "zarr-s3":
                folder = Path(location.removeprefix("tiledb+"))
                size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
            else:
                import s3fs

                fs = s3fs.S3FileSystem(**opts, skip_instance_cache=True)
                size = int(fs.du("bench/releases"))
            results["engines"][name] = {"publish_s": seconds, "bytes": size}
            print(f"{name}: published in {seconds} s, {size / 2**20:.0f} MB")
        local = Path(locations["zarr-local"])
        sids, box = tiles.widest_species(local, 10)
        jobs = tiles.tile_list(box, args.tiles, sids)
        warmups = tiles.tile_list(box, 3, sids[:2])
        for port, (name, (_, opts)) in enumerate(engines.items(), start=8811):
            db = catalog(name, locations[name], opts)
            r = serve_and_load(db, opts, jobs, warmups, args.concurrency, port, local)
            results["engines"][name].update(r)
            print(name, json.dumps(r))
    e = results["engines"]
    base = e["zarr-local"]
    results["ratios_to_zarr_local"] = {
        name: {
            "publish_s": round(r["publish_s"] / base["publish_s"], 2),
            "bytes": round(r["bytes"] / base["bytes"], 2),
            "tiles_per_s": round(r["uncached"]["tiles_per_s"] / base["uncached"]["tiles_per_s"], 2),
            "tile_p50": round(r["uncached"]["p50_ms"] / base["uncached"]["p50_ms"], 2),
            "point_p50": round(r["point_p50_ms"] / base["point_p50_ms"], 2),
            "report_p50": round(r["report_p50_ms"] / base["report_p50_ms"], 2),
        }
        for name, r in e.items()
        if name != "zarr-local"
    }
    print(json.dumps(results["ratios_to_zarr_local"], indent=1))
    out_file.write_text(json.dumps(results, indent=2))
    print(f"wrote {out_file}")


if __name__ == "__main__":
    main()
