"""Benchmark: on-demand prediction (issue 17), through HTTP on a real `sdmatlas serve`.

    .venv/bin/python bench/ondemand.py [--points 200] [--jobs 3] [--km 20]

Set-up (timed, in one run): the demo inputs (built once under data/bench/ondemand/),
the batch prediction of the whole demo territory and its publish, both with the tasks
in-process (the job runner's default, ``jobs_workers=0``), so batch and job run the
same code on the same cores; a SQLite catalog with the release, the registered
covariates and an API key; then `sdmatlas serve` (1 worker process) on it.

Measured, side by side:

* live point prediction, ``GET /predict/point`` at N distinct land pixels (every answer
  a cache miss: the covariate patch is read and the model run), then the same pixels
  again (cache hits); the precomputed ``GET /point`` at the same pixels;
* area jobs: a km x km polygon (GeoJSON, lon/lat) at K places; the time from
  ``POST /jobs`` until a tile of the job's layer is served, per pixel-species, against
  the batch predict+publish time per pixel-species. The goal is a ratio <= 1.5.

Results: bench/results/ondemand-<date>.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

WORK = common.ROOT / "data" / "bench" / "ondemand"


def build_parser() -> argparse.ArgumentParser:
    ap = common.parser(__doc__)
    ap.add_argument("--points", type=int, default=200, help="live point predictions")
    ap.add_argument("--jobs", type=int, default=3, help="area jobs (at distinct places)")
    ap.add_argument(
        "--km",
        default="20,50",
        help="edges of the jobs' squares (km, comma-separated); the first is the goal's",
    )
    return ap


def output_path(args: argparse.Namespace) -> Path:
    return common.results_file(args.results, "ondemand")


def pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)) * 1000, 2)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def batch(root: Path) -> dict[str, Any]:
    """The demo's batch predict and publish, timed (tasks in-process)."""
    from sdmatlas.demo import DEMO_CARD
    from sdmatlas.demo.build import DemoPaths, build_demo
    from sdmatlas.executor import ExecutorOptions
    from sdmatlas.predict.cube import open_cube
    from sdmatlas.predict.pipeline import PredictOptions, predict
    from sdmatlas.publish.release import PublishOptions, publish
    from sdmatlas.publish.species_csv import species_info_from_csv
    from sdmatlas.territory import load_territory

    demo = DemoPaths(WORK / "demo")
    if not demo.exists():
        build_demo(demo.root)
    terr = load_territory(demo.territory)
    cube = root / "cube.zarr"
    t0 = time.perf_counter()
    summary = predict(DEMO_CARD, demo.covariate_paths(), terr, cube, PredictOptions(workers=0))
    t1 = time.perf_counter()
    ids = open_cube(cube).species_ids
    info = species_info_from_csv(demo.species, ids)
    publish(cube, root / "releases", "demo-batch", info,
            PublishOptions(executor=ExecutorOptions(workers=0)))  # fmt: skip
    t2 = time.perf_counter()
    return {
        "pixels": summary.pixels,
        "species": summary.n_species,
        "predict_s": round(t1 - t0, 3),
        "publish_s": round(t2 - t1, 3),
        "total_s": round(t2 - t0, 3),
        "us_per_pixel_species": round((t2 - t0) / (summary.pixels * summary.n_species) * 1e6, 4),
        "demo": str(demo.root),
    }


def catalog_env(root: Path, demo_root: Path) -> tuple[dict[str, str], str]:
    from sdmatlas.catalog.covariates import register_covariates
    from sdmatlas.catalog.db import Catalog
    from sdmatlas.catalog.imports import import_species, import_territories
    from sdmatlas.catalog.keys import create_key
    from sdmatlas.catalog.register import register_release
    from sdmatlas.demo import DEMO_CARD, DEMO_PERIOD, TERRITORIES
    from sdmatlas.demo.build import DemoPaths
    from sdmatlas.storage import open_release

    url = f"sqlite:///{root / 'catalog.sqlite'}"
    cat = Catalog(url)
    cat.upgrade()
    import_territories(cat, TERRITORIES)
    demo = DemoPaths(demo_root)
    import_species(cat, demo.species, territory="demo-region")
    rel = root / "releases" / "demo-batch"
    register_release(cat, open_release(str(rel)), str(rel), DEMO_PERIOD)
    register_covariates(cat, DEMO_CARD, DEMO_PERIOD, demo.covariate_paths(), demo.territory)
    _, token = create_key(cat, "bench", ["jobs:write"])
    cat.dispose()
    env = {
        "SDMATLAS_DATA_DIR": str(root),
        "SDMATLAS_DATABASE_URL": url,
        "SDMATLAS_TILE_CACHE": "[]",
        "SDMATLAS_JOBS_POLL_SECONDS": "0.05",
        "SDMATLAS_LOG_FORMAT": "text",
        "SDMATLAS_JOBS_MAX_AREA_KM2": "10000",
    }
    return env, token


def serve(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    full = {k: v for k, v in os.environ.items() if not k.startswith("SDMATLAS_")} | env
    exe = str(Path(sys.executable).parent / "sdmatlas")
    proc = subprocess.Popen([exe, "serve", "--port", str(port), "--workers", "1"], env=full,
                            start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            httpx.get(base + "/health", timeout=1)
            return proc, base
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit("sdmatlas serve did not start")


def land_points(demo_root: Path, n: int, seed: int = 3) -> list[tuple[float, float]]:
    from sdmatlas.territory import load_territory

    terr = load_territory(demo_root / "territory.tif")
    rr, cc = np.nonzero(terr.mask)
    pick = np.random.default_rng(seed).choice(len(rr), n, replace=False)
    lon, lat = terr.grid.lonlat(rr[pick], cc[pick])
    return list(zip(lon.tolist(), lat.tolist(), strict=True))


def timed_gets(client: httpx.Client, url: str, params: list[dict[str, Any]]) -> list[float]:
    out = []
    for p in params:
        t0 = time.perf_counter()
        r = client.get(url, params=p)
        out.append(time.perf_counter() - t0)
        r.raise_for_status()
    return out


def square(lon: float, lat: float, km: float) -> dict[str, Any]:
    """A km x km square (GeoJSON, lon/lat) centred on a point."""
    dlat = km / 2 / 111.32
    dlon = km / 2 / (111.32 * math.cos(math.radians(lat)))
    ring = [[lon - dlon, lat - dlat], [lon + dlon, lat - dlat], [lon + dlon, lat + dlat],
            [lon - dlon, lat + dlat], [lon - dlon, lat - dlat]]  # fmt: skip
    return {"type": "Polygon", "coordinates": [ring]}


def tile_of(lon: float, lat: float, z: int) -> tuple[int, int]:
    n = 2**z
    x = int((lon + 180) / 360 * n)
    y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)
    return x, y


def run_job(client: httpx.Client, token: str, area: dict[str, Any]) -> dict[str, Any]:
    t0 = time.perf_counter()
    body = {"model": "demo-sdm", "period": "2020", "area": {"geometry": area}}
    r = client.post("/jobs", headers={"Authorization": f"Bearer {token}"}, json=body)
    r.raise_for_status()
    job_id = r.json()["id"]
    while (job := client.get(f"/jobs/{job_id}").json())["status"] not in ("done", "failed"):
        time.sleep(0.02)
    if job["status"] != "done":
        raise SystemExit(f"job failed: {job['error']}")
    t_done = time.perf_counter()
    lon, lat = np.mean(area["coordinates"][0][:4], axis=0)
    x, y = tile_of(float(lon), float(lat), 11)
    sid = client.get("/layers", params={"release": job["release"], "kind": "species",
                                        "limit": 1}).json()[0]["species_id"]  # fmt: skip
    tile = client.get(f"/tiles/{job['release']}:species:{sid}/WebMercatorQuad/11/{x}/{y}.png")
    tile.raise_for_status()
    t_tile = time.perf_counter()
    pixels, species = job["timings"]["pixels"], job["timings"]["species"]
    return {
        "id": job_id,
        "area_km2": job["area_km2"],
        "pixels": pixels,
        "chunks": job["progress"]["chunks_total"],
        "post_to_done_s": round(t_done - t0, 3),
        "post_to_tile_s": round(t_tile - t0, 3),
        "server_timings": job["timings"],
        "us_per_pixel_species": round((t_tile - t0) / (pixels * species) * 1e6, 4),
    }


def main() -> None:
    args = build_parser().parse_args()
    out_file = output_path(args)
    run = WORK / "run"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    results: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
    }
    print("batch predict + publish of the demo ...", flush=True)
    results["batch"] = b = batch(run)
    print(json.dumps(b), flush=True)
    env, token = catalog_env(run, Path(b["demo"]))
    proc, base = serve(env)
    try:
        with httpx.Client(base_url=base, timeout=60) as client:
            pts = land_points(Path(b["demo"]), args.points)
            live = [{"model": "demo-sdm", "lon": lon, "lat": lat} for lon, lat in pts]
            pre = [{"lon": lon, "lat": lat} for lon, lat in pts]
            timed_gets(client, "/predict/point", live[:3])  # the model session is made once
            cold = timed_gets(client, "/predict/point", live[3:])
            warm = timed_gets(client, "/predict/point", live[3:])
            point = timed_gets(client, "/point", pre[3:])
            results["live_point_ms"] = {"p50": pct(cold, 50), "p90": pct(cold, 90),
                                        "n": len(cold)}  # fmt: skip
            results["live_point_cached_ms"] = {"p50": pct(warm, 50), "p90": pct(warm, 90)}
            results["precomputed_point_ms"] = {"p50": pct(point, 50), "p90": pct(point, 90)}
            results["live_over_precomputed_p50"] = round(pct(cold, 50) / pct(point, 50), 2)
            print(json.dumps({k: v for k, v in results.items() if "point" in k}), flush=True)
            places = land_points(Path(b["demo"]), 400, seed=11)
            by_size: dict[str, list[dict[str, Any]]] = {}
            for km in [float(k) for k in args.km.split(",")]:
                jobs = by_size[f"{km:g}km"] = []
                for lon, lat in places:  # one square per place, at distinct places
                    if len(jobs) == args.jobs:
                        break
                    try:
                        jobs.append(run_job(client, token, square(lon, lat, km)))
                    except httpx.HTTPStatusError as exc:  # a square over the sea: next
                        if exc.response.status_code != 400:
                            raise
                        continue
                    print(json.dumps(jobs[-1]), flush=True)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
    results["jobs"] = by_size
    results["job_summary"] = {
        size: {
            "median_pixels": statistics.median(j["pixels"] for j in jobs),
            "median_post_to_tile_s": statistics.median(j["post_to_tile_s"] for j in jobs),
            "median_us_per_pixel_species": (per := statistics.median(
                j["us_per_pixel_species"] for j in jobs)),
            "over_batch_per_pixel_species": round(per / b["us_per_pixel_species"], 2),
            "median_server_timings_s": {
                k: statistics.median(j["server_timings"][k] for j in jobs)
                for k in ("queued_s", "predict_s", "publish_s", "register_s")
            },
        }
        for size, jobs in by_size.items()
    }  # fmt: skip
    out_file.write_text(json.dumps(results, indent=2))
    print(json.dumps({k: v for k, v in results.items() if k != "jobs"}, indent=2))
    print(f"results: {out_file}")


if __name__ == "__main__":
    main()
