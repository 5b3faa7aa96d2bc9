"""Benchmark: predict and publish as the extent grows (issue 14), side by side in one run.

    .venv/bin/python bench/scale.py [--big 8192] [--small 1024] [--species 10000]

Every measured case runs in a fresh process; this one samples the resident memory (RSS)
of that process (the client, with the Dask scheduler) and of each of its children (the
Dask workers) every 50 ms and keeps the peaks. Cases:

* **memory**: publish a synthetic cube of ``--small``^2 and ``--big``^2 pixels x 16
  species, and predict the same two extents with a trivial model card of the demo
  model's shape (4 covariates, 9 x 9 patches, 16 outputs; its covariates and territory
  are written window by window beforehand): peak RSS per worker and of the client, big
  over small (goal: <= 1.25);
* **throughput**: publish at 16 species (``--big``^2, and ``--small``^2 where the
  fixed cost of each round weighs) and at ``--species`` species
  (512^2), in pixel-species per second, against the demo model's prediction on the demo
  territory on the same 2 workers (goal: publish >= predict);
* **scaling**: publish ``--scaling``^2 x 16 (4096 by default) on 1 worker, then 2
  (goal: >= 1.8x);
* **rehearsal**: the ``--big`` cube at 50 m (1/60th of Europe's land pixels) is
  registered in a SQLite catalog and served in-process: a few tiles (nearest-neighbour
  warps of the cube by GDAL), points and an area report are checked against the cube.

Results go to bench/results/scale-<date>.json; the per-task costs measured here are what
docs/publish.md projects to Europe from.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "bench" / "scale"
RES = 50.0
X0, Y0 = 4_000_000.0, 3_000_000.0
CHUNK = 256


# -- inputs (made in their own processes; not measured) -----------------------------------------


def cube_path(size: int, species: int, res: float = RES) -> Path:
    return DATA / f"cube-{species}x{size}-{int(res)}m.zarr"


def make_cube(size: int, species: int) -> Path:
    from sdmatlas.predict.cube import is_cube, open_cube
    from sdmatlas.testing.synthetic import write_synthetic_cube

    path = cube_path(size, species)
    if is_cube(path) and open_cube(path).is_complete:
        return path
    shutil.rmtree(path, ignore_errors=True)
    write_synthetic_cube(path, n_species=species, size=size, chunk=CHUNK, seed=7, res=RES)
    return path


def trivial_model(folder: Path, n_species: int = 16) -> Path:
    """A model card of the demo model's shape whose network is one mean and one matrix:
    prediction then costs what the pipeline costs (read, encode, patches, write)."""
    import onnx
    import yaml
    from onnx import TensorProto, helper

    from sdmatlas.demo import DEMO_CARD

    folder.mkdir(parents=True, exist_ok=True)
    card = yaml.safe_load(DEMO_CARD.read_text())
    channels = sum(1 if i["kind"] == "continuous" else len(i["classes"]) for i in card["inputs"])
    rng = np.random.default_rng(0)
    w = helper.make_tensor(
        "w",
        TensorProto.FLOAT,
        [channels, n_species],
        rng.normal(0, 1, channels * n_species).astype(np.float32),
    )
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["x"], ["m"], axes=[2, 3], keepdims=0),
            helper.make_node("MatMul", ["m", "w"], ["y"]),
        ],
        "trivial",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", channels, 9, 9])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", n_species])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, folder / "trivial.onnx")
    card.update(
        name="trivial-sdm",
        version="0.0.1",
        file="trivial.onnx",
        alternates={},
        metrics={},
        training={},
        species=card["species"][:n_species],
    )
    card["grid"]["resolution"] = RES
    (folder / "card.yaml").write_text(yaml.safe_dump(card, sort_keys=False))
    return folder / "card.yaml"


def _windows(width: int, height: int, step: int = 1024) -> Any:
    from rasterio.windows import Window

    for r in range(0, height, step):
        for c in range(0, width, step):
            yield Window(c, r, min(step, width - c), min(step, height - r))


def make_inputs(size: int) -> dict[str, Any]:
    """Covariates (with a margin for the patches' halo) and a territory mask raster of
    ``size``^2 pixels at 50 m, all written window by window."""
    import rasterio
    from affine import Affine

    folder = DATA / f"inputs-{size}"
    done = folder / "done"
    if not done.exists():
        shutil.rmtree(folder, ignore_errors=True)
        (folder / "covariates").mkdir(parents=True)
        margin = 16
        n = size + 2 * margin
        t = Affine(RES, 0, X0 - margin * RES, 0, -RES, Y0 + margin * RES)
        base = {
            "driver": "GTiff",
            "width": n,
            "height": n,
            "count": 1,
            "crs": "EPSG:3035",
            "transform": t,
            "tiled": True,
            "blockxsize": 256,
            "blockysize": 256,
            "compress": "deflate",
        }
        specs = {
            "elevation": "float32",
            "temperature": "float32",
            "precipitation": "float32",
            "landcover": "uint8",
        }
        files = {
            k: rasterio.open(folder / "covariates" / f"{k}.tif", "w", dtype=d, **base)
            for k, d in specs.items()
        }
        try:
            for win in _windows(n, n):
                rows, cols = np.mgrid[
                    win.row_off : win.row_off + win.height, win.col_off : win.col_off + win.width
                ]
                x, y = cols * RES / 1e4, rows * RES / 1e4
                values = {
                    "elevation": 600 + 500 * np.sin(x / 3.1) * np.cos(y / 2.3),
                    "temperature": 10 + 4 * np.cos(x / 4.7 + y / 5.3),
                    "precipitation": 1500 + 400 * np.sin(y / 3.7),
                    "landcover": 1 + (np.floor(x) + np.floor(y)).astype(int) % 8,
                }
                for k, f in files.items():
                    f.write(values[k].astype(specs[k]), 1, window=win)
        finally:
            for f in files.values():
                f.close()
        prof = {
            **base,
            "width": size,
            "height": size,
            "dtype": "uint8",
            "transform": Affine(RES, 0, X0, 0, -RES, Y0),
        }
        with rasterio.open(folder / "territory.tif", "w", **prof) as dst:
            c = size / 2
            for win in _windows(size, size):
                rows, cols = np.mgrid[
                    win.row_off : win.row_off + win.height, win.col_off : win.col_off + win.width
                ]
                angle = np.arctan2(rows - c, cols - c)
                radius = 0.46 * size * (1 + 0.06 * np.sin(3 * angle) + 0.04 * np.sin(5 * angle))
                dst.write((np.hypot(rows - c, cols - c) < radius).astype(np.uint8), 1, window=win)
        trivial_model(folder / "model")
        done.write_text("ok")
    return {
        "card": str(folder / "model" / "card.yaml"),
        "covariates": {p.stem: str(p) for p in (folder / "covariates").glob("*.tif")},
        "territory": str(folder / "territory.tif"),
    }


# -- the measured cases (each in its own process) ----------------------------------------------


@contextmanager
def started_cluster(workers: int) -> Iterator[tuple[str, float]]:
    """The LocalCluster that ``publish`` and ``predict`` start (the same settings),
    started before the clock starts (its start-up, about 2 s, is reported apart): the
    scheduler's address and the seconds it took."""
    from sdmatlas.executor import local_cluster

    t0 = time.perf_counter()
    with local_cluster(workers) as cluster:
        yield str(cluster.scheduler_address), time.perf_counter() - t0


def case_publish(args: dict[str, Any]) -> dict[str, Any]:
    from sdmatlas.executor import ExecutorOptions
    from sdmatlas.predict.cube import open_cube
    from sdmatlas.publish.release import PublishOptions, publish
    from sdmatlas.publish.species_csv import species_info_from_csv

    cube = open_cube(Path(args["cube"]))
    root = Path(args["root"])
    shutil.rmtree(root, ignore_errors=True)
    info = species_info_from_csv(None, cube.species_ids)
    with started_cluster(args["workers"]) as (address, startup):
        opts = PublishOptions(executor=ExecutorOptions(scheduler=address))
        t0 = time.perf_counter()
        path = publish(cube.path, root, "r", info, opts)
        seconds = time.perf_counter() - t0
    import zarr

    meta = zarr.open_group(path, mode="r").attrs["sdmatlas"]
    run = meta["publish"]["runs"][-1]
    g = cube.grid
    return {
        "seconds": seconds,
        "pixel_species_per_s": g.width * g.height * len(cube.species_ids) / seconds,
        "tasks": run["tasks"],
        "tile": meta["publish"]["tile"],
        "cluster_startup_s": startup,
        "species": len(cube.species_ids),
    }


def case_predict(args: dict[str, Any]) -> dict[str, Any]:
    from sdmatlas.predict.pipeline import PredictOptions, predict
    from sdmatlas.territory import load_territory

    out = Path(args["out"])
    shutil.rmtree(out, ignore_errors=True)
    terr = load_territory(Path(args["territory"]), chunk=CHUNK)
    covs = {k: Path(v) for k, v in args["covariates"].items()}
    with started_cluster(args["workers"]) as (address, startup):
        t0 = time.perf_counter()
        s = predict(Path(args["card"]), covs, terr, out, PredictOptions(scheduler=address))
        seconds = time.perf_counter() - t0
    shutil.rmtree(out, ignore_errors=True)
    return {
        "seconds": seconds,
        "pixels": s.pixels,
        "pixel_species_per_s": s.pixels * s.n_species / seconds,
        "cluster_startup_s": startup,
    }


def case_demo_predict(args: dict[str, Any]) -> dict[str, Any]:
    from sdmatlas.demo import DEMO_CARD
    from sdmatlas.demo.build import DemoPaths, build_demo
    from sdmatlas.predict.pipeline import PredictOptions, predict
    from sdmatlas.territory import load_territory

    paths = DemoPaths(ROOT / "data" / "demo")
    if not paths.exists():
        build_demo(paths.root)
    out = DATA / "demo-predict.zarr"
    shutil.rmtree(out, ignore_errors=True)
    terr = load_territory(paths.territory, chunk=CHUNK)
    with started_cluster(args["workers"]) as (address, _):
        opts = PredictOptions(scheduler=address)
        t0 = time.perf_counter()
        s = predict(DEMO_CARD, paths.covariate_paths(), terr, out, opts)
        seconds = time.perf_counter() - t0
    shutil.rmtree(out, ignore_errors=True)
    return {
        "seconds": seconds,
        "pixels": s.pixels,
        "species": s.n_species,
        "pixel_species_per_s": s.pixels * s.n_species / seconds,
    }


def case_rehearsal(args: dict[str, Any]) -> dict[str, Any]:
    """Register the published big release, serve it in-process, check it against the cube."""
    import morecantile
    import zarr
    from fastapi.testclient import TestClient
    from pyproj import Transformer
    from rasterio.enums import Resampling
    from rasterio.io import MemoryFile
    from rasterio.transform import from_bounds
    from rasterio.vrt import WarpedVRT
    from shapely.geometry import box

    from sdmatlas.catalog.db import Catalog
    from sdmatlas.catalog.register import register_release
    from sdmatlas.predict.cube import open_cube
    from sdmatlas.publish import queries
    from sdmatlas.publish.cover import pixel_mask
    from sdmatlas.quantize import NODATA
    from sdmatlas.serve.app import create_app
    from sdmatlas.settings import Settings
    from sdmatlas.storage import open_release

    t0 = time.perf_counter()
    cube = open_cube(Path(args["cube"]))
    release = Path(args["release"])
    g = cube.grid
    data = Path(args["root"]).parent
    db = data / "rehearsal.sqlite"
    db.unlink(missing_ok=True)
    settings = Settings(data_dir=data, database_url=f"sqlite:///{db}", allowed_hosts=["testserver"])
    catalog = Catalog.from_settings(settings)
    catalog.upgrade()
    register_release(catalog, open_release(release), str(release), "2020")
    catalog.dispose()
    register_s = time.perf_counter() - t0
    src = cube.array()
    checks: dict[str, Any] = {}
    with TestClient(create_app(settings)) as client:
        # points: every species, at pixels spread over the territory
        to_ll = Transformer.from_crs(g.crs, 4326, always_xy=True)
        rng = np.random.default_rng(1)
        ok = n = 0
        while n < 5:
            r, c = (int(v) for v in rng.integers(0, g.height, 2))
            want = np.asarray(src[:, r, c])
            if want[0] == NODATA:
                continue
            lon, lat = to_ll.transform(*g.xy(r, c))
            reply = client.get("/point", params={"lon": lon, "lat": lat, "limit": 10_000})
            assert reply.status_code == 200, reply.text
            body = reply.json()
            got = {s["id"]: s["probability"] for s in body["species"]}
            ids = cube.species_ids
            ok += all(
                abs(got.get(ids[i], 0.0) - round(want[i] / 254, 4)) < 1e-9 for i in range(len(ids))
            )
            n += 1
        checks["points_equal"] = f"{ok}/{n}"
        # tiles: species 1 at the finest zoom of the European grid, against GDAL's warp
        tms = morecantile.tms.get("EuropeanETRS89_LAEAQuad")
        tj = client.get("/layers/r:species:1/tilejson.json", params={"tms": tms.id}).json()
        z = tj["maxzoom"]
        cx, cy = g.xy(g.height // 2, g.width // 2)
        layer0 = np.asarray(src[0])
        same = total = 0
        centre = tms.tile(*to_ll.transform(cx, cy), z)
        for dx, dy in ((0, 0), (1, 0), (0, 1), (-3, 2)):
            t = morecantile.Tile(centre.x + dx, centre.y + dy, z)
            r = client.get(f"/tiles/r:species:1/{tms.id}/{t.z}/{t.x}/{t.y}.npy")
            got = np.load(io.BytesIO(r.content))
            b = tms.xy_bounds(t)
            prof = {
                "driver": "GTiff",
                "width": g.width,
                "height": g.height,
                "count": 1,
                "dtype": "uint8",
                "crs": g.crs,
                "transform": g.transform,
                "nodata": NODATA,
            }
            with MemoryFile() as mf:
                with mf.open(**prof) as ds:
                    ds.write(layer0, 1)
                with (
                    mf.open() as ds,
                    WarpedVRT(
                        ds,
                        crs="EPSG:3035",
                        width=256,
                        height=256,
                        transform=from_bounds(b.left, b.bottom, b.right, b.top, 256, 256),
                        resampling=Resampling.nearest,
                        tolerance=1e-6,
                        nodata=NODATA,
                    ) as vrt,
                ):
                    want = vrt.read(1)
            same += int((got == want).sum())
            total += want.size
        checks["tile_pixels_equal"] = round(same / total, 6)
        # an area report: a 40 km x 30 km box, by HTTP and against the cube directly
        x0, y0 = g.xy(g.height // 3, g.width // 3)
        geom_grid = box(x0, y0 - 30_000, x0 + 40_000, y0)
        to_grid = Transformer.from_crs(4326, g.crs, always_xy=True)
        ring = [to_ll.transform(x, y) for x, y in geom_grid.exterior.coords]
        t1 = time.perf_counter()
        rep = client.post("/report", json={"type": "Polygon", "coordinates": [ring]})
        checks["report_http_s"] = round(time.perf_counter() - t1, 3)
        checks["report_status"] = rep.status_code
        del to_grid
        res = queries.area(zarr.open_group(release, mode="r"), geom_grid)
        m, r0, c0 = pixel_mask(g, geom_grid)
        sub = np.asarray(src[:, r0 : r0 + m.shape[0], c0 : c0 + m.shape[1]])
        vals = sub[:, m]
        vals = vals[:, vals[0] != NODATA]
        direct_mean = vals.mean(axis=1) / 254.0
        direct_max = vals.max(axis=1) / 254.0  # codes: compared as codes below
        checks["area_pixels"] = int(vals.shape[1])
        checks["area_equal"] = bool(
            res.n_pixels == vals.shape[1]
            and np.allclose(res.mean_probability, direct_mean, rtol=1e-12, atol=0)
            and np.array_equal(np.rint(res.max_probability * 254), direct_max * 254)
        )
        checks["report_pixels_http"] = rep.json().get("pixels") if rep.status_code == 200 else None
    return {
        "register_s": round(register_s, 3),
        "checks": checks,
        "seconds": time.perf_counter() - t0,
    }


CASES = {
    "publish": case_publish,
    "predict": case_predict,
    "demo-predict": case_demo_predict,
    "rehearsal": case_rehearsal,
}


# -- the runner: a fresh process a case, its RSS sampled ---------------------------------------


def measure(kind: str, **args: Any) -> dict[str, Any]:
    import psutil

    cmd = [sys.executable, __file__, "--case", json.dumps({"kind": kind, **args})]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    peaks: dict[int, int] = {}
    cpu: dict[int, float] = {}
    stop = threading.Event()

    def sample() -> None:
        try:
            root = psutil.Process(proc.pid)
        except psutil.NoSuchProcess:
            return
        while not stop.is_set():
            try:
                for p in [root, *root.children(recursive=True)]:
                    try:
                        rss = p.memory_info().rss
                        t = p.cpu_times()
                    except psutil.Error:
                        continue
                    peaks[p.pid] = max(peaks.get(p.pid, 0), rss)
                    cpu[p.pid] = t.user + t.system  # the last value seen (cumulative)
            except psutil.Error:
                pass
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    stop.set()
    sampler.join()
    if proc.returncode:
        raise SystemExit(f"case {kind} {args} failed ({proc.returncode})")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    client = peaks.pop(proc.pid, 0)
    # CPU seconds of the whole case (set-up included): what "one worker" really used
    result["cpu_client_s"] = round(cpu.pop(proc.pid, 0.0), 1)
    result["cpu_children_s"] = round(sum(cpu.values()), 1)
    workers = sorted(peaks.values(), reverse=True)[: max(args.get("workers", 0), 0)]
    result["rss_client_mb"] = round(client / 2**20, 1)
    result["rss_worker_mb"] = round(max(workers) / 2**20, 1) if workers else None
    print(
        f"  {kind} { ({k: v for k, v in args.items() if k != 'covariates'}) }: "
        f"{result.get('seconds', 0):.1f} s, client {result['rss_client_mb']} MB, "
        f"worker {result['rss_worker_mb']} MB",
        flush=True,
    )
    return result


def build_parser() -> argparse.ArgumentParser:
    ap = common.parser(__doc__)
    ap.add_argument("--big", type=int, default=8192)
    ap.add_argument("--small", type=int, default=1024)
    ap.add_argument("--species", type=int, default=10_000)
    ap.add_argument("--scaling", type=int, default=4096)
    ap.add_argument("--only-scaling", action="store_true", help="run the scaling part only")
    ap.add_argument("--case", help=argparse.SUPPRESS)
    return ap


def output_path(args: argparse.Namespace) -> Path:
    return common.results_file(args.results, "scale")


def main() -> None:
    ap = build_parser()
    args = ap.parse_args()
    if args.case:
        spec = json.loads(args.case)
        print(json.dumps(CASES[spec.pop("kind")](spec)))
        return
    if args.only_scaling:
        scaling_only(args)
        return
    out = output_path(args)
    DATA.mkdir(parents=True, exist_ok=True)
    small, big = args.small, args.big
    print("inputs (not measured) ...", flush=True)
    cubes = {n: make_cube(n, 16) for n in (small, args.scaling, big)}
    many = make_cube(512, args.species)
    inputs = {n: make_inputs(n) for n in (small, big)}
    res: dict[str, Any] = {
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d"),
    }
    print("memory: publish and predict, small then big", flush=True)
    pub = {
        n: measure("publish", cube=str(cubes[n]), root=str(DATA / f"rel-{n}"), workers=2)
        for n in (small, big)
    }
    pre = {
        n: measure("predict", out=str(DATA / f"pred-{n}.zarr"), workers=2, **inputs[n])
        for n in (small, big)
    }
    res["memory"] = {
        "publish": {str(n): pub[n] for n in pub},
        "predict": {str(n): pre[n] for n in pre},
        "publish_worker_ratio": pub[big]["rss_worker_mb"] / pub[small]["rss_worker_mb"],
        "publish_client_ratio": pub[big]["rss_client_mb"] / pub[small]["rss_client_mb"],
        "predict_worker_ratio": pre[big]["rss_worker_mb"] / pre[small]["rss_worker_mb"],
        "predict_client_ratio": pre[big]["rss_client_mb"] / pre[small]["rss_client_mb"],
    }
    print("rehearsal: register, serve, check against the cube", flush=True)
    res["rehearsal"] = {
        "publish": pub[big],
        "serve": measure(
            "rehearsal",
            cube=str(cubes[big]),
            root=str(DATA / f"rel-{big}"),
            release=str(DATA / f"rel-{big}" / "r"),
        ),
    }
    print("throughput: publish vs the demo model's prediction, 2 workers", flush=True)
    demo = measure("demo-predict", workers=2)
    many_pub = measure("publish", cube=str(many), root=str(DATA / "rel-many"), workers=2)
    res["throughput"] = {
        "demo_predict": demo,
        "publish_16": pub[big],
        "publish_16_small": pub[small],
        f"publish_{args.species}": many_pub,
        "ratio_16": pub[big]["pixel_species_per_s"] / demo["pixel_species_per_s"],
        "ratio_16_small": pub[small]["pixel_species_per_s"] / demo["pixel_species_per_s"],
        f"ratio_{args.species}": many_pub["pixel_species_per_s"] / demo["pixel_species_per_s"],
    }
    n = args.scaling
    print(f"scaling: publish {n}^2 x 16, 1 then 2 workers", flush=True)
    one = measure("publish", cube=str(cubes[n]), root=str(DATA / f"rel-{n}"), workers=1)
    two = measure("publish", cube=str(cubes[n]), root=str(DATA / f"rel-{n}"), workers=2)
    res["scaling"] = {"one": one, "two": two, "speedup": one["seconds"] / two["seconds"]}
    out.write_text(json.dumps(res, indent=1))
    m, t = res["memory"], res["throughput"]
    print(
        f"\npeak RSS big/small: publish worker {m['publish_worker_ratio']:.2f}, client "
        f"{m['publish_client_ratio']:.2f}; predict worker {m['predict_worker_ratio']:.2f}, "
        f"client {m['predict_client_ratio']:.2f}  (goal <= 1.25)"
    )
    print(
        f"publish / predict throughput: 16 species {t['ratio_16']:.2f} at {big}^2 "
        f"({t['ratio_16_small']:.2f} at {small}^2), {args.species} "
        f"species {t[f'ratio_{args.species}']:.2f}  (goal >= 1)"
    )
    print(f"2 workers / 1 worker: {res['scaling']['speedup']:.2f}  (goal >= 1.8)")
    series = [(small, pub[small]), (n, two), (big, pub[big])]
    print(
        "publish peak RSS by extent (2 workers): "
        + ", ".join(
            f"{k}^2: worker {v['rss_worker_mb']} MB, client {v['rss_client_mb']} MB"
            for k, v in series
        )
    )
    print(
        f"rehearsal {big}^2: publish {pub[big]['seconds']:.0f} s, checks "
        f"{res['rehearsal']['serve']['checks']}"
    )
    print(f"results: {out}")


def scaling_only(args: Any) -> None:
    n = args.scaling
    cube = make_cube(n, 16)
    one = measure("publish", cube=str(cube), root=str(DATA / f"rel-{n}"), workers=1)
    two = measure("publish", cube=str(cube), root=str(DATA / f"rel-{n}"), workers=2)
    res = {"one": one, "two": two, "speedup": one["seconds"] / two["seconds"]}
    out = common.results_file(args.results, "scale-scaling")
    out.write_text(json.dumps(res, indent=1))
    for k, v in (("1 worker", one), ("2 workers", two)):
        print(
            f"{k}: {v['seconds']:.1f} s wall, CPU: driver {v['cpu_client_s']} s, "
            f"workers {v['cpu_children_s']} s"
        )
    print(f"2 workers / 1 worker: {res['speedup']:.2f}  (goal >= 1.8); results: {out}")


if __name__ == "__main__":
    main()
